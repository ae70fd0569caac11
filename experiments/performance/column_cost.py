"""Cost of seeing wrong labels: a Student epoch with each noise-detecting state column, and with each meta-gradient
tutor weighting it, as a ratio to the same epoch with the default state and fixed weights.

    python -m experiments.performance.column_cost [--repeats 5] [--backbone regnetx_002 --train-size 3000 --val-size 600] ...

Variants, all on the same data, batch size and Student, stepping ``env.step`` with the ``tsrl`` reward:

- ``default``: the default state columns, fixed random weights (the baseline of the ratios);
- ``+area_under_margin``, ``+knn_disagreement``, ``+trusted_probe``: the default state plus that column;
- ``+all three``: the default state plus the three (what a taught tutor observes, less the features);
- ``l2rw``, ``meta_weight_net``: the default state, weights from that tutor (its trusted forwards, backward passes and
  Jacobian-vector products included).

The trusted probe is fitted on the validation split (``--val-size`` images) at every epoch's first batch, so its cost
grows with that split. Method: see :mod:`experiments.performance.common` (whole epochs, one untimed warm-up epoch per variant,
variants interleaved round by round, medians; the ratio is the median of per-round ratios to ``default``).
"""

from __future__ import annotations

import argparse

import numpy as np

from agents import make_tutor
from experiments.performance.common import (
    FixedWeightEpochs,
    UnevaluatedEnv,
    add_common_arguments,
    describe,
    env_settings,
    interleaved_times,
    setup,
    timing_table,
)
from tsrl_env.state import DEFAULT_STATE_COLUMNS

NOISE_COLUMNS = ("area_under_margin", "knn_disagreement", "trusted_probe")


class ActingEpochs:
    """Epochs of ``env.step`` with the weights of a tutor that only acts (it may learn within the episode, as
    Meta-Weight-Net does, but has no SB3 update)."""

    def __init__(self, env: UnevaluatedEnv, tutor: str, seed: int = 0) -> None:
        self.env = env
        self.agent = make_tutor(tutor, env, seed=seed)
        self.states, _ = env.reset(seed=seed)

    def epoch(self) -> None:
        for _ in range(self.env.steps_per_epoch):
            weights, _ = self.agent.predict(self.states, deterministic=True)
            self.states, *_ = self.env.step(np.asarray(weights, np.float32).ravel())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.performance.column_cost", description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, train_size=3000, repeats=3)
    parser.add_argument("--val-size", type=int, default=600, help="validation (trusted) images (default: 600)")
    args = parser.parse_args(argv)
    device = setup(args)
    epochs = args.repeats + 2  # the untimed epoch, the timed ones, and one to spare so no run reaches the episode's end

    def env(columns: tuple[str, ...]) -> UnevaluatedEnv:
        settings = env_settings(args, "tsrl", epochs)
        settings["dataset_options"]["val_size"] = args.val_size
        return UnevaluatedEnv(**settings, state_columns=columns)

    default = env(DEFAULT_STATE_COLUMNS)
    runners = {"default": FixedWeightEpochs(default, "batch", args.seed).epoch}
    for column in NOISE_COLUMNS:
        runners[f"+{column}"] = FixedWeightEpochs(env((*DEFAULT_STATE_COLUMNS, column)), "batch", args.seed).epoch
    runners["+all three"] = FixedWeightEpochs(env((*DEFAULT_STATE_COLUMNS, *NOISE_COLUMNS)), "batch", args.seed).epoch
    for tutor in ("l2rw", "meta_weight_net"):
        runners[tutor] = ActingEpochs(env(DEFAULT_STATE_COLUMNS), tutor, args.seed).epoch

    times = interleaved_times(runners, args.repeats, device)
    print(describe(args, default))
    print(timing_table(times, "default", default.steps_per_epoch))


if __name__ == "__main__":
    main()
