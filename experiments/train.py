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

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger, configure

from agents import load_tutor, make_tutor, single_episode_view, tutor_spec
from experiments.checkpoint import (
    CHECKPOINT_NAME,
    RunInterrupted,
    acting_tutor_state,
    global_rng_states,
    interrupt_on_stop_signals,
    read_checkpoint,
    restore_tutor,
    restore_tutor_state,
    set_global_rng_states,
    stop_signals_deferred,
    tutor_state,
    write_atomically,
    write_checkpoint,
)
from experiments.config import RunConfig, SettingsChanged, fingerprint, fingerprint_differences
from experiments.progress import StudentProgress
from experiments.provenance import code_version
from experiments.record import CurriculumRecorder, StudentRun
from experiments.reproducibility import numeric_environment
from experiments.warmups import SharedWarmups, WarmupWatch, replay
from tsrl_env import DeepfakeCurriculumEnv
from tsrl_env.config import EnvConfig
from tsrl_env.data import EmbeddedConfig
from tsrl_env.distributed import ProcessGroupView
from tsrl_env.env import RESTORE_MAY_CHANGE
from tsrl_env.student import Student, available_devices, resolve_device
from tsrl_env.trainer import resolved_precision

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


class RunStopped(RuntimeError):
    """A run stopped before its end (a stop signal, a diverging loss); the message says what is kept and how to resume."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class EpochCheckpointer:
    """Writes ``checkpoint.pt`` of one Student run at every tutored epoch start (see :mod:`experiments.checkpoint`).

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

    def stopped(self, error: BaseException) -> RunStopped:
        """The :class:`RunStopped` to raise for ``error``, naming the checkpoint kept and the command that resumes."""
        if self.saved_epoch is None:
            kept = "no checkpoint had been written yet, so a resume starts this Student again"
        else:
            kept = f"its checkpoint of the start of tutored epoch {self.saved_epoch} is kept ({self.path})"
        if isinstance(error, RunInterrupted):
            return RunStopped(
                f"{self.label}: {error} during {self._phase()}; {kept}. Continue with: {self.resume_command}",
                128 + error.signal_number,
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


class _WarmupSharing:
    """One new Student's part in :class:`~experiments.warmups.SharedWarmups`: :meth:`restorable` gives the saved
    warm-up to restore (its epochs replayed to the run's listeners, its wall time counted), or starts watching this
    Student's own warm-up, which :meth:`after_reset` saves once the environment's reset has trained it."""

    def __init__(self, directory: Path, env: DeepfakeCurriculumEnv, seed: int, checkpointer: EpochCheckpointer) -> None:
        self.shared = SharedWarmups(directory)
        self.key = self.shared.key(env, seed)
        self.env = env
        self.checkpointer = checkpointer
        self.watch: WarmupWatch | None = None

    def restorable(self) -> dict[str, Any] | None:
        saved = self.shared.load(self.key)
        if saved is None:
            self.watch = WarmupWatch()
            self.env.listeners.append(self.watch)
            return None
        replay(saved, self.env.listeners)
        self.checkpointer.started -= saved["wall_time_s"]
        return saved["env"]

    def after_reset(self) -> None:
        if self.watch is None:
            return
        self.env.listeners.remove(self.watch)
        finished = self.watch.finished(self.env)
        if finished is not None:
            self.shared.save(self.key, finished)
        self.watch = None


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
    of :class:`~experiments.warmups.SharedWarmups`) a new Student restores the warm-up of an earlier one that started
    alike instead of training it again, or saves its own there; its wall time counts the warm-up's, measured when it was
    trained. With ``resume``, a finished run is read back from its ``run.json`` and an unfinished one continues
    from its checkpoint (if it has none, it starts again); a finished run whose ``run.json`` holds another fingerprint
    (see :func:`~experiments.config.fingerprint`) raises :class:`~experiments.config.SettingsChanged`, or with
    ``rerun_changed`` is deleted and trained again. ``config.tutor_kwargs`` reach only ``config.tutor``. A stop
    signal or a diverging loss raises :class:`RunStopped`, whose message names the checkpoint kept and
    ``resume_command`` (default: ``tsrl train --resume`` on ``run_dir``).

    With a process group (``group``, a :class:`~tsrl_env.distributed.DistributedGroupView`), this is rank 0's part of
    a Student trained with DDP; every other rank runs :func:`follow_student` at the same time. A resume's checkpoint is
    read here and its epoch-start state reaches the other ranks through the environment's reset.
    """
    group = ProcessGroupView() if group is None else group
    if group.rank != 0:
        raise ValueError(f"train_student runs on rank 0 of a process group; rank {group.rank} runs follow_student")
    name = tutor or config.tutor
    label = f"{name}-checkpoint" if tutor_checkpoint else name
    student = config.for_student(name, str(tutor_checkpoint) if tutor_checkpoint else None)
    out = run_dir / label
    record_path = out / "run.json"
    finished = resume and record_path.is_file() and _kept_finished_run(record_path, student, rerun_changed)
    learns = tutor_spec(name).learns and tutor_checkpoint is None
    compute_rewards = learns or record_rewards
    # The other ranks follow only a Student that trains, and run the reward's passes (collective) only with rank 0.
    group.broadcast_object((finished, compute_rewards), kind="setup")
    if finished:
        return read_student_run(record_path)[0]
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
    warmup = _WarmupSharing(warmups, env, config.seed, checkpointer) if shares_warmup else None
    try:
        with interrupt_on_stop_signals():
            if learns:
                agent = _learn(name, student, env, recorder, checkpointer, logger, checkpoint, warmup)
            else:
                if tutor_checkpoint is not None:
                    agent = load_tutor_checkpoint(name, tutor_checkpoint, env)
                else:
                    agent = make_tutor(name, env, seed=config.seed, **student.tutor_kwargs)
                _act(env, agent, recorder, checkpointer, config.seed, checkpoint, warmup)
    except (RunInterrupted, FloatingPointError) as error:
        raise checkpointer.stopped(error) from error
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
        torch.save(env.finished_student.state_dict(), out / "student.pt")
    record = {**asdict(run), "fingerprint": fingerprint(student), "code": code_version(), "environment": numeric_environment()}
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


def read_student_run(path: Path) -> tuple[StudentRun, dict[str, Any] | None]:
    """A finished Student's ``run.json`` and its fingerprint (None in a record written before fingerprints)."""
    try:
        data = json.loads(path.read_text())
        saved = data.pop("fingerprint", None)
        data.pop("code", None)
        data.pop("environment", None)
        return StudentRun.from_dict(data), saved
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise ValueError(
            f"the finished Student's record {str(path)!r} cannot be read ({type(error).__name__}: {error}); restore a "
            "good copy, or delete its folder to train this Student again"
        ) from error


