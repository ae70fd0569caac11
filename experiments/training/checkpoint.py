"""Run checkpoints: everything one Student run needs to continue after a crash, written atomically.

A checkpoint is taken at the start of every tutored epoch, before the epoch's first training forward, once the
tutor has learned from the epoch before: the only point where the Student, its per-sample history, the data order
and an on-policy tutor's rollout (empty there; under ``next_visit``, PPO's rollout waiting for its rewards is saved
with the model) agree without pickling a half-filled rollout or an autograd graph.
It holds the environment's epoch-start state (Student and optimiser, history, RNGs, epoch), the tutor (the SB3
model with its counters and optimiser, its replay buffer if any, its action-space RNG; a heuristic's RNG), the
global Python, NumPy and torch RNG states, the recorder's epochs so far and the resolved run config.

A signal (SIGINT, SIGTERM) stops the run at once and keeps the last checkpoint: a resume redoes the interrupted
epoch from its start, exactly as it would have run.
"""

from __future__ import annotations

import io
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from agents import HeuristicTutor, tutor_spec
from experiments.config import RunConfig
from experiments.records.recorder import CurriculumRecorder
from experiments.training.signals import RunInterrupted, RunStopped, stop_signals_deferred
from tsrl_env import DeepfakeCurriculumEnv
from tsrl_env.env import RESTORE_MAY_CHANGE
from tsrl_env.files import write_atomically
from tsrl_env.validation import setting_differences

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 2


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: corrupted, from another run, or from another config."""


def global_rng_states() -> dict[str, Any]:
    """The Python, NumPy and torch (CPU and CUDA) global RNG states; SB3 tutors draw their actions and minibatches there."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_global_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def write_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` with :func:`write_atomically`; a failed write keeps the previous checkpoint, if any.

    Serialising to memory first means a full disk surfaces as an OSError of the plain file write.
    """
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **payload}, buffer)
    kept = "the previous checkpoint there is kept" if path.is_file() else "no checkpoint of it was written before"
    try:
        write_atomically(path, buffer.getvalue())
    except OSError as error:
        raise OSError(
            error.errno,
            f"cannot write the checkpoint {str(path)!r} ({error.strerror or error}); {kept}: free space on its disk "
            "(or fix its permissions) and resume with tsrl train --resume RUN_DIR",
        ) from error


def read_checkpoint(path: Path, config: RunConfig, label: str) -> dict[str, Any]:
    """The checkpoint at ``path`` if it was written by the run ``label`` of ``config``; anything else is refused whole.

    ``config`` may differ from the checkpoint's only in the env settings of :data:`RESTORE_MAY_CHANGE`.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be read ({type(error).__name__}: {error}); the file is corrupted or not "
            "a tsrl checkpoint: restore a good copy, or delete it to restart this Student from its beginning"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a tsrl checkpoint of format {CHECKPOINT_FORMAT} (found {found!r}); "
            "delete it to restart this Student from its beginning"
        )
    if payload.get("label") != label:
        raise CheckpointError(f"checkpoint {str(path)!r} belongs to the run {payload.get('label')!r}, not {label!r}")
    may_change = tuple(f"env.{name}" for name in RESTORE_MAY_CHANGE)
    # pretrain only says how the weights file was built; the fingerprint leaves it out too.
    differences = setting_differences(payload["config"], config.to_dict(), ignore=(*may_change, "pretrain"))
    if differences:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was written with another config ({'; '.join(differences)}); resume with the "
            f"config it was written with (only the env settings {', '.join(RESTORE_MAY_CHANGE)} may change)"
        )
    return payload


