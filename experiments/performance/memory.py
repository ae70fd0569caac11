"""Memory: peak memory of a tutored run at two training-set sizes, and how much of it grows per training sample.

    python -m experiments.performance.memory [--train-sizes 4000 40000] [--tutors ppo uniform] [--reward tsrl] ...

Method: each dataset is first generated and cached by a process of its own. Then each (tutor, size) pair runs in its own
Python process (``--child``), so one run's peak cannot hide another's. The child builds the environment (which loads
the embedded benchmark from the cache: its images stay in memory and are reported separately), collects garbage,
records its resident set size (RSS) as the baseline, resets the kernel's peak-RSS mark (``/proc/self/clear_refs``,
Linux; elsewhere only the per-step samples below count), then runs a whole tutored episode: ``reset`` (a fresh
Student), ``--epochs`` tutored epochs with the tutor acting and, for a learning tutor, learning (PPO: one rollout and
one update per epoch). Reported per run:

- ``peak RSS``: the kernel's peak RSS of the run (``VmHWM`` after the reset), or the largest RSS sampled after every
  env step where the mark cannot be reset; ``growth`` = peak RSS - baseline;
- ``tracemalloc peak``: the peak of Python and NumPy allocations during the run (the tutor's rollout buffer is NumPy;
  PyTorch tensors are not traced), with ``--tracemalloc`` (on by default; it slows Python allocations);
- on a GPU, ``torch.cuda.max_memory_allocated`` during the run.

The per-sample difference is ``(growth at the larger size - growth at the smaller) / (size difference)``, to be set
against what is expected to grow with the training set: the per-sample history (``SampleHistory``, 17 bytes), the
``next_visit`` ledger (17 bytes), the epoch's sample order (8 bytes) and, for PPO, its rollout of one epoch:
``4 * (state width + 7)`` bytes per sample (observation, action, reward, return, episode start, value, log-probability,
advantage), and the copy of the observations SB3 makes while flattening the rollout for the update
(``4 * state width``). The state width is set by
``--state-feature-dim`` (default 32 here), not by the backbone's feature width.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from experiments.performance.common import add_common_arguments, env_settings, setup
from experiments.report import format_table
from tsrl_env import DeepfakeCurriculumEnv
from tsrl_env.data import make_dataset
from tsrl_env.rewards import REWARDS, reward_class

RESULT_PREFIX = "MEMORY-RESULT "
MB = 2**20


def _status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` memory field in KiB, or None where there is no such file (not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) to the current RSS; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _dataset_bytes(env: DeepfakeCurriculumEnv) -> int:
    return sum(
        tensor.element_size() * tensor.numel()
        for split in env.splits.values()
        for tensor in vars(split).values()
        if isinstance(tensor, torch.Tensor)
    )


def expected_bytes_per_sample(state_dim: int, tutor: str, reward: str) -> dict[str, float]:
    """What is expected to grow with the training set, in bytes per training sample (see the module docstring)."""
    expected = {"history": 17.0, "order": 8.0}
    if reward_class(reward).pays_late:  # next_visit's ledger: what each sample paid at its last visit
        expected["late-credit ledger"] = 17.0
    if tutor == "ppo":
        expected["rollout"] = 4.0 * (state_dim + 7)
        expected["flatten copy"] = 4.0 * state_dim
    return expected


def run_child(args: argparse.Namespace) -> dict:
    device = setup(args)
    env = DeepfakeCurriculumEnv(**env_settings(args, args.reward, args.epochs))
    samples = {"rss_kib": 0}

    def sample_rss() -> None:
        samples["rss_kib"] = max(samples["rss_kib"], _status_kib("VmRSS") or 0)

    gc.collect()
    baseline_kib = _status_kib("VmRSS") or 0
    kernel_peak = _reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if args.tracemalloc:
        tracemalloc.start()

    steps = args.epochs * env.steps_per_epoch
    if args.tutor == "ppo":
        from stable_baselines3.common.callbacks import BaseCallback

        from agents import TutorPPO, single_episode_view

        class _SampleRss(BaseCallback):
            def _on_step(self) -> bool:
                sample_rss()
                return True

        agent = TutorPPO(single_episode_view("ppo", env), seed=args.seed, device=device)
        agent.learn(steps * env.batch_size, callback=_SampleRss())
    else:
        from agents import make_tutor

        agent = make_tutor(args.tutor, env, seed=args.seed)
        states, _ = env.reset(seed=args.seed)
        for _ in range(steps):
            actions, _ = agent.predict(states, deterministic=True)
            states, _, terminated, _, _ = env.step(np.asarray(actions, np.float32).reshape(env.action_space.shape))
            sample_rss()
            if terminated:
                break

    result = {
        "tutor": args.tutor,
        "train_size": len(env.splits["train"]),
        "state_dim": env.observation_space.shape[1],
        "dataset_bytes": _dataset_bytes(env),
        "baseline_bytes": baseline_kib * 1024,
        "peak_bytes": ((_status_kib("VmHWM") or 0) if kernel_peak else samples["rss_kib"]) * 1024,
        "peak_source": "VmHWM" if kernel_peak else "sampled per step",
        "maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "tracemalloc_peak_bytes": tracemalloc.get_traced_memory()[1] if args.tracemalloc else None,
        "cuda_peak_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    }
    if args.tracemalloc:
        tracemalloc.stop()
    env.close()
    return result


def _this_script(argv: list[str], *extra: str) -> list[str]:
    """The command running this script again with ``argv`` and ``extra`` (argparse keeps an option's last value)."""
    return [sys.executable, "-m", "experiments.performance.memory", *argv, *extra]


def _megabytes(value: float | None) -> str:
    return "-" if value is None else f"{value / MB:.1f}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.performance.memory", description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.set_defaults(state_feature_dim=32)
    parser.add_argument("--train-sizes", nargs=2, type=int, default=[4000, 40000], help="default: 4000 40000")
    parser.add_argument("--tutors", nargs="+", default=["ppo", "uniform"], help="ppo or heuristic names (default: ppo uniform)")
    parser.add_argument("--reward", choices=list(REWARDS), default="tsrl", help="default: tsrl")
    parser.add_argument("--epochs", type=int, default=1, help="tutored epochs per run (default: 1)")
    parser.add_argument("--tracemalloc", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tutor", default="ppo", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)

    if args.prepare:
        make_dataset("embedded", **env_settings(args)["dataset_options"])
        return
    if args.child:
        print(RESULT_PREFIX + json.dumps(run_child(args)), flush=True)
        return

    # Generate (or find) each dataset in a process of its own first: generating inside a measured process would
    # leave freed memory in its RSS, which the run would then reuse unseen.
    for size in args.train_sizes:
        subprocess.run(_this_script(argv, "--prepare", "--train-size", str(size)), check=True)
    results = []
    for tutor in args.tutors:
        for size in sorted(args.train_sizes):
            child = _this_script(argv, "--child", "--tutor", tutor, "--train-size", str(size))
            completed = subprocess.run(child, capture_output=True, text=True)
            lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
            if completed.returncode != 0 or not lines:
                sys.stderr.write(completed.stdout + completed.stderr)
                raise SystemExit(f"the {tutor} run at {size} training images failed (exit status {completed.returncode})")
            results.append(json.loads(lines[-1].removeprefix(RESULT_PREFIX)))

    rows = [
        [
            r["tutor"],
            str(r["train_size"]),
            _megabytes(r["dataset_bytes"]),
            _megabytes(r["baseline_bytes"]),
            _megabytes(r["peak_bytes"]),
            _megabytes(r["peak_bytes"] - r["baseline_bytes"]),
            _megabytes(r["tracemalloc_peak_bytes"]),
            _megabytes(r["cuda_peak_bytes"]),
        ]
        for r in results
    ]
    print(
        f"Student {args.backbone} at {args.image_size}x{args.image_size}, batch {args.batch_size}, reward {args.reward}, "
        f"{args.epochs} tutored epoch(s), state width {results[0]['state_dim']}, device {args.device}; "
        f"peak RSS from {results[0]['peak_source']}; sizes in MiB"
    )
    print(
        format_table(
            [
                "tutor",
                "train images",
                "dataset in memory",
                "RSS before run",
                "peak RSS",
                "growth",
                "tracemalloc peak",
                "CUDA peak",
            ],
            rows,
        )
    )
    per_sample_rows = []
    for tutor in args.tutors:
        small, large = (r for r in results if r["tutor"] == tutor)
        extra = large["train_size"] - small["train_size"]
        growth = (large["peak_bytes"] - large["baseline_bytes"]) - (small["peak_bytes"] - small["baseline_bytes"])
        expected = expected_bytes_per_sample(small["state_dim"], tutor, args.reward)
        traced = (
            "-"
            if small["tracemalloc_peak_bytes"] is None
            else f"{(large['tracemalloc_peak_bytes'] - small['tracemalloc_peak_bytes']) / extra:.0f}"
        )
        per_sample_rows.append(
            [
                tutor,
                f"{small['train_size']} -> {large['train_size']}",
                f"{growth / extra:.0f}",
                traced,
                f"{sum(expected.values()):.0f} ({', '.join(f'{k} {v:.0f}' for k, v in expected.items())})",
            ]
        )
    print()
    print(
        format_table(
            ["tutor", "train images", "growth per extra sample (B)", "tracemalloc per extra sample (B)", "expected (B)"],
            per_sample_rows,
        )
    )


if __name__ == "__main__":
    main()
