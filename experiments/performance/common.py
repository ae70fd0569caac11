"""What the benchmarks share: their options, the environment of a run, plain supervised epochs, epoch runners, timing.

Timing method: every variant runs whole Student epochs (``steps_per_epoch`` batches); each is timed with
``time.perf_counter`` around the epoch, with ``torch.cuda.synchronize`` before and after on a GPU. Each variant first
runs one untimed epoch (warm-up: allocator, caches, lazy initialisation), then the variants take turns, one epoch each
per round, for ``--repeats`` rounds, the order rotating every round, so slow drifts of the machine hit them all alike.
Reported: the median epoch time, and the ratio to plain training as the median over rounds of the per-round ratio
(both measured back to back in that round).

The environment's validation and test evaluations (at epoch ends) are replaced by no-ops here: a plain epoch has none,
and they cost the same whatever the step pattern. The Student's warm-up epochs are skipped (``warmup_epochs=0``).
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from experiments.report import format_table
from tsrl_env import DeepfakeCurriculumEnv, PerSampleGymnasiumVectorEnv, StudentTrainer
from tsrl_env.student import resolve_device

# Sizes of the splits the benchmarks never evaluate (kept small: they are generated with the training split).
HELD_OUT_SIZE = 256


def add_common_arguments(parser: argparse.ArgumentParser, train_size: int = 2048, repeats: int = 5) -> None:
    parser.add_argument("--backbone", default="resnet10t", help="timm name of the Student (default: resnet10t)")
    parser.add_argument("--image-size", type=int, default=64, help="side of the generated images (default: 64)")
    parser.add_argument("--batch-size", type=int, default=64, help="Student batch size (default: 64)")
    parser.add_argument("--train-size", type=int, default=train_size, help=f"training images (default: {train_size})")
    parser.add_argument("--repeats", type=int, default=repeats, help=f"timed epochs per variant (default: {repeats})")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument(
        "--state-feature-dim",
        type=int,
        default=None,
        help="width the Student features are projected to in the state (default: the backbone's own width)",
    )
    parser.add_argument("--seed", type=int, default=0)


def setup(args: argparse.Namespace) -> torch.device:
    """Apply the thread count and resolve the device."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    return resolve_device(args.device)


def env_settings(args: argparse.Namespace, reward: str = "tsrl", epochs: int = 1) -> dict:
    """Settings of a benchmark environment: the embedded benchmark generated at ``--image-size``, no Student warm-up."""
    return {
        "dataset": "embedded",
        "dataset_options": {
            "image_size": args.image_size,
            "train_size": args.train_size,
            "val_size": HELD_OUT_SIZE,
            "test_seen_size": HELD_OUT_SIZE,
            "test_unseen_size": HELD_OUT_SIZE,
            "seed": args.seed,
        },
        "backbone": args.backbone,
        "batch_size": args.batch_size,
        "epochs": epochs,
        "warmup_epochs": 0,
        "reward": reward,
        "state_feature_dim": args.state_feature_dim,
        "device": args.device,
        "seed": args.seed,
    }


class UnevaluatedEnv(DeepfakeCurriculumEnv):
    """The curriculum environment with its epoch-end evaluations as no-ops (see the module docstring)."""

    def evaluate(self, split: str) -> dict[str, Any]:
        return {}


def make_env(args: argparse.Namespace, reward: str = "tsrl", epochs: int = 1) -> DeepfakeCurriculumEnv:
    """A benchmark environment whose epoch-end evaluations are no-ops (see the module docstring)."""
    return UnevaluatedEnv(**env_settings(args, reward, epochs))


