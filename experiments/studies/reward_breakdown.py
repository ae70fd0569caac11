"""What a reward pays, by training label and by whether that label is flipped, epoch by epoch.

    python -m experiments.studies.reward_breakdown --reward val_alignment [--config reward_signal] [--seed 0] [--epochs 3]

A uniform-weight Student (every weight 1, so no tutor takes part) of the config's first variant is trained under
``--reward``; every per-sample reward is grouped by tutored epoch, training label (real / fake) and label noise (clean
/ flipped). The table says whether a reward separates wrong labels from right ones, or follows something else, such as
the class of the label.
"""

from __future__ import annotations

import argparse

import numpy as np

from experiments.grid.spec import load_benchmark_config
from experiments.report import format_table
from tsrl_env import DeepfakeCurriculumEnv
from tsrl_env.rewards import REWARD_NAMES
from tsrl_env.student import FAKE_CLASS


def reward_breakdown(env: DeepfakeCurriculumEnv, seed: int) -> list[list[str]]:
    """Rows ``[epoch, label, noise, samples, mean reward, share > 0]`` of one uniform-weight episode of ``env``."""
    train = env.dataset.splits["train"]
    flipped, labels = train.flipped.numpy(), train.labels.numpy()
    env.reset(seed=seed)
    rewards, ids, epochs = [], [], []
    terminated = False
    while not terminated:
        _, _, terminated, _, info = env.step(np.ones(env.batch_size, np.float32))
        rewards.append(info["sample_rewards"])
        ids.append(info["sample_ids"])
        epochs.append(np.full(env.batch_size, info["epoch"]))
    rewards, ids, epochs = np.concatenate(rewards), np.concatenate(ids), np.concatenate(epochs)
    rows = []
    for epoch in np.unique(epochs):
        for label, label_name in ((1 - FAKE_CLASS, "real"), (FAKE_CLASS, "fake")):
            for is_flipped, noise_name in ((False, "clean"), (True, "flipped")):
                group = (epochs == epoch) & (labels[ids] == label) & (flipped[ids] == is_flipped)
                values = rewards[group]
                mean = f"{values.mean():+.3f}" if values.size else "-"
                share = f"{(values > 0).mean():.2f}" if values.size else "-"
                rows.append([str(epoch), label_name, noise_name, str(values.size), mean, share])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.studies.reward_breakdown", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reward", required=True, choices=REWARD_NAMES, help="the reward to break down")
    parser.add_argument("--config", default="reward_signal", help="benchmark config whose env and first variant are used")
    parser.add_argument("--seed", type=int, default=0, help="the Student's seed (default: 0)")
    parser.add_argument("--epochs", type=int, help="tutored epochs (default: the config's)")
    args = parser.parse_args(argv)
    config = load_benchmark_config(args.config)
    variant = next(iter(config.variants))
    env_config = config.run_config(variant, f"uniform@{args.reward}", args.seed).env
    if args.epochs is not None:
        env_config = env_config.replace(epochs=args.epochs)
    env = DeepfakeCurriculumEnv(env_config)
    print(f"{args.reward} reward of a uniform-weight Student, {args.config} / {variant}, seed {args.seed}")
    print(format_table(["epoch", "label", "noise", "samples", "mean reward", "share > 0"], reward_breakdown(env, args.seed)))


if __name__ == "__main__":
    main()