def _kept_finished_run(path: Path, student: RunConfig, rerun_changed: bool) -> bool:
    """Whether the finished run at ``path`` is this Student's, to be read back; one of other settings is refused, or
    with ``rerun_changed`` deleted with its folder (False: train it again)."""
    differences = fingerprint_differences(read_student_run(path)[1], student, ignore=RESUME_MAY_CHANGE)
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
    config: RunConfig,
    env: DeepfakeCurriculumEnv,
    recorder: CurriculumRecorder,
    checkpointer: EpochCheckpointer,
    logger: Logger,
    checkpoint: dict[str, Any] | None,
    warmup: _WarmupSharing | None = None,
) -> Any:
    """A learned tutor teaching one episode while it learns, from the start or from ``checkpoint``."""
    view = single_episode_view(name, env)
    if checkpoint is None:
        agent = make_tutor(name, view, seed=config.seed, **config.tutor_kwargs)
    else:
        agent = restore_tutor(name, checkpoint["tutor"], view)
        # SB3 resets its env before learning (a loaded model has no last observation): that reset restores the epoch start.
        agent.get_env().set_options({"restore": checkpoint["env"]})
    restored = warmup.restorable() if warmup is not None else None
    if restored is not None:
        agent.get_env().set_options({"restore": restored})
    agent.set_logger(logger)
    total = config.env.epochs * env.steps_per_epoch * agent.get_env().num_envs
    agent.learn(
        total_timesteps=total - agent.num_timesteps,
        callback=_StudentRunCallback(
            recorder, checkpointer, checkpoint["rng"] if checkpoint else None, warmup.after_reset if warmup else None
        ),
        reset_num_timesteps=checkpoint is None,
        progress_bar=False,  # the run's own display counts the Student's samples, warm-up included
    )
    return agent


