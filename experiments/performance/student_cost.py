"""Student cost: where the time of one whole benchmark Student goes, per tutor, beside a plain timm training loop.

    python -m experiments.performance.student_cost [--tutors uniform ... meta_weight_net] [--repeats 1]
    python -m experiments.performance.student_cost --config protocol_v1_scratch --cell video_0.30/e0 --seed 0

Each tutor trains one Student of a grid's cell exactly as ``tsrl benchmark`` trains it
(:func:`experiments.training.student.train_student`: the environment, the recorder, the TensorBoard logs and the epoch
checkpoints), in this process, while a clock charges every second to the innermost of these parts that is running
(exclusive time):

- ``setup``: loading the cell's data (from the dataset cache: :func:`experiments.grid.runner.run_benchmark` builds
  it before any cell runs) and building the Student, the environment and the tutor;
- ``data``: drawing, augmenting and normalising training batches (:meth:`StudentTrainer.next_batch`);
- ``forward``: the Student's training forward (:meth:`StudentTrainer.forward_next_batch`);
- ``update``: the weighted backward and the optimiser step (:meth:`StudentTrainer.update`);
- ``reward``: the reward's passes, the no-grad forward after the update among them (``Reward.before_update`` and
  ``after_update``);
- ``states``: the per-sample history and the state rows (``SampleHistory.observe``, ``StateBuilder.build``);
- ``tutor acts`` and ``tutor learns``: the tutor's ``predict`` (a learning SB3 tutor: its policy's forward in the
  rollout) and its updates (``train``);
- ``evaluation``: validation after every epoch and the final test (:meth:`StudentTrainer.evaluate`);
- ``checkpoint``: the epoch-start checkpoints (:meth:`EpochCheckpointer.save_if_new_epoch`);
- ``recorder``: the run's tallies and logs (:class:`CurriculumRecorder`);
- ``other``: everything else (the env's own step, SB3's rollout bookkeeping, writing the record).

The floor, ``plain loop``, is a plain timm training loop over the same images, epochs (warm-up included), batch size,
optimiser and flips, scored with the same metrics on the same splits; it is timed with the same clock in the same
round. Tutors take turns round by round (``--repeats`` rounds, the order rotating), so a drift of the machine hits them
alike; the table gives each one's median wall time and its ratio to the floor (median of per-round ratios), and the
phases of its median round. On a GPU every phase boundary synchronises the device, which makes the phases exact and
the wall time a little longer than a cell's.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy

from agents.heuristics import HeuristicTutor
from experiments.config import RunConfig
from experiments.grid.spec import load_benchmark_config
from experiments.records.recorder import CurriculumRecorder
from experiments.report import format_table
from experiments.training.checkpoint import EpochCheckpointer
from experiments.training.student import train_student
from tsrl_env.data import make_dataset
from tsrl_env.metrics import detection_metrics, per_family_auc
from tsrl_env.rewards import REWARDS
from tsrl_env.state import SampleHistory, StateBuilder
from tsrl_env.student import FAKE_CLASS, NUM_CLASSES, resolve_device
from tsrl_env.trainer import EVAL_BATCH_SIZE, StudentTrainer, normalise_images

PHASES = (
    "setup",
    "data",
    "forward",
    "update",
    "reward",
    "states",
    "tutor acts",
    "tutor learns",
    "evaluation",
    "checkpoint",
    "recorder",
    "other",
)
FLOOR = "plain loop"


class PhaseClock:
    """Charges wall time to the innermost timed call running (exclusive time); what runs outside any is ``other``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)
        self._stack = ["other"]
        self._mark = time.perf_counter()

    def _switch(self, push: str | None) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.totals[self._stack[-1]] += now - self._mark
        self._mark = now
        if push is None:
            self._stack.pop()
        else:
            self._stack.append(push)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._switch(name)
        try:
            yield
        finally:
            self._switch(None)

    def timed(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return function(*args, **kwargs)

        return timed_call

    def result(self) -> dict[str, float]:
        self._switch(None)  # charge the time since the last boundary
        self._stack = ["other"]
        return dict(self.totals)


def _timed_methods() -> list[tuple[type, str, str]]:
    """(class, method, phase) of every method the clock wraps."""
    methods = [
        (StudentTrainer, "next_batch", "data"),
        (StudentTrainer, "forward_next_batch", "forward"),
        (StudentTrainer, "update", "update"),
        (StudentTrainer, "evaluate", "evaluation"),
        (StudentTrainer, "__init__", "setup"),
        (SampleHistory, "observe", "states"),
        (StateBuilder, "build", "states"),
        (EpochCheckpointer, "save_if_new_epoch", "checkpoint"),
        (CurriculumRecorder, "__init__", "setup"),
        (CurriculumRecorder, "step", "recorder"),
        (CurriculumRecorder, "warmup_epoch_ended", "recorder"),
        (HeuristicTutor, "predict", "tutor acts"),
        (BaseAlgorithm, "predict", "tutor acts"),
        (BaseAlgorithm, "__init__", "setup"),
    ]
    methods += [(cls, "forward", "tutor acts") for cls in _subclasses(BasePolicy)]
    methods += [(cls, "train", "tutor learns") for cls in _subclasses(BaseAlgorithm)]
    for reward in {*REWARDS.values()}:
        methods += [(reward, name, "reward") for name in ("before_update", "after_update") if name in vars(reward)]
    return methods


def _subclasses(cls: type) -> list[type]:
    """Every subclass of ``cls`` imported so far (the SB3 algorithms and policies define ``train`` and ``forward``)."""
    found = []
    for child in cls.__subclasses__():
        found += [child, *_subclasses(child)]
    return found


@contextlib.contextmanager
def clocked(clock: PhaseClock) -> Iterator[None]:
    """The methods of :func:`_timed_methods` charging their time to ``clock`` while inside."""
    originals = [(cls, name, vars(cls)[name]) for cls, name, _ in _timed_methods() if name in vars(cls)]
    phases = {(cls, name): phase for cls, name, phase in _timed_methods()}
    try:
        for cls, name, function in originals:
            setattr(cls, name, clock.timed(phases[cls, name], function))
        yield
    finally:
        for cls, name, function in originals:
            setattr(cls, name, function)


def tutored_student(config: RunConfig, directory: Path, clock: PhaseClock) -> None:
    """One Student of ``config`` trained as a grid cell trains it, its parts timed by ``clock``."""
    with clocked(clock):
        train_student(config, directory, progress=False, save_student=False)


def plain_loop(config: RunConfig, clock: PhaseClock) -> None:
    """The floor: a plain timm training loop of the same Student on the same images and epochs, evaluated alike."""
    env = config.env
    device = resolve_device(env.device)
    with clock.phase("setup"):
        dataset = make_dataset(env.dataset, **env.dataset_options)
        splits = dataset.splits
        train_images, train_labels = splits["train"].images.to(device), splits["train"].labels.to(device)
        torch.manual_seed(config.seed)
        model = timm.create_model(env.backbone, num_classes=NUM_CLASSES).to(device, memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=env.lr, weight_decay=env.weight_decay)
        generator = torch.Generator().manual_seed(config.seed)
    steps = len(train_labels) // env.batch_size
    for _ in range(env.warmup_epochs + env.epochs):
        order = torch.randperm(len(train_labels), generator=generator)
        model.train()
        for step in range(steps):
            with clock.phase("data"):
                ids = order[step * env.batch_size : (step + 1) * env.batch_size].to(device)
                images = train_images[ids]
                if env.augment:
                    flip = (torch.rand(len(ids), generator=generator) < 0.5).to(device)
                    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
                images = normalise_images(images)
            with clock.phase("forward"):
                loss = F.cross_entropy(model(images), train_labels[ids])
            with clock.phase("update"):
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        with clock.phase("evaluation"):
            _scored(model, splits["val"], dataset.family_names, device)
    with clock.phase("evaluation"):
        for name in dataset.test_splits:
            _scored(model, splits[name], dataset.family_names, device)


@torch.no_grad()
def _scored(model: torch.nn.Module, split: Any, family_names: list[str], device: torch.device) -> dict[str, Any]:
    model.eval()
    scores = torch.cat(
        [
            model(normalise_images(split.images[start : start + EVAL_BATCH_SIZE].to(device))).softmax(1)[:, FAKE_CLASS]
            for start in range(0, len(split), EVAL_BATCH_SIZE)
        ]
    ).cpu()
    labels = split.labels.cpu().numpy()
    metrics = detection_metrics(labels, scores.numpy(), split.groups.cpu().numpy())
    metrics["family_auc"] = per_family_auc(labels, scores.numpy(), split.families.cpu().numpy(), family_names)
    return metrics


def measure(configs: dict[str, RunConfig], repeats: int, device: torch.device) -> dict[str, list[dict[str, float]]]:
    """Phase times of ``repeats`` runs of the floor and of each tutor's Student, taking turns round by round."""
    names = [FLOOR, *configs]
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    first = next(iter(configs.values()))  # the floor trains on its data: every tutor's, the same cell
    make_dataset(first.env.dataset, **first.env.dataset_options)  # built and cached before any round
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            clock = PhaseClock(device)
            if name == FLOOR:
                plain_loop(first, clock)
            else:
                with tempfile.TemporaryDirectory(prefix="student_cost-") as directory:
                    tutored_student(configs[name], Path(directory), clock)
            rounds[name].append(clock.result())
            print(f"  round {round_index + 1}: {name} {sum(rounds[name][-1].values()):.1f} s", flush=True)
    return rounds


def cost_table(rounds: dict[str, list[dict[str, float]]]) -> str:
    """Per tutor: median wall time, ratio to the floor (median of per-round ratios) and its median round's phases."""
    walls = {name: [sum(run.values()) for run in runs] for name, runs in rounds.items()}
    header = ["tutor", "wall s", f"x {FLOOR}", *PHASES]
    rows = []
    for name, runs in rounds.items():
        ratio = statistics.median(w / f for w, f in zip(walls[name], walls[FLOOR], strict=True))
        median_run = runs[int(np.argsort(walls[name])[len(runs) // 2])]
        rows.append(
            [
                name,
                f"{statistics.median(walls[name]):.1f}",
                f"{ratio:.2f}",
                *(f"{median_run.get(phase, 0.0):.1f}" for phase in PHASES),
            ]
        )
    return format_table(header, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="protocol_v1_scratch", help="a benchmark config (default: protocol_v1_scratch)")
    parser.add_argument("--cell", default="video_0.30/e0", help="the cell's variant/dataset (default: video_0.30/e0)")
    parser.add_argument("--seed", type=int, default=0, help="the cell's Student seed (default: 0)")
    parser.add_argument(
        "--tutors",
        nargs="+",
        default=["uniform", "self_paced", "noise_mentor", "ppo", "l2rw", "meta_weight_net"],
        help="tutors to time (default: uniform, a heuristic, a frozen taught tutor, learning ppo, l2rw, meta_weight_net)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="rounds (default: 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--env", nargs="*", default=[], metavar="KEY=VALUE", help="env settings to override (YAML values)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    grid = load_benchmark_config(args.config)
    overrides = _parsed_overrides(args.env)
    configs = {}
    for tutor in args.tutors:
        config = grid.run_config(args.cell, tutor, args.seed)
        env = config.env.replace(**overrides)
        configs[tutor] = RunConfig(env=env, tutor=tutor, tutor_kwargs=config.tutor_kwargs, seed=config.seed)
    env = next(iter(configs.values())).env
    device = resolve_device(env.device)
    options = env.dataset_options
    print(
        f"Student {env.backbone} of {args.config} cell {args.cell} seed {args.seed}: {options.get('train_size')} training "
        f"images, batch {env.batch_size}, {env.warmup_epochs} + {env.epochs} epochs; device {device}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; {args.repeats} round(s)",
        flush=True,
    )
    print(cost_table(measure(configs, args.repeats, device)))


def _parsed_overrides(pairs: list[str]) -> dict[str, Any]:
    overrides = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator:
            raise SystemExit(f"--env takes KEY=VALUE pairs, got {pair!r}")
        overrides[key] = yaml.safe_load(value)
    return overrides


if __name__ == "__main__":
    main()