def describe(args: argparse.Namespace, env: DeepfakeCurriculumEnv) -> str:
    """One line saying what was measured and where."""
    device = env.device
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'}"
    return (
        f"Student {args.backbone} at {args.image_size}x{args.image_size}, batch {env.batch_size}, {env.steps_per_epoch} "
        f"steps per epoch ({env.steps_per_epoch * env.batch_size} of {args.train_size} training images), state width "
        f"{env.observation_space.shape[1]}; device {device} ({where}), {torch.get_num_threads()} torch threads, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}; {args.repeats} timed epochs per variant"
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainer_of(env: DeepfakeCurriculumEnv, seed: int) -> StudentTrainer:
    """A trainer of its own on ``env``'s settings and loaded data: a Student and optimiser built as the env builds its
    own, from ``seed``, and batches drawn, augmented and normalised as the env draws them (data order from ``seed``)."""
    trainer = StudentTrainer(env.config, dataset=env.dataset)
    trainer.start(student_seed=seed, data_seed=seed)
    return trainer


def batches(trainer: StudentTrainer) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One epoch of (sample ids, normalised images, labels) of ``trainer``'s training split, in its own order."""
    trainer.start_epoch(trainer.epoch + 1)
    for _ in range(trainer.steps_per_epoch):
        ids, _, images, labels = trainer.next_batch()
        yield ids, images, labels


class PlainSupervised:
    """Plain supervised training of the env's Student on the env's data: per batch one training forward, the
    unweighted mean cross-entropy, one backward and one optimiser step. Nothing is read back per step."""

    def __init__(self, env: DeepfakeCurriculumEnv, seed: int = 0) -> None:
        self.trainer = trainer_of(env, seed)

    def epoch(self) -> None:
        student, optimizer = self.trainer.student, self.trainer.optimizer
        student.train()
        for _, images, labels in batches(self.trainer):
            logits, _ = student(images)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


class FixedWeightEpochs:
    """Epochs of ``env.step`` with fixed random weights (no tutor), through the batch env or a per-sample view.

    ``view`` is ``"batch"`` (the env itself), ``"vector"`` (:class:`tsrl_env.PerSampleGymnasiumVectorEnv`) or ``"sb3"``
    (:class:`agents.PerSampleSB3VecEnv`, SB3's ``VecEnv``). The env must have more epochs than will be run.
    """

    def __init__(self, env: DeepfakeCurriculumEnv, view: str = "batch", seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.weights = rng.uniform(size=(env.steps_per_epoch, env.batch_size)).astype(np.float32)
        if view == "batch":
            env.reset(seed=seed)
            self.step = env.step
        elif view == "vector":
            vector = PerSampleGymnasiumVectorEnv(env, autoreset=False)
            vector.reset(seed=seed)
            self.weights = self.weights[..., None]
            self.step = vector.step
        elif view == "sb3":
            from agents import PerSampleSB3VecEnv

            vec = PerSampleSB3VecEnv(env, autoreset=False)
            vec.seed(seed)
            vec.reset()
            self.weights = self.weights[..., None]
            self.step = vec.step
        else:
            raise ValueError(f"unknown view {view!r}; accepted: batch, vector, sb3")

    def epoch(self) -> None:
        for weights in self.weights:
            self.step(weights)


class TutoredEpochs:
    """Epochs of the PPO tutor acting on the per-sample view and learning: one SB3 rollout per Student epoch, then
    its update (8 PPO epochs over the epoch's transitions). The first epoch also resets the env."""

    def __init__(self, env: DeepfakeCurriculumEnv, seed: int = 0, device: torch.device | str = "cpu") -> None:
        from agents import TutorPPO, single_episode_view

        self.agent = TutorPPO(single_episode_view("ppo", env), seed=seed, device=device)
        self.per_epoch = env.steps_per_epoch * env.batch_size
        self.started = False

    def epoch(self) -> None:
        self.agent.learn(self.per_epoch, reset_num_timesteps=not self.started)
        self.started = True


def time_epoch(epoch: Callable[[], None], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    epoch()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_times(epochs: dict[str, Callable[[], None]], repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds of each of ``repeats`` epochs per variant, after one untimed epoch each, variants taking turns."""
    for epoch in epochs.values():
        epoch()
    names = list(epochs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(time_epoch(epochs[name], device))
    return times


def paired_ratio(times: list[float], baseline: list[float]) -> float:
    """Median over rounds of ``times[r] / baseline[r]``."""
    return statistics.median(t / b for t, b in zip(times, baseline, strict=True))


def timing_table(times: dict[str, list[float]], baseline: str, steps: int, passes: dict[str, str] | None = None) -> str:
    """The table the timing benchmarks print: per variant (with what it runs per batch, when ``passes`` says) its median
    epoch, milliseconds per step, ratio to ``baseline`` (:func:`paired_ratio`) and the spread of its epochs."""
    described = [] if passes is None else ["Student passes per batch"]
    header = ["variant", *described, "epoch s (median)", "ms per step", f"x {baseline}", "epoch s (min-max)"]
    rows = [
        [
            name,
            *([] if passes is None else [passes[name]]),
            f"{statistics.median(seconds):.3f}",
            f"{1000 * statistics.median(seconds) / steps:.1f}",
            f"{paired_ratio(seconds, times[baseline]):.2f}",
            f"{min(seconds):.3f}-{max(seconds):.3f}",
        ]
        for name, seconds in times.items()
    ]
    return format_table(header, rows)


def free_port() -> int:
    """A TCP port free on this machine now, for a process group's rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(processes: int = 2) -> list[str]:
    """The command that starts ``processes`` copies of a Python module under torchrun, on a free port."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", f"--master_port={free_port()}"]
