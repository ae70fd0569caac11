"""Signal-to-noise of the rewards a reinforcement-learning fine-tune of a taught tutor could learn from.

    python -m experiments.studies.reward_snr [--config teach_v1_pretrained] [--tutor noise_mentor_v1_pretrained]
        [--students 16 17 32 33] [--sigma SD] [--out DIR]

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
- ``val_alignment``: ``clip(a) * cos(g_i, G)``, the head gradient against a trusted validation batch's;
- ``counterfactual``: ``clip(a) * d_i`` with ``d_i = grad l_i . grad L_trusted`` over the whole Student, the
  first-order drop of a trusted batch's loss from the sample's weight (Learning to Reweight's quantity).

Two figures per per-sample reward: *sampled*, the per-visit policy-gradient estimate of the derivative that PPO sees,
``(r - mean of the batch's r) * (a - mu) / sigma^2`` (the batch mean as baseline; a critic can lower this noise, not
the exact figure's), and *exact*, the derivative itself where the reward is linear in the clipped weight: ``cos`` or
``d_i`` where ``0 < a < 1``, 0 where the env clipped ``a`` (the derivative of the expected reward that the sampled
figure estimates). For each: the gap and the pooled standard deviation per visit and their ratio (the signal-to-noise
a transition carries); the gap over its standard error within each Student, with a sample's visits (one an epoch)
averaged first, so that samples are the independent units; and, pooled, the mean of the Students' gaps over its
standard error across Students (k Students, k - 1 degrees of freedom).

The per-Student candidate, the final trusted (validation) AUC ``R`` of the episode, pays one number for the episode's
thousands of actions. Each Student is trained twice more: under a second exploration draw, and under the oracle's
weights with the first draw's exploration (so both ends of the comparison explore alike). To first order the policy
gradient's component along the oracle's direction ``v = oracle - mu`` is ``R(oracle) - R(mu)``, and one episode
estimates it with standard deviation ``sd(R) * ||v|| / sigma`` (``sd(R)`` from the two exploration draws of each
Student, pooled; ``||v||`` over the episode's actions): the per-episode signal-to-noise is their ratio, and ``(2 /
SNR)^2`` episodes give one gradient step's direction at two standard errors. First order, and optimistic: a move as
large as the oracle's is not small, and ``sd(R)`` leaves out the spread between Students that a baseline would have
to remove. An estimate of scale, not a measurement of the gradient.

Each Student's figures are written to ``--out/student_SEED.json`` as they finish (a Student on file is not run again;
one on file from another tutor, config or sd is refused); ``reward_snr.md`` reports the Students asked for.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import agents
from agents.meta_reweight import TRUSTED_SPLIT
from experiments.analysis.statistics import GroupMoments, holm, t_test
from experiments.report import markdown_table
from experiments.teaching.config import load_teach_config
from tsrl_env import DeepfakeCurriculumEnv
from tsrl_env.files import write_atomically
from tsrl_env.influence import trusted_alignment
from tsrl_env.rewards import ValAlignmentReward

PER_SAMPLE_REWARDS = ("tsrl", "val_alignment", "counterfactual")
EXACT_DERIVATIVE = ("counterfactual", "val_alignment")
FIGURES = (("sampled", PER_SAMPLE_REWARDS), ("exact", EXACT_DERIVATIVE))
EXPLORATION_SEED_OFFSET = 7_919
"""The exploration draws' seeds are the Student's seed plus this (and plus it twice for the second draw)."""

Policy = Callable[[np.ndarray], np.ndarray]
"""The mean weights an episode explores around, from the observation."""


class SampleMeans:
    """Each training sample's mean of a per-visit value over its visits, for statistics with samples as units."""

    def __init__(self, size: int) -> None:
        self.sums = np.zeros(size)
        self.visits = np.zeros(size)

    def add(self, ids: np.ndarray, values: np.ndarray) -> None:
        np.add.at(self.sums, ids, values)
        np.add.at(self.visits, ids, 1.0)

    def moments(self, flipped: np.ndarray) -> GroupMoments:
        visited = self.visits > 0
        moments = GroupMoments()
        moments.add(self.sums[visited] / self.visits[visited], flipped[visited])
        return moments


