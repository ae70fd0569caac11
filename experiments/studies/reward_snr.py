"""Signal-to-noise of the rewards a reinforcement-learning fine-tune of a taught tutor could learn from.

    python -m experiments.studies.reward_snr [--config teach_v1_pretrained] [--tutor noise_mentor_v1_pretrained]
        [--students 16 17 32 33] [--out DIR]

Question. Starting from the taught tutor's cloned actor, PPO would move each weight by the policy gradient of a reward.
Which reward's action-dependent part, the part a policy gradient follows, stands above its noise on teaching Students
the tutor never learned from? A reward teaches the tutor to drop wrong labels when its derivative with respect to a
sample's weight is larger on clean samples than on flipped ones: the *gap* ``mean_clean(dr/da) - mean_flipped(dr/da)``
(positive = the right direction).

Method. Each teaching Student (the teaching config's ``--students`` indices: seed, noise model and rate as ``tsrl teach``
gives them; indices 16 up were never taught on) trains under the tutor's own exploring policy, the action PPO would
sample: ``a = mu(s) + sigma * eps`` with the tutor's mean ``mu``, its fixed standard deviation ``sigma`` and ``eps ~
N(0, 1)`` from a generator of the study's, clipped to [0, 1] by the env. At every step, on the same batch and Student,

- ``tsrl``: the env's reward (the paper's), after the weighted update;
- ``val_alignment``: ``a * cos(g_i, G)``, the head gradient against a trusted validation batch's (its exact derivative
  is the cosine);
- ``counterfactual``: ``a * d_i`` with ``d_i = grad l_i . grad L_trusted`` over the whole Student, the first-order drop
  of a trusted batch's loss from the sample's weight (Learning to Reweight's quantity; its exact derivative is
  ``d_i``).

Two figures per per-sample reward: *sampled*, the per-sample policy-gradient estimate of the derivative that PPO sees,
``(r - mean of the batch's r) * (a - mu) / sigma^2`` (the batch mean as baseline; a critic can lower this noise, not the
exact figure's), and *exact*, the derivative itself where the reward is linear in the weight. For each: the gap, the
pooled per-sample standard deviation, their ratio (the per-sample signal-to-noise) and the gap over its standard error
over every visit measured.

The per-Student candidate, the final trusted (validation) AUC ``R`` of the episode, pays one number for the episode's
thousands of actions. Each Student is trained twice more, under a second exploration draw and under the oracle's
weights. To first order the policy gradient's component along the oracle's direction ``v = oracle - mu`` is ``R(oracle)
- R(mu)``, and one episode estimates it with standard deviation ``sd(R) * ||v|| / sigma`` (``sd(R)`` from the two
exploration draws, ``||v||`` over the episode's actions): the per-episode signal-to-noise is their ratio, and ``(2 /
SNR)^2`` episodes give one gradient step's direction at two standard errors. First order: a move as large as the
oracle's is not small, so this is an estimate of scale, not a measurement of the gradient.

Each Student's figures are written to ``--out/student_SEED.json`` as they finish (a Student on file is not run
again); ``reward_snr.md`` pools every Student on file.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import agents
from agents.meta_reweight import TRUSTED_SPLIT, trusted_alignment
from experiments.report import markdown_table
from experiments.teaching.config import load_teach_config
from tsrl_env import DeepfakeCurriculumEnv
from tsrl_env.rewards import ValAlignmentReward

PER_SAMPLE_REWARDS = ("tsrl", "val_alignment", "counterfactual")
EXACT_DERIVATIVE = {"val_alignment", "counterfactual"}
GROUPS = ("clean", "flipped")
EXPLORATION_SEED_OFFSET = 7_919
"""The exploration draws' generator seeds are the Student's seed plus this (and plus it twice for the second draw)."""


@dataclass
class Moments:
    """Count, sum and sum of squares of a per-sample value in each group (clean, flipped): enough to pool Students."""

    counts: list[int] = field(default_factory=lambda: [0, 0])
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0])
    squares: list[float] = field(default_factory=lambda: [0.0, 0.0])

    def add(self, values: np.ndarray, flipped: np.ndarray) -> None:
        for group, mask in enumerate((~flipped, flipped)):
            chosen = values[mask].astype(np.float64)
            self.counts[group] += len(chosen)
            self.sums[group] += float(chosen.sum())
            self.squares[group] += float((chosen**2).sum())

    def merged(self, other: Moments) -> Moments:
        return Moments(
            [a + b for a, b in zip(self.counts, other.counts, strict=True)],
            [a + b for a, b in zip(self.sums, other.sums, strict=True)],
            [a + b for a, b in zip(self.squares, other.squares, strict=True)],
        )

    def signal(self) -> dict[str, float]:
        """The clean-minus-flipped gap of the means, the pooled within-group sd, and the gap over its standard error."""
        n = np.asarray(self.counts, np.float64)
        means = np.asarray(self.sums) / n
        within = np.asarray(self.squares) - n * means**2
        pooled = float(np.sqrt(within.sum() / (n.sum() - 2)))
        gap = float(means[0] - means[1])
        standard_error = pooled * float(np.sqrt((1 / n).sum()))
        return {
            "mean_clean": float(means[0]),
            "mean_flipped": float(means[1]),
            "gap": gap,
            "sd": pooled,
            "snr_per_sample": gap / pooled,
            "gap_over_standard_error": gap / standard_error,
            "visits": int(n.sum()),
        }


def exploring_episode(
    env: DeepfakeCurriculumEnv, tutor: Any, seed: int, sigma: float, exploration_seed: int, measure: bool
) -> dict[str, Any]:
    """One episode under the tutor's exploring policy; the per-sample rewards' moments when ``measure``."""
    flipped_of = env.splits["train"].flipped.cpu().numpy()
    noise = np.random.default_rng(exploration_seed)
    observation, _ = env.reset(seed=seed)
    if measure:
        alignment_reward = ValAlignmentReward(env.config, env.trainer)
        alignment_reward.reset(np.random.default_rng(exploration_seed))
        trusted_draw = torch.Generator().manual_seed(exploration_seed)
        trusted = env.splits[TRUSTED_SPLIT]
    sampled = {name: Moments() for name in PER_SAMPLE_REWARDS}
    exact = {name: Moments() for name in EXACT_DERIVATIVE}
    oracle_distance = 0.0
    terminated, info = False, {}
    while not terminated:
        batch = env.pending_batch
        mean = tutor.predict(observation, deterministic=True)[0].reshape(-1).astype(np.float64)
        action = mean + sigma * noise.standard_normal(len(mean))
        weights = torch.as_tensor(np.clip(action, 0.0, 1.0), dtype=torch.float32, device=env.device)
        flipped = flipped_of[batch.ids.cpu().numpy()]
        oracle_distance += float((((~flipped).astype(np.float64) - mean) ** 2).sum())
        if measure:
            ones = torch.ones_like(weights)
            alignment_reward.before_update(batch, ones)
            derivatives = {"val_alignment": alignment_reward.after_update(batch, ones).cpu().numpy()}
            ids = torch.randint(len(trusted), (env.batch_size,), generator=trusted_draw)
            derivatives["counterfactual"] = (
                trusted_alignment(
                    env.student,
                    batch.images,
                    batch.labels,
                    env.trainer.images_of(TRUSTED_SPLIT, ids),
                    trusted.labels[ids.to(env.device)],
                )
                .cpu()
                .numpy()
            )
        observation, _, terminated, _, info = env.step(action.astype(np.float32))
        if measure:
            rewards = {"tsrl": info["sample_rewards"].astype(np.float64)}
            for name, derivative in derivatives.items():
                rewards[name] = info["weights"] * derivative
                exact[name].add(derivative, flipped)
            deviation = (action - mean) / sigma**2
            for name, reward in rewards.items():
                sampled[name].add((reward - reward.mean()) * deviation, flipped)
    record: dict[str, Any] = {"trusted_auc": float(info["val"]["auc"]), "oracle_distance": oracle_distance}
    if measure:
        record["sampled"] = {name: moments.__dict__ for name, moments in sampled.items()}
        record["exact"] = {name: moments.__dict__ for name, moments in exact.items()}
    return record


def oracle_episode(env: DeepfakeCurriculumEnv, seed: int) -> float:
    """The final trusted AUC of the same Student under the oracle's weights."""
    oracle = agents.make_tutor("oracle", env)
    observation, _ = env.reset(seed=seed)
    terminated, info = False, {}
    while not terminated:
        weights = oracle.predict(observation, deterministic=True)[0].reshape(-1)
        observation, _, terminated, _, info = env.step(weights.astype(np.float32))
    return float(info["val"]["auc"])