def checkpoint_settings(path: Path) -> dict[str, Any] | None:
    """The run config the checkpoint at ``path`` was written with; None for a file that cannot be read as one (a
    resume from it says why)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # whatever torch.load raises on a damaged file, read_checkpoint reports on resume
        return None
    return payload.get("config") if isinstance(payload, dict) else None


def tutor_state(agent: Any) -> dict[str, Any]:
    """What a checkpoint keeps of a learning SB3 tutor: the model whole, its replay buffer if any, its action-space RNG."""
    model = io.BytesIO()
    agent.save(model)
    state = {"model": model.getvalue(), "action_space_rng": agent.action_space.np_random.bit_generator.state}
    if getattr(agent, "replay_buffer", None) is not None:
        replay = io.BytesIO()
        agent.save_replay_buffer(replay)
        state["replay_buffer"] = replay.getvalue()
    return state


def acting_tutor_state(agent: Any) -> dict[str, Any]:
    """What a checkpoint keeps of a tutor that only acts: a heuristic's RNG; nothing of a loaded SB3 tutor, which acts
    deterministically and is loaded from its file again on resume."""
    return {"rng": agent.rng_state()} if isinstance(agent, HeuristicTutor) else {}


def restore_tutor(name: str, state: dict[str, Any], env: Any) -> BaseAlgorithm:
    """The learning tutor ``name`` as :func:`tutor_state` kept it, acting on ``env``."""
    agent = tutor_spec(name).load(io.BytesIO(state["model"]), env=env)
    if "replay_buffer" in state:
        agent.load_replay_buffer(io.BytesIO(state["replay_buffer"]))
    agent.action_space.np_random.bit_generator.state = state["action_space_rng"]
    return agent


def restore_tutor_state(agent: Any, state: dict[str, Any]) -> None:
    """Give an acting tutor back what :func:`tutor_state` kept of it (a heuristic's RNG)."""
    if isinstance(agent, HeuristicTutor):
        agent.set_rng_state(state["rng"])


class EpochCheckpointer:
    """Writes ``checkpoint.pt`` of one Student run at every tutored epoch start (the checkpoint described above).

    ``resume_command`` is what the messages of a stopped run tell the user to run (by default ``tsrl train --resume``
    on the run directory). A tutor whose rollouts do not begin at epoch starts (an ``n_steps`` or ``train_freq`` that
    does not divide the epoch) is checkpointed only at the epoch starts where one begins.
    """

    def __init__(
        self,
        path: Path,
        config: RunConfig,
        label: str,
        env: DeepfakeCurriculumEnv,
        recorder: CurriculumRecorder,
        tutor_learns: bool,
        resume_command: str,
    ) -> None:
        self.path = path
        self.config = config
        self.label = label
        self.env = env
        self.recorder = recorder
        self.tutor_learns = tutor_learns
        self.resume_command = resume_command
        self.saved_epoch: int | None = None
        self.started = time.perf_counter()

    def resume_from(self, checkpoint: dict[str, Any]) -> None:
        self.saved_epoch = checkpoint["env"]["epoch"]
        self.started = time.perf_counter() - checkpoint["wall_time_s"]

    @property
    def wall_time_s(self) -> float:
        """Seconds this run has computed, over every resume."""
        return time.perf_counter() - self.started

    def save_if_new_epoch(self, agent: Any) -> None:
        """Checkpoint the environment's latest epoch start, unless it is the one written last or a step was taken since."""
        state = self.env.epoch_start_state()
        if state["epoch"] == self.saved_epoch or not self.env.at_epoch_start:
            return
        payload = {
            "label": self.label,
            "config": self.config.to_dict(),
            "env": state,
            "tutor": tutor_state(agent) if self.tutor_learns else acting_tutor_state(agent),
            "rng": global_rng_states(),
            "recorder": self.recorder.state_dict(),
            "wall_time_s": self.wall_time_s,
        }
        # A signal waits until the checkpoint is written and recorded, so the message names the one on disk.
        with stop_signals_deferred():
            write_checkpoint(self.path, payload)
            self.saved_epoch = state["epoch"]

    def as_run_stopped(self, error: BaseException) -> RunStopped:
        """The :class:`~experiments.training.signals.RunStopped` error to raise for ``error`` (a stop signal, a
        diverging loss), naming the checkpoint kept and the command that resumes."""
        if self.saved_epoch is None:
            kept = "no checkpoint had been written yet, so a resume starts this Student again"
        else:
            kept = f"its checkpoint of the start of tutored epoch {self.saved_epoch} is kept ({self.path})"
        if isinstance(error, RunInterrupted):
            return RunStopped(
                f"{self.label}: {error} during {self._phase()}; {kept}. Continue with: {self.resume_command}",
                128 + error.signal_number,
                error.signal_number,
            )
        lower = f"{self.config.env.lr / 10:g}"
        with_lower_lr = (
            f"{self.resume_command} --lr {lower}"
            if self.resume_command.startswith("tsrl train")
            else f"{self.resume_command}, with the env setting lr at {lower}"
        )
        return RunStopped(
            f"{self.label}: {error}. {kept[0].upper()}{kept[1:]}; continue from it with a lower learning rate: {with_lower_lr}",
            1,
        )

    def _phase(self) -> str:
        if self.env.warming_up:
            return "the warm-up"
        if self.env.epoch >= self.config.env.epochs:
            return "the final test evaluation"
        return f"tutored epoch {self.env.epoch}"