def exploring_episode(
    env: DeepfakeCurriculumEnv, policy: Policy, seed: int, sigma: float, exploration_seed: int, measure: bool
) -> dict[str, Any]:
    """One episode exploring around ``policy``'s weights; with ``measure``, the per-sample rewards' statistics."""
    if measure and (env.config.reward != "tsrl" or not env.compute_rewards):
        raise ValueError(
            f"the study measures the env's tsrl reward; this env pays {env.config.reward!r}"
            + ("" if env.compute_rewards else " and computes no reward")
            + ": build it with reward='tsrl'"
        )
    flipped_of = env.splits["train"].flipped.cpu().numpy()
    if measure and (flipped_of.all() or not flipped_of.any()):
        raise ValueError("the study compares flipped with clean labels; this Student's training split needs both")
    noise_seed, reward_seed, trusted_seed = np.random.SeedSequence(exploration_seed).spawn(3)
    noise = np.random.default_rng(noise_seed)
    observation, _ = env.reset(seed=seed)
    if measure:
        alignment_reward = ValAlignmentReward(env.config, env.trainer)
        alignment_reward.reset(np.random.default_rng(reward_seed))
        trusted_draw = torch.Generator().manual_seed(int(trusted_seed.generate_state(1)[0]))
        trusted = env.splits[TRUSTED_SPLIT]
    per_visit = {kind: {name: GroupMoments() for name in names} for kind, names in FIGURES}
    per_sample = {kind: {name: SampleMeans(len(flipped_of)) for name in names} for kind, names in FIGURES}
    oracle_distance = 0.0
    terminated, info = False, {}
    while not terminated:
        batch = env.pending_batch
        ids = batch.ids.cpu().numpy()
        flipped = flipped_of[ids]
        mean = policy(observation).reshape(-1).astype(np.float64)
        action = mean + sigma * noise.standard_normal(len(mean))
        oracle_distance += float((((~flipped).astype(np.float64) - mean) ** 2).sum())
        if measure:
            ones = torch.ones(len(mean), device=env.device)
            alignment_reward.before_update(batch, ones)
            derivatives = {"val_alignment": alignment_reward.after_update(batch, ones).cpu().numpy()}
            trusted_ids = torch.randint(len(trusted), (env.batch_size,), generator=trusted_draw)
            derivatives["counterfactual"] = (
                trusted_alignment(
                    env.student,
                    batch.images,
                    batch.labels,
                    env.trainer.images_of(TRUSTED_SPLIT, trusted_ids),
                    trusted.labels[trusted_ids.to(env.device)],
                )
                .cpu()
                .numpy()
            )
        observation, _, terminated, _, info = env.step(action.astype(np.float32))
        if not measure:
            continue
        inside = (action > 0.0) & (action < 1.0)
        rewards = {"tsrl": info["sample_rewards"].astype(np.float64)}
        values: dict[str, dict[str, np.ndarray]] = {"sampled": {}, "exact": {}}
        for name, derivative in derivatives.items():
            rewards[name] = info["weights"] * derivative
            values["exact"][name] = derivative * inside
        deviation = (action - mean) / sigma**2
        for name, reward in rewards.items():
            values["sampled"][name] = (reward - reward.mean()) * deviation
        for kind, by_name in values.items():
            for name, value in by_name.items():
                per_visit[kind][name].add(value, flipped)
                per_sample[kind][name].add(ids, value)
    record: dict[str, Any] = {"trusted_auc": float(info["val"]["auc"]), "oracle_distance": oracle_distance}
    if measure:
        record["per_visit"] = {kind: {name: m.__dict__ for name, m in by_name.items()} for kind, by_name in per_visit.items()}
        record["per_sample"] = {
            kind: {name: means.moments(flipped_of).__dict__ for name, means in by_name.items()}
            for kind, by_name in per_sample.items()
        }
    return record


def measure_student(env: DeepfakeCurriculumEnv, tutor: Any, seed: int, sigma: float) -> dict[str, Any]:
    """Every figure of one teaching Student: the measured exploring episode, a second draw, and the oracle's weights
    under the first draw's exploration."""
    oracle = agents.make_tutor("oracle", env)

    def mean_of(agent: Any) -> Policy:
        return lambda observation: agent.predict(observation, deterministic=True)[0]

    first_draw, second_draw = seed + EXPLORATION_SEED_OFFSET, seed + 2 * EXPLORATION_SEED_OFFSET
    first = exploring_episode(env, mean_of(tutor), seed, sigma, first_draw, measure=True)
    second = exploring_episode(env, mean_of(tutor), seed, sigma, second_draw, measure=False)
    oracle_run = exploring_episode(env, mean_of(oracle), seed, sigma, first_draw, measure=False)
    return {
        "seed": seed,
        "noise_model": env.config.dataset_options.get("noise_model"),
        "label_noise": env.config.dataset_options.get("label_noise"),
        "sigma": sigma,
        **first,
        "trusted_auc_second_draw": second["trusted_auc"],
        "trusted_auc_oracle": oracle_run["trusted_auc"],
    }


