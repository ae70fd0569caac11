"""Env throughput: training samples per second through ``env.step``, for the batch env and the per-sample views.

    python -m experiments.performance.throughput [--device cuda] [--repeats 5] [--backbone xception41 --image-size 128] ...

Rows, for each ``--rewards`` entry: the batch env (``DeepfakeCurriculumEnv.step``, one weight per sample of the
batch), the per-sample Gymnasium view (``tsrl_env.PerSampleGymnasiumVectorEnv``, one sub-env per batch slot) and the per-sample
SB3 view (``agents.PerSampleSB3VecEnv``, what SB3 tutors step), all with fixed random weights (no tutor); plus plain
supervised training of the same Student on the same data as the ceiling. Samples per second = ``steps_per_epoch *
batch_size`` over the median epoch time.

Method: see :mod:`experiments.performance.common` (whole epochs timed with ``time.perf_counter``, one untimed warm-up epoch
per row, rows interleaved round by round, medians). The env's epoch-end evaluations are no-ops.
"""

from __future__ import annotations

import argparse
from statistics import median

from experiments.performance.common import (
    FixedWeightEpochs,
    PlainSupervised,
    add_common_arguments,
    describe,
    interleaved_times,
    make_env,
    paired_ratio,
    setup,
)
from experiments.report import format_table
from tsrl_env.rewards import REWARDS

VIEWS = {
    "batch": "DeepfakeCurriculumEnv",
    "vector": "tsrl_env.PerSampleGymnasiumVectorEnv",
    "sb3": "agents.PerSampleSB3VecEnv",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.performance.throughput", description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument(
        "--rewards", nargs="+", choices=list(REWARDS), default=["tsrl", "next_visit"], help="default: tsrl next_visit"
    )
    parser.add_argument("--views", nargs="+", choices=list(VIEWS), default=list(VIEWS), help="default: all")
    args = parser.parse_args(argv)
    device = setup(args)
    epochs = args.repeats + 2

    data_env = None
    runners = {}
    for reward in args.rewards:
        for view in args.views:
            env = make_env(args, reward, epochs)
            data_env = data_env or env
            runners[f"{view} / {reward}"] = FixedWeightEpochs(env, view, args.seed).epoch
    data_env = data_env or make_env(args, "tsrl", epochs)
    runners = {"plain supervised": PlainSupervised(data_env, args.seed).epoch, **runners}

    times = interleaved_times(runners, args.repeats, device)
    samples = data_env.steps_per_epoch * data_env.batch_size
    rows = []
    for name, seconds in times.items():
        view = name.split(" / ")[0]
        rows.append(
            [
                name,
                VIEWS.get(view, "-"),
                f"{samples / median(seconds):.0f}",
                f"{1000 * median(seconds) / data_env.steps_per_epoch:.1f}",
                f"{1 / paired_ratio(seconds, times['plain supervised']):.2f}",
            ]
        )
    print(describe(args, data_env))
    print(format_table(["view / reward", "stepped through", "samples/s (median)", "ms per step", "share of plain"], rows))


if __name__ == "__main__":
    main()