def load_tutor_checkpoint(name: str, path: Path, env: DeepfakeCurriculumEnv) -> Any:
    """The ``name`` tutor saved at ``path``, acting on ``env``, or an error naming the file and what is wrong with it.

    A missing file raises FileNotFoundError; a corrupted one, one that does not load as ``name`` (another kind of
    tutor saved it; PPO and A2C share a policy and load as each other), or one saved on an environment with other
    state rows (another backbone, ``state_feature_dim`` or ``state_counters``) raises ValueError. Nothing is returned
    half-loaded.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"tutor checkpoint {str(path)!r} does not exist or is not a file; "
            "give the tutor.zip a run saved (RUN_DIR/ppo/tutor.zip)"
        )
    try:
        return load_tutor(name, path, env)
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        if isinstance(error, ValueError) and "spaces do not match" in str(error):
            # SB3's check_for_correct_spaces: "... spaces do not match: <saved> != <this environment's>".
            raise ValueError(
                f"tutor checkpoint {str(path)!r} does not fit this run ({reason}; saved != this run's): it was saved by "
                f"another tutor than {name!r} (name it with --tutor) or on an environment with other state rows; use "
                "the env settings of the run that saved it (backbone, state_feature_dim, state_counters, batch_size)"
            ) from error
        raise ValueError(
            f"cannot load tutor checkpoint {str(path)!r} as the {name!r} tutor ({reason}): the file is corrupted or "
            "another tutor saved it; give the tutor.zip a run saved, with --tutor naming the tutor that saved it"
        ) from error


def check_run_settings(config: RunConfig) -> None:
    """Refuse, before any run directory is made, the settings that would otherwise fail only once training starts:
    the device, the backbone's name and its pretrained weights, a batch larger than the training split (where the
    settings alone give its size: the embedded benchmark; the other sources check it once their files are read)."""
    _check_device(config.env.device)
    resolved_precision(config.env.precision, resolve_device(config.env.device))
    _check_backbone(config.env)
    train_size = _known_train_size(config.env)
    if train_size is not None and config.env.batch_size > train_size:
        raise ValueError(
            f"the env setting batch_size ({config.env.batch_size}) exceeds the {train_size} training images of the "
            "dataset (dataset_options train_size): lower batch_size or raise train_size"
        )


def _check_device(device: str) -> None:
    resolved = resolve_device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"the env setting device is {device!r}, but CUDA is not available here; this machine has: "
            f"{', '.join(available_devices())} (auto picks CUDA where there is one)"
        )
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(
            f"the env setting device is {device!r}, but this machine has {torch.cuda.device_count()} CUDA device(s) "
            f"({', '.join(available_devices())}); use auto, cuda or one of those"
        )


def _check_backbone(env: EnvConfig) -> None:
    """Build the Student once, on a copy of torch's RNG so that the run's own draws stay those of an unchecked run."""
    try:
        with torch.random.fork_rng(devices=[]):
            Student.from_timm(env.backbone, env.pretrained_weights)
    except Exception as error:  # timm and the weights' download raise many kinds: each means these two settings
        raise ValueError(
            f"cannot build the Student of the env settings backbone={env.backbone!r}, pretrained={env.pretrained!r}, "
            f"pretrained_file={env.pretrained_file!r} ({type(error).__name__}: {error}); name a timm model, and set "
            "pretrained to false, or pretrained_file to a local file of its weights where they cannot be downloaded"
        ) from error


def _known_train_size(env: EnvConfig) -> int | None:
    if env.dataset != "embedded":
        return None
    return {**asdict(EmbeddedConfig()), **env.dataset_options}["train_size"]


def check_tutor_checkpoint(config: RunConfig, path: Path) -> None:
    """Load the checkpoint on an environment of ``config`` and drop it: refuses one that does not fit before any work."""
    env = DeepfakeCurriculumEnv(config.env)
    try:
        load_tutor_checkpoint(config.tutor, path, env)
    finally:
        env.close()


def _act(
    env: DeepfakeCurriculumEnv,
    agent: Any,
    recorder: CurriculumRecorder,
    checkpointer: EpochCheckpointer,
    seed: int,
    checkpoint: dict[str, Any] | None,
    warmup: _WarmupSharing | None = None,
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


def save_results(runs: list[StudentRun], run_dir: Path) -> None:
    (run_dir / "results.json").write_text(json.dumps([asdict(run) for run in runs], indent=2))
