"""Meta step: the head-only and the last-stage virtual steps of ``l2rw`` and ``meta_weight_net`` against the exact
whole-Student one.

    OMP_NUM_THREADS=1 python -m experiments.performance.meta_step [--train-size 3000] [--epochs 2] [--every 4] [--repeats 7]
        [--meta-interval 4]

Method. The data are protocol v1 teaching data (docs/protocol.md): the embedded benchmark's content on its fixed tiles,
content seed ``--seed`` and flip seed ``--noise-seed`` (teaching seeds, 1000-1999, which no evaluation grid uses),
label noise ``--label-noise`` under the video model; the Student is protocol v1's (``regnetx_002`` from scratch at
64 px, batch 64, Adam at 1e-3, flips, one uniform warm-up epoch; 3,000 training and 600 validation images), seed
``--student-seed``, for fewer tutored epochs than a protocol cell's five (``--epochs``). For each tutor, one Student
trains under the exact tutor (``virtual_step: "student"``), as a protocol cell would. At every ``--every``-th tutored
step, before the tutor acts, the exact version and each approximation (``"head"``, the final linear layer alone;
``"last_stage"``, the backbone's last stage and the head) weigh the batch awaiting weights against the same trusted
batch (``meta_weight_net`` has a third approximation, the exact step taken once every ``--meta-interval`` steps,
``meta_interval``), drawn from the validation split by a generator of this study's own: nothing is drawn from the tutor's or the
Student's generators, so the Student trains exactly as without the comparison. Each version's meta-gradients are the
per-sample alignments of :data:`agents.meta_reweight.VIRTUAL_STEPS` (``l2rw``: at the Student's parameters;
``meta_weight_net``: after the virtual step with the exact network's current weights). Compared, each approximation
with the exact version:

- ``l2rw``: the two versions' weights (:meth:`LearningToReweight.weights_from` of each version's meta-gradients).
- ``meta_weight_net``: the direction of the meta step each version's meta-gradients give the exact tutor's network
  (cosine of the two gradients with respect to its parameters); and the weights of the exact tutor's network against
  those of a network of the approximation from the same seed, meta-stepped at every tutored step of the same Student
  (its trusted batches drawn by this study's generator); its step-interval version's network is meta-stepped at the
  first of every ``--meta-interval`` steps only, with the exact step (its meta-gradients are the exact ones: only its
  weights are compared).

Reported per tutor and approximation, over the compared steps: the Spearman correlation of the two versions' weights
and of their meta-gradients, and the cosine of the network's meta steps (median, and min-max); the mean absolute
difference of their weights; for ``l2rw`` the share of samples on which the two agree whether the weight is 0, and
each version's share of zeros; for each version the noise AUROC, the area under the ROC curve of ``1 - weight`` (of
minus the meta-gradient) for a flipped training label, per batch, averaged over the compared steps.

Timing: on the trained Student and one fixed training batch and trusted batch, a plain step (training forward,
unweighted cross-entropy, backward, Adam step) and each tutor version's step (the same forward, the tutor's weights,
the weighted backward, the Adam step) take turns for ``--repeats`` rounds, the order rotating every round, after one
untimed warm-up round. Reported: the median time of a step and the median over rounds of its ratio to that round's
plain step; a step-interval version takes ``--meta-interval`` steps a round, and its time is their mean, so that
one meta step is counted per interval. Run it on one thread (``OMP_NUM_THREADS=1``, as a protocol cell runs with
``--cpus-per-cell 1``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from agents import make_tutor
from agents.meta_reweight import TRUSTED_SPLIT, VIRTUAL_STEPS, LearningToReweight, MetaWeightNet
from experiments.report import format_table
from tsrl_env import DeepfakeCurriculumEnv
from tsrl_env.trainer import TrainingBatch

TUTORS = ("l2rw", "meta_weight_net")
EXACT = "student"
APPROXIMATIONS = ("head", "last_stage")
"""The virtual steps compared with the exact one, :data:`EXACT`."""
VERSIONS = (EXACT, *APPROXIMATIONS)


def interval_version(interval: int) -> str:
    """The name of ``meta_weight_net``'s version that takes the exact meta step once every ``interval`` steps."""
    return f"{EXACT} every {interval}"