def measure_student(env: DeepfakeCurriculumEnv, tutor: Any, seed: int, sigma: float) -> dict[str, Any]:
    """Every figure of one teaching Student: the measured exploring episode, a second draw, and the oracle's."""
    first = exploring_episode(env, tutor, seed, sigma, seed + EXPLORATION_SEED_OFFSET, measure=True)
    second = exploring_episode(env, tutor, seed, sigma, seed + 2 * EXPLORATION_SEED_OFFSET, measure=False)
    return {
        "seed": seed,
        "noise_model": env.config.dataset_options.get("noise_model"),
        "label_noise": env.config.dataset_options.get("label_noise"),
        "sigma": sigma,
        **first,
        "trusted_auc_second_draw": second["trusted_auc"],
        "trusted_auc_oracle": oracle_episode(env, seed),
    }


def per_sample_rows(students: list[dict[str, Any]]) -> list[list[str]]:
    """One row per per-sample reward and figure (sampled, exact), pooled over the Students."""
    rows = []
    for kind, names in (("sampled", PER_SAMPLE_REWARDS), ("exact", sorted(EXACT_DERIVATIVE))):
        for name in names:
            pooled = Moments()
            for student in students:
                pooled = pooled.merged(Moments(**student[kind][name]))
            signal = pooled.signal()
            per_student = [Moments(**student[kind][name]).signal()["gap_over_standard_error"] for student in students]
            rows.append(
                [
                    name,
                    kind,
                    f"{signal['mean_clean']:.4g}",
                    f"{signal['mean_flipped']:.4g}",
                    f"{signal['gap']:+.4g}",
                    f"{signal['sd']:.4g}",
                    f"{signal['snr_per_sample']:+.4f}",
                    f"{signal['gap_over_standard_error']:+.1f}",
                    ", ".join(f"{value:+.1f}" for value in per_student),
                    str(signal["visits"]),
                ]
            )
    return rows


