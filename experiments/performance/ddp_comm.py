"""DDP communication: the bytes each rank hands to collectives per env step, by kind, on a real process group.

    python -m experiments.performance.ddp_comm [--processes 2] [--device cuda] [--backbone xception41 --image-size 128] ...

Method: starts ``--processes`` processes on this machine (``torch.multiprocessing``, spawn), each joining the process
group as it would under torchrun (``DistributedGroupView.from_torchrun``: gloo on the CPU, NCCL with ``--device cuda``,
one GPU per process) and building the environment the other benchmarks build (the embedded benchmark at
``--image-size``, no warm-up), for ``--repeats`` tutored epochs. Every rank steps it with the same seeded random
weights (the env applies rank 0's), and reads its view's byte counters (``DistributedGroupView.sent_bytes``: its own
collectives, and DDP's gradient buckets through a communication hook) around the reset and around every step; then
every rank evaluates the validation split once more, counted alone. Reported, for rank 0: the bytes per kind of an
ordinary step (one that ends no epoch; all of them send the same, which is checked), next to what the shapes predict,
the bytes of building a Student (the reset) and of one evaluation. They are the payloads handed to the collectives
(see ``DistributedGroupView``), not the bytes on the wire, and do not depend on timing.
"""

from __future__ import annotations

import argparse
import math
import os
from collections import Counter
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp

from experiments.performance.common import add_common_arguments, env_settings, free_port
from experiments.report import format_table
from tsrl_env import DeepfakeCurriculumEnv
from tsrl_env.distributed import COMMUNICATION_KINDS, DistributedGroupView
from tsrl_env.rewards import REWARDS, ValAlignmentReward
from tsrl_env.student import NUM_CLASSES, resolve_device

STEP_KINDS = ("gradients", "states", "weights", "loss", "rewards")
"""The kinds of collectives an ordinary step runs, in the table's order."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.performance.ddp_comm", description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, train_size=512, repeats=1)
    parser.add_argument("--processes", type=int, default=2, help="ranks of the process group (default: 2)")
    parser.add_argument("--reward", choices=list(REWARDS), default="tsrl", help="default: tsrl")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure and print the table; returns rank 0's measurements (see :func:`measure`)."""
    args = build_parser().parse_args(argv)
    if args.processes < 2:
        raise SystemExit("--processes must be at least 2: one process sends nothing")
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    ranks = mp.start_processes(_worker, (args, free_port(), results), nprocs=args.processes, start_method="spawn", join=False)
    measured = results.get()  # read before joining: a rank blocks in put() until its result is read
    ranks.join()
    print(describe(args, measured))
    print(format_table(["kind", "bytes per step", "expected", "what"], _step_rows(measured)))
    print()
    print(
        format_table(
            ["once per", "bytes", "by kind"],
            [
                ["Student built (reset)", f"{sum(measured['reset'].values()):,}", _by_kind(measured["reset"])],
                [
                    f"evaluation of val ({measured['val_size']} frames)",
                    f"{sum(measured['evaluation'].values()):,}",
                    _by_kind(measured["evaluation"]),
                ],
            ],
        )
    )
    return measured


