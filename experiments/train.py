"""Train one Student under one tutor, for one episode, and record what happened.

Learned tutors learn while they teach (their ``learn`` drives the environment); heuristics, and learned tutors
loaded from a checkpoint, only act (a predict loop drives it). Both paths start the Student from the run's seed,
so two runs with the same config differ only by their tutor.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure
from tqdm.auto import tqdm

from agents import load_tutor, make_tutor, single_episode_view, tutor_spec
from experiments.config import RunConfig
from experiments.record import CurriculumRecorder, StudentRun
from tsrl_env import DeepfakeCurriculumEnv


class _RecorderCallback(BaseCallback):
    """Feeds every step a learning tutor takes to a :class:`CurriculumRecorder`."""

    def __init__(self, recorder: CurriculumRecorder) -> None:
        super().__init__()
        self.recorder = recorder

    def _on_training_start(self) -> None:
        self.recorder.warmup(_batch_info(self.training_env.reset_infos[0]))

    def _on_step(self) -> bool:
        # SB3 updates ``_last_obs`` after the callback, so it still holds the states this step's actions came from.
        states = np.asarray(self.model._last_obs)
        self.recorder.step(states.reshape(-1, states.shape[-1]), _batch_info(self.locals["infos"][0]))
        return True


def _batch_info(info: dict) -> dict:
    """The batch environment's info, whether the tutor sees the per-sample view (which nests it) or the batch."""
    return info.get("batch", info)


def train_student(
    config: RunConfig,
    run_dir: Path,
    tutor: str | None = None,
    tutor_checkpoint: Path | None = None,
    progress: bool = True,
    save_student: bool = True,
) -> StudentRun:
    """Train one Student taught by ``tutor`` (default ``config.tutor``) and save it under ``run_dir / label``.

    With ``tutor_checkpoint`` the tutor is loaded and only acts. Writes the Student's weights (unless
    ``save_student`` is False), the tutor (when it learned), and TensorBoard logs under ``run_dir / "tensorboard"``.
    """
    name = tutor or config.tutor
    label = f"{name}-checkpoint" if tutor_checkpoint else name
    out = run_dir / label
    run = StudentRun(label)
    start = time.perf_counter()
    env = DeepfakeCurriculumEnv(config.env)
    logger = configure(str(run_dir / "tensorboard" / label), ["tensorboard"])
    recorder = CurriculumRecorder(run, env, logger)
    if tutor_spec(name).learns and tutor_checkpoint is None:
        agent = make_tutor(name, single_episode_view(name, env), seed=config.seed, **config.tutor_kwargs)
        agent.set_logger(logger)
        total = config.env.epochs * env.steps_per_epoch * agent.get_env().num_envs
        agent.learn(total_timesteps=total, callback=_RecorderCallback(recorder), progress_bar=progress)
        out.mkdir(parents=True, exist_ok=True)
        agent.save(out / "tutor.zip")
    else:
        if tutor_checkpoint is not None:
            agent = load_tutor_checkpoint(name, tutor_checkpoint, env)
        else:
            agent = make_tutor(name, env, seed=config.seed, **config.tutor_kwargs)
        _act(env, agent, recorder, config.seed, label, progress)
    run.wall_time_s = time.perf_counter() - start
    if env.finished_student is None:
        raise RuntimeError("the episode did not finish, so there is no trained Student")
    if save_student:
        out.mkdir(parents=True, exist_ok=True)
        torch.save(env.finished_student.state_dict(), out / "student.pt")
    logger.close()
    return run


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


def check_tutor_checkpoint(config: RunConfig, path: Path) -> None:
    """Load the checkpoint on an environment of ``config`` and drop it: refuses one that does not fit before any work."""
    env = DeepfakeCurriculumEnv(config.env)
    load_tutor_checkpoint(config.tutor, path, env)
    env.close()


def _act(env: DeepfakeCurriculumEnv, agent, recorder: CurriculumRecorder, seed: int, label: str, progress: bool) -> None:
    """Drive one episode with the tutor's deterministic weights, learning nothing."""
    states, info = env.reset(seed=seed)
    recorder.warmup(info)
    for _ in tqdm(range(env.config.epochs * env.steps_per_epoch), desc=label, disable=not progress):
        actions, _ = agent.predict(states, deterministic=True)
        next_states, _, terminated, _, info = env.step(np.asarray(actions, np.float32).reshape(env.action_space.shape))
        recorder.step(states, info)
        states = next_states
        if terminated:
            break


def save_results(runs: list[StudentRun], config: RunConfig, run_dir: Path) -> None:
    config.save(run_dir / "config.yaml")
    (run_dir / "results.json").write_text(json.dumps([asdict(run) for run in runs], indent=2))
