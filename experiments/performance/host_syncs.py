"""Host syncs on CUDA: how many times the host waits for the GPU in one Student update and in one whole env step.

    python -m experiments.performance.host_syncs --device cuda [--backbone legacy_xception --image-size 256] [--precision bf16]

Method: builds the environment the other benchmarks build, resets it, takes one step to warm every kernel up, then
runs one whole ``env.step``, then ``StudentTrainer.update`` on a batch forwarded beforehand, each under
``torch.cuda.set_sync_debug_mode("warn")``, which warns at every operation that makes the host wait for the device.
The update should make none (its loss is checked on the host one update later); a step makes the few its tutor
needs (the next batch's state rows and the weights, rewards and loss of ``info`` come back to the host). Needs CUDA.
"""

from __future__ import annotations

import argparse
import warnings
from collections import Counter

import numpy as np
import torch

from experiments.performance.common import add_common_arguments, env_settings, setup
from experiments.report import format_table
from tsrl_env import DeepfakeCurriculumEnv
from tsrl_env.config import PRECISIONS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.performance.host_syncs", description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, train_size=512, repeats=1)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="the env setting precision (default: auto)")
    return parser


def _syncs(action) -> Counter:
    """The synchronizing operations ``action`` runs, by the first line of their warning."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            action()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return Counter(str(warning.message).splitlines()[0] for warning in caught if "synchroniz" in str(warning.message))


def main(argv: list[str] | None = None) -> dict[str, int]:
    args = build_parser().parse_args(argv)
    device = setup(args)
    if device.type != "cuda":
        raise SystemExit("host syncs are counted on CUDA only: give --device cuda on a machine with a GPU")
    env = DeepfakeCurriculumEnv(**{**env_settings(args, epochs=2), "precision": args.precision})
    env.reset(seed=args.seed)
    ones = np.ones(env.action_space.shape, np.float32)
    env.step(ones)
    step = _syncs(lambda: env.step(ones))
    batch = env.trainer.forward_next_batch()
    weights = torch.ones(env.batch_size, device=env.device)
    update = _syncs(lambda: env.trainer.update(batch, weights, "tutored"))
    env.trainer.check_loss()
    rows = [["StudentTrainer.update", str(sum(update.values())), "; ".join(update) or "-"]]
    rows.append(["env.step (update, reward, next forward, info)", str(sum(step.values())), f"{len(step)} kinds"])
    print(f"{args.backbone}, {args.image_size} px, batch {args.batch_size}, precision {env.trainer.precision or 'fp32'}")
    print(format_table(["what", "host syncs", "which"], rows))
    return {"update": sum(update.values()), "step": sum(step.values())}


if __name__ == "__main__":
    main()