def _worker(rank: int, args: argparse.Namespace, port: int, results: Any) -> None:
    """One rank: joins the group as under torchrun, measures, and rank 0 hands its measurements back."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(args.processes)
    )
    # The machine's cores shared among the ranks, unless --threads says otherwise.
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // args.processes))
    view = DistributedGroupView.from_torchrun(resolve_device(args.device))
    try:
        env = DeepfakeCurriculumEnv(**env_settings(args, args.reward, epochs=args.repeats), group=view)
        measured = measure(env, view, args.seed)
        if rank == 0:
            results.put(measured)
    finally:
        view.close()


def measure(env: DeepfakeCurriculumEnv, view: DistributedGroupView, seed: int) -> dict[str, Any]:
    """Bytes by kind of the reset, of an ordinary step and of one evaluation of ``val``, with the shapes they follow.

    Every rank must call it at the same time (it steps the env through the group's collectives).
    """
    reset = _counted(view, lambda: env.reset(seed=seed))
    rng = np.random.default_rng(seed)
    ordinary: list[dict[str, int]] = []
    terminated = False
    while not terminated:
        before = Counter(view.sent_bytes)
        _, _, terminated, _, info = env.step(rng.random(env.batch_size, dtype=np.float32))
        if "val" not in info:  # an epoch end also evaluates, and the last step has no next forward
            ordinary.append(dict(view.sent_bytes - before))
    if any(step != ordinary[0] for step in ordinary):
        raise RuntimeError(f"ordinary steps sent different bytes: {ordinary}")
    evaluation = _counted(view, lambda: env.evaluate("val"))
    val_alignment = isinstance(env.reward, ValAlignmentReward)
    return {
        "reset": reset,
        "step": ordinary[0],
        "evaluation": evaluation,
        "ordinary_steps": len(ordinary),
        "processes": view.world_size,
        "batch_size": env.batch_size,
        "state_dim": env.observation_space.shape[1],
        "parameters": sum(p.numel() for p in env.student.parameters()),
        "buffer_bytes": sum(b.numel() * b.element_size() for b in env.student.buffers()),
        "features": env.student.num_features,
        "val_size": len(env.splits["val"]),
        "reward": env.config.reward,
        "reward_pays_late": env.reward.pays_late,
        "trusted_batch_size": env.config.trusted_batch_size if val_alignment else 0,
    }


def expected_step_bytes(measured: dict[str, Any]) -> dict[str, int]:
    """What each kind of an ordinary step sends, from the shapes: float32 values, bool correctness, rank 0's shard."""
    processes, batch = measured["processes"], measured["batch_size"]
    shard = batch // processes
    # A reward that pays late (next_visit) keeps a replicated ledger that pays the whole batch on every rank: no rewards
    # are gathered.
    rewards = 0 if measured["reward_pays_late"] else 4 * shard
    # val_alignment also gathers its trusted batch's cross-entropy errors and head inputs, a padded shard of rows.
    rewards += math.ceil(measured["trusted_batch_size"] / processes) * 4 * (NUM_CLASSES + measured["features"])
    return {
        "gradients": 4 * measured["parameters"],
        "states": shard * (4 + 1 + 4) + shard * 4 * measured["state_dim"],  # loss, correct, p(true); the state rows
        "weights": 4 * (batch + 1),
        "loss": 4,
        "rewards": rewards,
    }


def describe(args: argparse.Namespace, measured: dict[str, Any]) -> str:
    """One line saying what was measured and where."""
    return (
        f"Student {args.backbone} at {args.image_size}x{args.image_size} ({measured['parameters']:,} parameters), batch "
        f"{measured['batch_size']} ({measured['batch_size'] // measured['processes']} per rank), state width "
        f"{measured['state_dim']}, reward {measured['reward']}; {measured['processes']} processes "
        f"({'NCCL' if resolve_device(args.device).type == 'cuda' else 'gloo'}, device {args.device}), torch "
        f"{torch.__version__}; bytes rank 0 handed to collectives, {measured['ordinary_steps']} ordinary steps measured"
    )


def _step_rows(measured: dict[str, Any]) -> list[list[str]]:
    expected = expected_step_bytes(measured)
    rows = [[kind, f"{measured['step'].get(kind, 0):,}", f"{expected[kind]:,}", COMMUNICATION_KINDS[kind]] for kind in STEP_KINDS]
    rows.append(["total", f"{sum(measured['step'].values()):,}", f"{sum(expected.values()):,}", ""])
    return rows


def _by_kind(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count:,}" for kind, count in counts.items())


def _counted(view: DistributedGroupView, action: Any) -> dict[str, int]:
    before = Counter(view.sent_bytes)
    action()
    return dict(view.sent_bytes - before)


if __name__ == "__main__":
    main()
