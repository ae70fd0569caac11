"""The main job: train one Student with uniform weights and one with a tutor, same seed and data, and compare."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from agents import PerSampleVecEnv, make_tutor
from experiments.config import RunConfig
from tsrl_env import DeepfakeCurriculumEnv, PerSampleVectorEnv


@dataclass
class EpochRecord:
    """One Student epoch as the table reports it."""

    epoch: int
    phase: str  # "warm-up" or "tutored"
    val_auc: float
    mean_weight: float
    mean_reward: float


@dataclass
class StudentRun:
    """What one Student's training produced."""

    label: str
    epochs: list[EpochRecord] = field(default_factory=list)
    test: dict[str, dict[str, Any]] = field(default_factory=dict)
    wall_time_s: float = 0.0


class _EpochLog:
    """Averages per-step figures over an epoch and logs each finished epoch to TensorBoard."""

    def __init__(self, run: StudentRun, writer: SummaryWriter) -> None:
        self.run = run
        self.writer = writer
        self._weights: list[float] = []
        self._rewards: list[float] = []

    def warmup(self, warmup_info: list[dict[str, Any]]) -> None:
        for record in warmup_info:
            self._finish(EpochRecord(len(self.run.epochs) + 1, "warm-up", record["val"]["auc"], 1.0, float("nan")))

    def step(self, info: dict[str, Any]) -> None:
        self._weights.append(info["mean_weight"])
        self._rewards.append(float(np.mean(info["sample_rewards"])))
        if "val" in info:
            epoch = len(self.run.epochs) + 1
            self._finish(
                EpochRecord(epoch, "tutored", info["val"]["auc"], float(np.mean(self._weights)), float(np.mean(self._rewards)))
            )
            self._weights, self._rewards = [], []
        if "test" in info:
            self.run.test = info["test"]

    def _finish(self, record: EpochRecord) -> None:
        self.run.epochs.append(record)
        self.writer.add_scalar("student/val_auc", record.val_auc, record.epoch)
        self.writer.add_scalar("tutor/mean_weight", record.mean_weight, record.epoch)
        if record.phase == "tutored":
            self.writer.add_scalar("tutor/mean_reward", record.mean_reward, record.epoch)


class _TutorEpochCallback(BaseCallback):
    """Feeds the batch environment's info of every step to an :class:`_EpochLog`."""

    def __init__(self, log: _EpochLog) -> None:
        super().__init__()
        self.log = log

    def _on_training_start(self) -> None:
        self.log.warmup(self.training_env.reset_infos[0]["warmup"])

    def _on_step(self) -> bool:
        self.log.step(self.locals["infos"][0]["batch"])
        return True


def train_uniform(config: RunConfig, run_dir: Path, progress: bool = True) -> StudentRun:
    """Train one Student with every weight 1, through the same environment the tutor uses."""
    run = StudentRun("uniform")
    start = time.perf_counter()
    env = DeepfakeCurriculumEnv(config.env)
    with SummaryWriter(run_dir / "tensorboard" / "uniform") as writer:
        log = _EpochLog(run, writer)
        _, info = env.reset(seed=config.seed)
        log.warmup(info["warmup"])
        weights = np.ones(env.action_space.shape, np.float32)
        for _ in tqdm(range(config.env.epochs * env.steps_per_epoch), desc="uniform", disable=not progress):
            _, _, terminated, _, info = env.step(weights)
            log.step(info)
            if terminated:
                break
    run.wall_time_s = time.perf_counter() - start
    _save_student(env.finished_student, run_dir / "uniform")
    return run


def train_tutored(config: RunConfig, run_dir: Path, progress: bool = True) -> StudentRun:
    """Train one Student while the tutor learns to weight its samples, for one episode."""
    run = StudentRun(config.tutor)
    start = time.perf_counter()
    env = DeepfakeCurriculumEnv(config.env)
    # Learning stops exactly at the episode's end, so no second Student needs to be built and warmed up.
    view = PerSampleVecEnv(PerSampleVectorEnv(env, autoreset=False))
    tutor = make_tutor(config.tutor, view, seed=config.seed, tensorboard_log=str(run_dir / "tensorboard"), **config.tutor_kwargs)
    with SummaryWriter(run_dir / "tensorboard" / config.tutor) as writer:
        log = _EpochLog(run, writer)
        total = config.env.epochs * env.steps_per_epoch * env.batch_size
        tutor.learn(
            total_timesteps=total, callback=_TutorEpochCallback(log), progress_bar=progress, tb_log_name=f"{config.tutor}_tutor"
        )
    run.wall_time_s = time.perf_counter() - start
    out = run_dir / config.tutor
    _save_student(env.finished_student, out)
    tutor.save(out / "tutor.zip")
    return run


def _save_student(student: torch.nn.Module | None, directory: Path) -> None:
    if student is None:
        raise RuntimeError("the episode did not finish, so there is no trained Student to save")
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(student.state_dict(), directory / "student.pt")


def save_results(runs: list[StudentRun], config: RunConfig, run_dir: Path) -> None:
    config.save(run_dir / "config.yaml")
    (run_dir / "results.json").write_text(json.dumps([asdict(run) for run in runs], indent=2))