@dataclass
class Comparison:
    """The per-step figures of one tutor's exact version and one approximation, ``version``, on one Student; the
    dictionaries are keyed by version (:data:`EXACT` or ``version``)."""

    version: str
    weight_spearman: list[float] = field(default_factory=list)
    weight_difference: list[float] = field(default_factory=list)
    gradient_spearman: list[float] = field(default_factory=list)
    network_cosine: list[float] = field(default_factory=list)
    zero_agreement: list[float] = field(default_factory=list)
    zeros: dict[str, list[float]] = field(default_factory=dict)
    weight_auroc: dict[str, list[float]] = field(default_factory=dict)
    gradient_auroc: dict[str, list[float]] = field(default_factory=dict)

    def add(self, flipped: np.ndarray, weights: dict[str, np.ndarray], gradients: dict[str, np.ndarray], zeros: bool) -> None:
        approximate = self.version
        self.weight_spearman.append(_spearman(weights[EXACT], weights[approximate]))
        self.weight_difference.append(float(np.mean(np.abs(weights[EXACT] - weights[approximate]))))
        if approximate in gradients:
            self.gradient_spearman.append(_spearman(gradients[EXACT], gradients[approximate]))
        if zeros:
            self.zero_agreement.append(float(np.mean((weights[EXACT] == 0) == (weights[approximate] == 0))))
        for version in (EXACT, approximate):
            if zeros:
                self.zeros.setdefault(version, []).append(float(np.mean(weights[version] == 0)))
            if 0 < flipped.sum() < len(flipped):
                self.weight_auroc.setdefault(version, []).append(roc_auc_score(flipped, 1.0 - weights[version]))
                if version in gradients:
                    self.gradient_auroc.setdefault(version, []).append(roc_auc_score(flipped, -gradients[version]))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    env = DeepfakeCurriculumEnv(**env_settings(args))
    print(
        f"Students: {env.config.backbone} from scratch at {args.image_size} px, batch {env.batch_size}, "
        f"{env.steps_per_epoch} steps per epoch, 1 warm-up + {args.epochs} tutored epochs; data seed {args.seed}, "
        f"noise seed {args.noise_seed}, video label noise {args.label_noise}; Student seed {args.student_seed}; "
        f"compared every {args.every} tutored steps; {torch.get_num_threads()} torch thread(s)"
    )
    comparisons = {
        (name, version): comparison for name in args.tutors for version, comparison in compare(env, name, args).items()
    }
    timings = step_times(env, args)
    print(results_table(comparisons, timings))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.performance.meta_step",
        description="The head-only and last-stage virtual steps of l2rw and meta_weight_net against the exact "
        "whole-Student one, on a teaching Student: agreement of their weights, noise AUROC and time per step.",
    )
    parser.add_argument("--tutors", nargs="+", choices=TUTORS, default=list(TUTORS), help="tutors compared (default: both)")
    parser.add_argument("--train-size", type=int, default=3000, help="training images (default: 3000, as protocol v1)")
    parser.add_argument("--val-size", type=int, default=600, help="validation images, the trusted split (default: 600)")
    parser.add_argument("--image-size", type=int, default=64, help="side of the images (default: 64)")
    parser.add_argument("--epochs", type=int, default=2, help="tutored epochs after the warm-up epoch (default: 2)")
    parser.add_argument("--every", type=int, default=4, help="compare at every k-th tutored step (default: 4)")
    parser.add_argument("--seed", type=int, default=1000, help="content seed of the dataset, 1000-1999 (default: 1000)")
    parser.add_argument("--noise-seed", type=int, default=1000, help="flip seed of the dataset, 1000-1999 (default: 1000)")
    parser.add_argument("--label-noise", type=float, default=0.30, help="video label noise (default: 0.30)")
    parser.add_argument("--student-seed", type=int, default=1000, help="Student and tutor seed, 1000 up (default: 1000)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds of every step kind (default: 7)")
    parser.add_argument(
        "--meta-interval", type=int, default=4, help="meta_weight_net's interval version: an exact meta step in k (default: 4)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1, as a protocol cell)")
    args = parser.parse_args(argv)
    if args.every < 1 or args.repeats < 1 or args.epochs < 1 or args.meta_interval < 2:
        parser.error("--every, --repeats and --epochs must be at least 1, --meta-interval at least 2")
    return args


def env_settings(args: argparse.Namespace) -> dict:
    """Protocol v1's teaching data and Student, at the study's sizes. The reward is ``next_visit``, which costs no pass
    of its own: no reward feeds the Student, which trains as under any other."""
    held_out = 128
    return {
        "dataset": "embedded",
        "dataset_options": {
            "tiles": "fixed",
            "content": "benchmark",
            "noise_model": "video",
            "label_noise": args.label_noise,
            "seed": args.seed,
            "noise_seed": args.noise_seed,
            "image_size": args.image_size,
            "train_size": args.train_size,
            "val_size": args.val_size,
            "test_seen_size": held_out,
            "test_unseen_size": held_out,
        },
        "backbone": "regnetx_002",
        "pretrained": False,
        "batch_size": 64,
        "epochs": args.epochs,
        "warmup_epochs": 1,
        "lr": 1e-3,
        "augment": True,
        "reward": "next_visit",
        "state_columns": ["ema_loss"],
        "device": "cpu",
    }


