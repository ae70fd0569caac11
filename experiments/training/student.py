"""Train one Student under one tutor, for one episode, and record what happened.

Learned tutors learn while they teach (their ``learn`` drives the environment); heuristics, and learned tutors
loaded from a checkpoint, only act (a predict loop drives it). Both paths start the Student from the run's seed,
so two runs with the same config differ only by their tutor.

A Student trained with DistributedDataParallel across a process group has one tutor, on rank 0, acting on the
whole batch that the ranks' environments gather: rank 0 runs :func:`train_student` (the tutor, its learning, the
records, checkpoints and every file), every other rank :func:`follow_student`, which steps its environment in lockstep
with rank 0's, whose reset arguments and weights it receives.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger, configure

from agents import make_tutor, single_episode_view, tutor_spec
from experiments.config import RunConfig, SettingsChanged, fingerprint, fingerprint_differences
from experiments.records.provenance import code_version, numeric_environment
from experiments.records.recorder import CurriculumRecorder
from experiments.records.student_run import FINISHED_STUDENT, StudentRun, read_record
from experiments.training.checkpoint import (
    CHECKPOINT_NAME,
    EpochCheckpointer,
    read_checkpoint,
    restore_tutor,
    restore_tutor_state,
    set_global_rng_states,
)
from experiments.training.progress import StudentProgress
from experiments.training.saved_tutor import load_tutor_checkpoint
from experiments.training.signals import RunInterrupted, interrupt_on_stop_signals
from experiments.training.warmups import WarmupSharing
from tsrl_env import DeepfakeCurriculumEnv
from tsrl_env.distributed import ProcessGroupView
from tsrl_env.env import RESTORE_MAY_CHANGE
from tsrl_env.files import write_atomically

RESUME_MAY_CHANGE = tuple(f"env.{name}" for name in RESTORE_MAY_CHANGE)
"""Settings a resumed run may change (a lower learning rate after a diverging loss, another device): a finished
Student's record is compared with the run's settings without them, as a checkpoint is."""


class _StudentRunCallback(BaseCallback):
    """What a run does at SB3's hooks while a learning tutor drives the environment: restores the global RNGs of a
    resumed run once SB3 has reset, checkpoints each epoch start, and feeds every step to a :class:`CurriculumRecorder`."""

    def __init__(
        self,
        recorder: CurriculumRecorder,
        checkpointer: EpochCheckpointer,
        rng_states: dict[str, Any] | None = None,
        after_reset: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.recorder = recorder
        self.checkpointer = checkpointer
        self.rng_states = rng_states
        self.after_reset = after_reset

    def _on_training_start(self) -> None:
        # After SB3's reset, which on a resume restored the environment (building a Student reseeds CUDA's RNG, a
        # frame DataLoader draws a seed): from here on the global RNGs are those the run was checkpointed with.
        if self.rng_states is not None:
            set_global_rng_states(self.rng_states)
        if self.after_reset is not None:
            self.after_reset()

    def _on_rollout_start(self) -> None:
        # The tutor has learned from everything before this point, and the environment's latest epoch-start state
        # (taken before that epoch's first forward) is what a resume's reset rebuilds the tutor's first observation from.
        self.checkpointer.save_if_new_epoch(self.model)

    def _on_step(self) -> bool:
        info = self.locals["infos"][0]  # the environment's info, with the states the step's weights came from
        self.recorder.step(info["acted_on"], info)
        return True


def train_student(
    config: RunConfig,
    run_dir: Path,
    tutor: str | None = None,
    tutor_checkpoint: Path | None = None,
    progress: bool = True,
    save_student: bool = True,
    resume: bool = False,
    group: ProcessGroupView | None = None,
    resume_command: str | None = None,
    rerun_changed: bool = False,
    record_rewards: bool = False,
    warmups: Path | None = None,
) -> StudentRun:
    """Train one Student taught by ``tutor`` (default ``config.tutor``) and save it under ``run_dir / label``.

    With ``tutor_checkpoint`` the tutor is loaded and only acts. Writes the Student's weights (unless
    ``save_student`` is False), the tutor (when it learned), the run's record (``run.json``) and TensorBoard logs
    under ``run_dir / "tensorboard"``. Every tutored epoch start overwrites ``checkpoint.pt``, removed once the run
    has finished. A tutor that does not learn reads no reward, so the reward's passes are skipped and the record's
    rewards are NaN, unless ``record_rewards``; the Student trains the same either way. With ``warmups`` (a directory
    of :class:`~experiments.training.warmups.SharedWarmups`) a new Student restores the warm-up of an earlier one that started
    alike instead of training it again, or saves its own there; its wall time counts the warm-up's, measured when it was
    trained. With ``resume``, a finished run is read back from its ``run.json`` and an unfinished one continues
    from its checkpoint (if it has none, it starts again); a finished run whose ``run.json`` holds another fingerprint
    (see :func:`~experiments.config.fingerprint`) raises :class:`~experiments.config.SettingsChanged`, or with
    ``rerun_changed`` is deleted and trained again. ``config.tutor_kwargs`` reach only ``config.tutor``. A stop
    signal or a diverging loss raises :class:`~experiments.training.signals.RunStopped`, whose message names the
    checkpoint kept and ``resume_command`` (default: ``tsrl train --resume`` on ``run_dir``).

    With a process group (``group``, a :class:`~tsrl_env.distributed.DistributedGroupView`), this is rank 0's part of
    a Student trained with DDP; every other rank runs :func:`follow_student` at the same time. A resume's checkpoint is
    read here and its epoch-start state reaches the other ranks through the environment's reset.
    """
    group = ProcessGroupView() if group is None else group
    if group.rank != 0:
        raise ValueError(f"train_student runs on rank 0 of a process group; rank {group.rank} runs follow_student")
    name = tutor or config.tutor
    label = f"{name}-checkpoint" if tutor_checkpoint else name
    student_config = config.for_student(name, str(tutor_checkpoint) if tutor_checkpoint else None)
    out = run_dir / label
    record_path = out / "run.json"
    finished = resume and record_path.is_file() and _kept_finished_run(record_path, student_config, rerun_changed)
    learns = tutor_spec(name).learns and tutor_checkpoint is None
    compute_rewards = learns or record_rewards
    # The other ranks follow only a Student that trains, and run the reward's passes (collective) only with rank 0.
    group.broadcast_object((finished, compute_rewards), kind="setup")
    if finished:
        return read_record(record_path, *FINISHED_STUDENT).run
    checkpoint_path = out / CHECKPOINT_NAME
    checkpoint = read_checkpoint(checkpoint_path, config, label) if resume and checkpoint_path.is_file() else None
    out.mkdir(parents=True, exist_ok=True)
    resume_command = resume_command or f"tsrl train --resume {run_dir}"
    logger = _tensorboard_logger(run_dir / "tensorboard" / label, resume_command)
    env = DeepfakeCurriculumEnv(config.env, group=group, compute_rewards=compute_rewards, **tutor_spec(name).env_settings)
    watched = _student_progress(label, env, checkpoint) if progress else None
    recorder = CurriculumRecorder(StudentRun(label), env, logger, on_epoch=watched.epoch_finished if watched else None)
    if watched is not None:
        env.listeners.append(watched)
    checkpointer = EpochCheckpointer(checkpoint_path, config, label, env, recorder, learns, resume_command)
    if checkpoint is not None:
        recorder.load_state_dict(checkpoint["recorder"])
        checkpointer.resume_from(checkpoint)
    shares_warmup = warmups is not None and checkpoint is None and group.world_size == 1
    warmup = WarmupSharing(warmups, env, config.seed, checkpointer) if shares_warmup else None
    try:
        with interrupt_on_stop_signals():
            if learns:
                agent = _learn(name, student_config, env, recorder, checkpointer, logger, checkpoint, warmup)
            else:
                if tutor_checkpoint is not None:
                    agent = load_tutor_checkpoint(name, tutor_checkpoint, env)
                else:
                    agent = make_tutor(name, env, seed=config.seed, **student_config.tutor_kwargs)
                _act(env, agent, recorder, checkpointer, config.seed, checkpoint, warmup)
    except (RunInterrupted, FloatingPointError) as error:
        raise checkpointer.as_run_stopped(error) from error
    finally:
        if watched is not None:
            watched.close()
        logger.close()
        env.close()
    run = recorder.run
    run.wall_time_s = checkpointer.wall_time_s
    if env.finished_student is None:
        raise RuntimeError("the episode did not finish, so there is no trained Student")
    if learns:
        agent.save(out / "tutor.zip")
    if save_student:
        weights = io.BytesIO()
        torch.save(env.finished_student.state_dict(), weights)
        write_atomically(out / "student.pt", weights.getvalue())  # a stopped write leaves no half-written weights
    provenance = {"fingerprint": fingerprint(student_config), "code": code_version(), "environment": numeric_environment()}
    record = {**asdict(run), **provenance}
    write_atomically(record_path, json.dumps(record, indent=2))
    checkpoint_path.unlink(missing_ok=True)
    return run


def _student_progress(label: str, env: DeepfakeCurriculumEnv, checkpoint: dict[str, Any] | None) -> StudentProgress:
    """The progress display of one Student: every warm-up and tutored epoch's samples, from a resume's epoch on."""
    per_epoch = env.steps_per_epoch * env.batch_size
    epochs = env.config.warmup_epochs + env.config.epochs
    done = 0 if checkpoint is None else (env.config.warmup_epochs + checkpoint["env"]["epoch"]) * per_epoch
    return StudentProgress(label, epochs * per_epoch, done, epochs)


def _tensorboard_logger(folder: Path, resume_command: str) -> Logger:
    try:
        return configure(str(folder), ["tensorboard"])
    except OSError as error:
        raise OSError(
            error.errno,
            f"cannot write the TensorBoard logs in {str(folder)!r} ({error.strerror or error}); free space on its disk "
            f"(or fix its permissions) and continue with: {resume_command}",
        ) from error


def _kept_finished_run(path: Path, student_config: RunConfig, rerun_changed: bool) -> bool:
    """Whether the finished run at ``path`` is this Student's (``student_config``), to be read back; one of other
    settings is refused, or with ``rerun_changed`` deleted with its folder (False: train it again)."""
    saved = read_record(path, *FINISHED_STUDENT).fingerprint
    differences = fingerprint_differences(saved, student_config, ignore=RESUME_MAY_CHANGE)
    if not differences:
        return True
    if not rerun_changed:
        raise SettingsChanged(
            f"the finished Student {str(path.parent)!r} was trained with other settings than those given now "
            f"({'; '.join(differences)}); restore the settings it was trained with in the run's config.yaml, start a "
            "new run instead, or add --rerun-changed to train it again under the settings given now"
        )
    shutil.rmtree(path.parent)
    return False


def follow_student(config: RunConfig, group: ProcessGroupView) -> None:
    """A rank's part, other than rank 0's, of a Student that rank 0 trains with :func:`train_student` (DDP).

    It builds the same environment and steps it until the episode ends, writing nothing: rank 0's environment
    broadcasts its reset arguments (the seed, or a resume's epoch-start state) and its tutor's weights, so this rank
    trains its shard of every batch with the weights rank 0's tutor chose, and runs the warm-up, the reward passes and
    the evaluations in lockstep with it. A Student that rank 0 reads back from a finished run is skipped here too.
    """
    finished, compute_rewards = group.broadcast_object(None, kind="setup")
    if finished:
        return
    env = DeepfakeCurriculumEnv(config.env, group=group, compute_rewards=compute_rewards, **tutor_spec(config.tutor).env_settings)
    try:
        env.reset()
        placeholder = np.ones(env.action_space.shape, np.float32)  # the env steps with rank 0's weights instead
        terminated = False
        while not terminated:
            terminated = env.step(placeholder)[2]
    finally:
        env.close()


def _learn(
    name: str,
    student_config: RunConfig,
    env: DeepfakeCurriculumEnv,
    recorder: CurriculumRecorder,
    checkpointer: EpochCheckpointer,
    logger: Logger,
    checkpoint: dict[str, Any] | None,
    warmup: WarmupSharing | None = None,
) -> Any:
    """A learned tutor teaching one episode while it learns, from the start or from ``checkpoint``."""
    view = single_episode_view(name, env)
    if checkpoint is None:
        agent = make_tutor(name, view, seed=student_config.seed, **student_config.tutor_kwargs)
    else:
        agent = restore_tutor(name, checkpoint["tutor"], view)
        # SB3 resets its env before learning (a loaded model has no last observation): that reset restores the epoch start.
        agent.get_env().set_options({"restore": checkpoint["env"]})
    restored = warmup.restorable() if warmup is not None else None
    if restored is not None:
        agent.get_env().set_options({"restore": restored})
    agent.set_logger(logger)
    total = student_config.env.epochs * env.steps_per_epoch * agent.get_env().num_envs
    agent.learn(
        total_timesteps=total - agent.num_timesteps,
        callback=_StudentRunCallback(
            recorder, checkpointer, checkpoint["rng"] if checkpoint else None, warmup.after_reset if warmup else None
        ),
        reset_num_timesteps=checkpoint is None,
        progress_bar=False,  # the run's own display counts the Student's samples, warm-up included
    )
    return agent


def _act(
    env: DeepfakeCurriculumEnv,
    agent: Any,
    recorder: CurriculumRecorder,
    checkpointer: EpochCheckpointer,
    seed: int,
    checkpoint: dict[str, Any] | None,
    warmup: WarmupSharing | None = None,
) -> None:
    """Drive one episode (from the start or from ``checkpoint``) with the tutor's deterministic weights, learning nothing."""
    restored = warmup.restorable() if warmup is not None else None
    if restored is not None:
        states, _ = env.reset(options={"restore": restored})
    elif checkpoint is None:
        states, _ = env.reset(seed=seed)
        if warmup is not None:
            warmup.after_reset()
    else:
        states, _ = env.reset(options={"restore": checkpoint["env"]})
        restore_tutor_state(agent, checkpoint["tutor"])
        set_global_rng_states(checkpoint["rng"])
    checkpointer.save_if_new_epoch(agent)
    remaining = (env.config.epochs - env.epoch) * env.steps_per_epoch
    for _ in range(remaining):
        actions, _ = agent.predict(states, deterministic=True)
        next_states, _, terminated, _, info = env.step(np.asarray(actions, np.float32).reshape(env.action_space.shape))
        recorder.step(states, info)
        states = next_states
        if terminated:
            break
        if "val" in info:
            checkpointer.save_if_new_epoch(agent)