def per_sample_rows(students: list[dict[str, Any]]) -> list[list[str]]:
    """One row per per-sample reward and figure (sampled, exact): per visit pooled, per Student, and across Students
    (a t-test of the Students' gaps, Holm over the rows)."""
    rows: list[list[str]] = []
    p_values: list[float] = []
    nan = float("nan")
    for kind, names in FIGURES:
        for name in names:
            pooled = GroupMoments()
            for student in students:
                pooled = pooled.merged(GroupMoments(**student["per_visit"][kind][name]))
            visit = pooled.signal()
            within = [GroupMoments(**student["per_sample"][kind][name]).signal() for student in students]
            gaps = np.array([signal["gap"] for signal in within])
            spread = gaps.std(ddof=1) / np.sqrt(len(gaps)) if len(gaps) > 1 else 0.0
            across, p = (gaps.mean() / spread, t_test(gaps.mean(), spread, len(gaps) - 1)[1]) if spread > 0 else (nan, nan)
            p_values.append(p)
            rows.append(
                [
                    name,
                    kind,
                    f"{visit['gap']:+.4g}",
                    f"{visit['sd']:.4g}",
                    f"{visit['snr']:+.4f}",
                    ", ".join(f"{signal['gap_over_standard_error']:+.1f}" for signal in within),
                    f"{gaps.mean():+.4g}",
                    f"{across:+.1f}",
                    f"{p:.3f}",
                ]
            )
    for row, adjusted in zip(rows, holm(p_values), strict=True):
        row.append(f"{adjusted:.3f}")
    return rows


def episode_row(students: list[dict[str, Any]]) -> list[str]:
    """The per-Student trusted AUC's first-order signal-to-noise along the oracle's direction, over the Students."""
    draws = np.array([[s["trusted_auc"], s["trusted_auc_second_draw"]] for s in students])
    noise_sd = float(np.sqrt(np.mean((draws[:, 0] - draws[:, 1]) ** 2) / 2))
    room = np.array([s["trusted_auc_oracle"] for s in students]) - draws.mean(axis=1)
    distance = np.sqrt([s["oracle_distance"] for s in students])
    sigma = np.array([s["sigma"] for s in students])
    mean_snr = float((room * sigma / (noise_sd * distance)).mean())
    return [
        f"{float(room.mean()):+.4f}",
        f"{noise_sd:.4f}",
        f"{float(distance.mean()):.1f}",
        f"{mean_snr:.4f}",
        f"{(2 / mean_snr) ** 2:,.0f}" if mean_snr > 0 else "never",
    ]


def report(students: list[dict[str, Any]], command: str) -> str:
    conditions = ", ".join(f"{s['seed']} ({s['noise_model']} {s['label_noise']}, sd {s['sigma']:.3g})" for s in students)
    lines = [
        "# Signal-to-noise of the rewards a fine-tune could learn from",
        "",
        f"`{command}`",
        "",
        f"Teaching Students (seed, noise model and rate, exploration sd): {conditions}.",
        "",
        "## Per-sample rewards: the derivative's gap, clean minus flipped (positive = the right direction)",
        "",
        "Per visit: the gap, its pooled sd and their ratio over every visit. Per Student: the gap over its standard error,",
        "a sample's visits averaged first. Across Students: the mean of the Students' gaps (sample means) over its",
        "standard error across Students, its t-test's p and Holm's over the rows.",
        "",
        markdown_table(
            [
                "reward",
                "figure",
                "gap per visit",
                "sd per visit",
                "SNR per visit",
                "gap / SE per Student",
                "mean gap",
                "mean gap / SE across Students",
                "p (t, Students - 1 df)",
                "Holm p (rows)",
            ],
            per_sample_rows(students),
        ),
        "",
        "## Per-Student reward: the episode's final trusted AUC",
        "",
        markdown_table(
            [
                "R(oracle) - R(tutor), both exploring",
                "sd(R) between draws",
                "distance to the oracle's weights",
                "SNR per episode",
                "episodes for 2 SE",
            ],
            [episode_row(students)],
        ),
        "",
        markdown_table(
            ["seed", "R, draw 1", "R, draw 2", "R, oracle (draw 1's exploration)"],
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
    saved = agents.tutor_spec(args.tutor).files
    if not saved:
        raise SystemExit(f"--tutor must name a saved (taught) tutor, the start of a fine-tune; {args.tutor!r} is not one")
    sigma = args.sigma if args.sigma is not None else float(agents.load_tutor(args.tutor, saved[0]).policy.log_std.exp().item())
    made_by = {"config": args.config, "tutor": args.tutor, "sigma": sigma}
    students = []
    for index in args.students:
        env_config = config.student_env(index)
        path = out / f"student_{env_config.seed}.json"
        if path.exists():
            record = json.loads(path.read_text())
            differing = {key: record.get(key) for key, value in made_by.items() if record.get(key) != value}
            if differing:
                raise SystemExit(f"{path} was measured with {differing}, not {made_by}: delete it or give another --out")
        else:
            env = agents.make_env_for(args.tutor, env_config)
            record = {**made_by, **measure_student(env, agents.make_tutor(args.tutor, env), env_config.seed, sigma)}
            write_atomically(path, json.dumps(record, indent=2) + "\n")
            print(f"Student {env_config.seed}: trusted AUC {record['trusted_auc']:.4f}", flush=True)
        students.append(record)
    command = "python -m experiments.studies.reward_snr " + " ".join(sys.argv[1:] if argv is None else argv)
    text = report(students, command.strip())
    write_atomically(out / "reward_snr.md", text)
    print(text)


if __name__ == "__main__":
    main()