def compare(env: DeepfakeCurriculumEnv, name: str, args: argparse.Namespace) -> dict[str, Comparison]:
    """Train one Student under the exact ``name`` tutor, comparing every approximation with it along the way."""
    states, _ = env.reset(seed=args.student_seed)
    tutor = make_tutor(name, env, seed=args.student_seed, virtual_step=EXACT)
    shadows = (
        {
            **{version: make_tutor(name, env, seed=args.student_seed, virtual_step=version) for version in APPROXIMATIONS},
            interval_version(args.meta_interval): make_tutor(
                name, env, seed=args.student_seed, virtual_step=EXACT, meta_interval=args.meta_interval
            ),
        }
        if name == MetaWeightNet.name
        else {}
    )
    generator = torch.Generator().manual_seed(args.student_seed)
    flipped = env.dataset.splits["train"].flipped.numpy()
    comparisons = {version: Comparison(version) for version in (shadows or APPROXIMATIONS)}
    step, done = 0, False
    while not done:
        batch = env.pending_batch
        trusted = trusted_batch(env, generator) if shadows or step % args.every == 0 else None
        if step % args.every == 0:
            if not shadows:
                gradients = {version: VIRTUAL_STEPS[version](env.trainer, batch, trusted, None) for version in VERSIONS}
                weights = {version: LearningToReweight.weights_from(gradient) for version, gradient in gradients.items()}
            else:
                with torch.no_grad():
                    before = tutor.network(batch.losses.detach().unsqueeze(1)).squeeze(1)
                gradients = {version: VIRTUAL_STEPS[version](env.trainer, batch, trusted, before) for version in VERSIONS}
                directions = {version: network_gradient(tutor, batch, gradients[version]) for version in VERSIONS}
                for version in APPROXIMATIONS:
                    cosine = F.cosine_similarity(directions[EXACT], directions[version], dim=0)
                    comparisons[version].network_cosine.append(float(cosine))
        shadow_weights = {version: shadow.batch_weights(batch, trusted) for version, shadow in shadows.items()}
        action = tutor.predict(states)[0].ravel()
        if step % args.every == 0:
            if shadows:
                weights = {EXACT: torch.from_numpy(action), **shadow_weights}
            for comparison in comparisons.values():
                comparison.add(flipped[batch.ids.cpu().numpy()], _numpy(weights), _numpy(gradients), zeros=not shadows)
        states, _, done, _, _ = env.step(action)
        step += 1
    return comparisons


def network_gradient(tutor: MetaWeightNet, batch: TrainingBatch, alignment: torch.Tensor) -> torch.Tensor:
    """The direction of the meta step of ``tutor``'s network these alignments give (up to the factor ``-α/B``), flat."""
    parameters = list(tutor.network.parameters())
    with torch.enable_grad():
        weights = tutor.network(batch.losses.detach().unsqueeze(1)).squeeze(1)
        gradient = torch.autograd.grad((alignment * weights).sum(), parameters)
    return torch.cat([g.flatten() for g in gradient])