def episode_row(students: list[dict[str, Any]]) -> list[str]:
    """The per-Student trusted AUC's first-order signal-to-noise along the oracle's direction, pooled."""
    draws = np.array([[s["trusted_auc"], s["trusted_auc_second_draw"]] for s in students])
    noise_sd = float(np.sqrt(np.mean((draws[:, 0] - draws[:, 1]) ** 2) / 2))
    room = np.array([s["trusted_auc_oracle"] for s in students]) - draws.mean(axis=1)
    distance = np.sqrt([s["oracle_distance"] for s in students])
    sigma = students[0]["sigma"]
    snr = room * sigma / (noise_sd * distance)
    mean_snr = float(snr.mean())
    return [
        f"{float(room.mean()):+.4f}",
        f"{noise_sd:.4f}",
        f"{float(distance.mean()):.1f}",
        f"{mean_snr:.4f}",
        f"{(2 / mean_snr) ** 2:,.0f}" if mean_snr > 0 else "never",
    ]


def report(students: list[dict[str, Any]], command: str) -> str:
    conditions = ", ".join(f"{s['seed']} ({s['noise_model']} {s['label_noise']})" for s in students)
    lines = [
        "# Signal-to-noise of the rewards a fine-tune could learn from",
        "",
        f"`{command}`",
        "",
        f"Teaching Students (seed, noise model, rate): {conditions}; exploration sd {students[0]['sigma']:.3g}.",
        "",
        "## Per-sample rewards: the derivative's gap, clean minus flipped (positive = the right direction)",
        "",
        markdown_table(
            [
                "reward",
                "figure",
                "mean clean",
                "mean flipped",
                "gap",
                "sd",
                "SNR per sample",
                "gap / SE",
                "gap / SE per Student",
                "visits",
            ],
            per_sample_rows(students),
        ),
        "",
        "## Per-Student reward: the episode's final trusted AUC",
        "",
        markdown_table(
            ["R(oracle) - R(tutor)", "sd(R), one exploration draw", "||oracle - mu||", "SNR per episode", "episodes for 2 SE"],
            [episode_row(students)],
        ),
        "",
        markdown_table(
            ["seed", "R, draw 1", "R, draw 2", "R, oracle"],
            [
                [str(s["seed"]), *(f"{s[key]:.4f}" for key in ("trusted_auc", "trusted_auc_second_draw", "trusted_auc_oracle"))]
                for s in students
            ],
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.studies.reward_snr", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="teach_v1_pretrained", help="the teaching config whose Students are measured")
    parser.add_argument("--tutor", default="noise_mentor_v1_pretrained", help="the taught tutor a fine-tune would start from")
    parser.add_argument(
        "--students",
        type=int,
        nargs="+",
        default=[16, 17, 32, 33],
        help="teaching Student indices (default: 16 17 32 33, seeds 1016-1017 and 1032-1033 under "
        "teach_v1_pretrained: label noise 0.30, video and class-conditional, never taught on)",
    )
    parser.add_argument("--sigma", type=float, default=None, help="exploration sd (default: the tutor's own)")
    parser.add_argument("--out", default="experiments/results/protocol_v1/reward_snr")
    args = parser.parse_args(argv)
    config = load_teach_config(args.config)
    config.check_protocol(max(args.students) + 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for index in args.students:
        env_config = config.student_env(index)
        path = out / f"student_{env_config.seed}.json"
        if path.exists():
            continue
        env = agents.make_env_for(args.tutor, env_config)
        tutor = agents.make_tutor(args.tutor, env)
        sigma = args.sigma if args.sigma is not None else float(tutor.policy.log_std.exp().item())
        record = measure_student(env, tutor, env_config.seed, sigma)
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"Student {env_config.seed}: trusted AUC {record['trusted_auc']:.4f}", flush=True)
    students = [json.loads(path.read_text()) for path in sorted(out.glob("student_*.json"))]
    command = "python -m experiments.studies.reward_snr " + " ".join(sys.argv[1:] if argv is None else argv)
    text = report(students, command.strip())
    (out / "reward_snr.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
