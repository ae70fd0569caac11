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
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from agents import HeuristicTutor, tutor_spec
from experiments.config import RunConfig
from tsrl_env.env import RESTORE_MAY_CHANGE
from tsrl_env.files import write_atomically
from tsrl_env.validation import setting_differences

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 2

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(BaseException):
    """A stop signal (SIGINT or SIGTERM) arrived during a run; the last checkpoint is kept.

    A ``BaseException``, as ``KeyboardInterrupt`` is, so that code catching ``Exception`` does not swallow it.
    """

    def __init__(self, signal_number: int) -> None:
        self.signal_number = signal_number
        super().__init__(f"stopped by {signal.Signals(signal_number).name}")


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
    differences = setting_differences(payload["config"], config.to_dict(), ignore=may_change)
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


@contextmanager
def interrupt_on_stop_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`RunInterrupted` within the block (main thread only; elsewhere a no-op).

    Inside :func:`stop_signals_deferred` a signal is held and raised when that block ends.
    """

    def interrupt(signal_number: int, frame: Any) -> None:
        if _deferral.depth:
            _deferral.pending = _deferral.pending or signal_number
            return
        raise RunInterrupted(signal_number)

    try:
        previous = {number: signal.signal(number, interrupt) for number in _STOP_SIGNALS}
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Hold stop signals until the block has run (a checkpoint written and recorded), then raise the first one.

    CPython runs signal handlers in the main thread whichever thread received the signal, so a flag the handler
    reads is enough, where blocking the signal in one thread would not be.
    """
    _deferral.depth += 1
    try:
        yield
    finally:
        _deferral.depth -= 1
    if _deferral.depth == 0 and _deferral.pending:
        signal_number, _deferral.pending = _deferral.pending, 0
        raise RunInterrupted(signal_number)


# Whether stop signals are being held (nesting depth of stop_signals_deferred) and the first one held.
_deferral = SimpleNamespace(depth=0, pending=0)


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