def trusted_batch(env: DeepfakeCurriculumEnv, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of the trusted split of the Student's batch size, drawn by ``generator``."""
    split = env.trainer.splits[TRUSTED_SPLIT]
    ids = torch.randperm(len(split), generator=generator)[: env.batch_size]
    return env.trainer.images_of(TRUSTED_SPLIT, ids), split.labels[ids.to(env.device)]


def step_times(env: DeepfakeCurriculumEnv, args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """Median seconds per step of the plain step and of each tutor version's, and the median per-round ratio of each
    to the plain step, on the last Student, one batch and one trusted batch."""
    student, optimizer = env.student, env.trainer.optimizer
    ids = torch.arange(env.batch_size)
    images, labels = env.trainer.images_of("train", ids), env.trainer.splits["train"].labels[ids.to(env.device)]
    trusted = trusted_batch(env, torch.Generator().manual_seed(args.student_seed))
    tutors = {
        f"{name} {version}": make_tutor(name, env, seed=args.student_seed, virtual_step=version)
        for name in args.tutors
        for version in VERSIONS
    }
    if MetaWeightNet.name in args.tutors:
        tutors[f"{MetaWeightNet.name} {interval_version(args.meta_interval)}"] = make_tutor(
            MetaWeightNet.name, env, seed=args.student_seed, virtual_step=EXACT, meta_interval=args.meta_interval
        )

    def step(tutor: LearningToReweight | MetaWeightNet | None) -> tuple[Callable[[], None], int]:
        steps = int(tutor.params.get("meta_interval", 1)) if tutor is not None else 1

        def run() -> None:
            for _ in range(steps):
                student.train()
                logits, features = student(images)
                losses = F.cross_entropy(logits, labels, reduction="none")
                loss = losses.mean()
                if tutor is not None:
                    batch = _batch_of(images, labels, losses, logits, features)
                    loss = (tutor.batch_weights(batch, trusted) * losses).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

        return run, steps

    steps = {"plain": step(None)} | {label: step(tutor) for label, tutor in tutors.items()}
    times: dict[str, list[float]] = {label: [] for label in steps}
    order = list(steps)
    for round_ in range(args.repeats + 1):
        for label in order[round_ % len(order) :] + order[: round_ % len(order)]:
            run, count = steps[label]
            start = time.perf_counter()
            run()
            if round_:
                times[label].append((time.perf_counter() - start) / count)
    ratios = {label: statistics.median(t / p for t, p in zip(times[label], times["plain"], strict=True)) for label in times}
    return {label: (statistics.median(times[label]), ratios[label]) for label in times}


def results_table(comparisons: dict[tuple[str, str], Comparison], timings: dict[str, tuple[float, float]]) -> str:
    """One row per figure, one column per tutor and approximation (the keys of ``comparisons``): exact (whole-Student
    step) / approximation where a figure has both."""

    def pair(c: Comparison, values: dict[str, list[float]], digits: int = 3) -> str:
        shown = [f"{_mean(values[version]):.{digits}f}" if version in values else "-" for version in (EXACT, c.version)]
        return " / ".join(shown) if values else "-"

    def ratio(name: str, c: Comparison) -> str:
        return f"{timings[f'{name} {EXACT}'][1]:.2f} / {timings[f'{name} {c.version}'][1]:.2f}"

    figures: dict[str, Callable[[str, Comparison], str]] = {
        "compared steps": lambda _, c: str(len(c.weight_spearman)),
        "Spearman of weights, median [min, max]": lambda _, c: _median_range(c.weight_spearman),
        "mean absolute difference of weights": lambda _, c: f"{_mean(c.weight_difference):.3f}",
        "Spearman of meta-gradients, median [min, max]": lambda _, c: _median_range(c.gradient_spearman),
        "cosine of network meta-steps, median [min, max]": lambda _, c: _median_range(c.network_cosine),
        "agreement on weight 0 (share of samples)": lambda _, c: f"{_mean(c.zero_agreement):.2f}" if c.zero_agreement else "-",
        "share of weight 0, exact / approximation": lambda _, c: pair(c, c.zeros, 2),
        "noise AUROC of 1 - weight, exact / approximation": lambda _, c: pair(c, c.weight_auroc),
        "noise AUROC of -meta-gradient, exact / approximation": lambda _, c: pair(c, c.gradient_auroc),
        "time per step, x plain, exact / approximation": ratio,
    }
    rows = [[figure, *(show(name, c) for (name, _), c in comparisons.items())] for figure, show in figures.items()]
    rows.append(["plain step (s)", *(f"{timings['plain'][0]:.3f}" for _ in comparisons)])
    return format_table(["", *(f"{name}: {version}" for name, version in comparisons)], rows)


def _batch_of(
    images: torch.Tensor, labels: torch.Tensor, losses: torch.Tensor, logits: torch.Tensor, features: torch.Tensor
) -> TrainingBatch:
    """A :class:`TrainingBatch` of one training forward, with what the tutors read of it."""
    probabilities = logits.detach().softmax(dim=1)
    correct = probabilities.argmax(dim=1) == labels
    p_true = probabilities.gather(1, labels.unsqueeze(1)).squeeze(1)
    ids = torch.arange(len(labels))
    return TrainingBatch(
        epoch=0,
        step=0,
        ids=ids,
        row_ids=ids,
        images=images,
        labels=labels,
        losses=losses,
        p_true=p_true,
        correct=correct,
        probabilities=probabilities,
        features=features.detach(),
        batch_losses=losses.detach(),
        batch_p_true=p_true,
        batch_correct=correct,
    )


def _numpy(values: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {key: value.detach().cpu().numpy() for key, value in values.items()}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation; 1 where both vectors are constant (both versions weigh every sample alike)."""
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return 1.0
    return float(spearmanr(a, b).statistic)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _median_range(values: list[float]) -> str:
    return f"{np.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]" if values else "-"


if __name__ == "__main__":
    main()
