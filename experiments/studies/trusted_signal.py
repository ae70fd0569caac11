"""Signal-to-noise of a counterfactual per-sample reward on the trusted set.

    python -m experiments.studies.trusted_signal [--config teach_noise] [--seed 1000] [--label-noise 0.30] [--out DIR]

The reward a tutor could be paid for weight ``w_i`` is the drop of the trusted loss its step brings, against the same
update without the sample: to first order ``α (∇ℓ_i · ∇L_trusted) w_i / B``, paired against a uniform update from the
same Student state by construction. Its per-unit-weight part, ``d_i = ∇ℓ_i · ∇L_trusted`` (the alignment Learning to
Reweight weighs by), is computed exactly for every sample of every batch (``tsrl_env.influence.trusted_alignment``)
while one Student trains with uniform weights on a teaching seed. Reported per tutored epoch: the mean of ``d`` on
flipped and on clean samples, its standard deviation, the signal-to-noise ratio of the flipped-vs-clean part
(difference of the means over the pooled standard deviation, per sample, and with its standard error over the epoch's
samples) and the AUROC of ``-d`` for a flipped label. Writes ``trusted_signal.md`` (and ``.json``) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from agents.meta_reweight import TRUSTED_SPLIT
from experiments.analysis.statistics import GroupMoments
from experiments.records.recorder import noise_detection_auroc
from experiments.report import markdown_table
from experiments.teaching.config import FIRST_TEACHING_SEED, load_teach_config
from tsrl_env import DeepfakeCurriculumEnv
from tsrl_env.influence import trusted_alignment


def measure(env: DeepfakeCurriculumEnv, seed: int) -> list[dict[str, float]]:
    """Per tutored epoch, the statistics of the trusted alignment of flipped and clean samples (uniform training)."""
    flipped_mask = env.splits["train"].flipped.cpu().numpy()
    trusted = env.splits[TRUSTED_SPLIT]
    generator = torch.Generator().manual_seed(seed)
    env.reset(seed=seed)
    rows, alignments, flipped = [], [], []
    ones = np.ones(env.action_space.shape, np.float32)
    terminated = False
    while not terminated:
        batch = env.pending_batch
        ids = torch.randint(len(trusted), (env.batch_size,), generator=generator)
        trusted_images = env.trainer.images_of(TRUSTED_SPLIT, ids)
        trusted_labels = trusted.labels[ids.to(env.device)]
        alignments.append(
            trusted_alignment(env.student, batch.images, batch.labels, trusted_images, trusted_labels).cpu().numpy()
        )
        flipped.append(flipped_mask[batch.ids.cpu().numpy()])
        _, _, terminated, _, info = env.step(ones)
        if "val" in info:
            rows.append(_statistics(env.epoch, np.concatenate(alignments), np.concatenate(flipped)))
            alignments, flipped = [], []
    return rows


def _statistics(epoch: int, alignment: np.ndarray, flipped: np.ndarray) -> dict[str, float]:
    moments = GroupMoments()
    moments.add(alignment, flipped)
    signal = moments.signal()
    return {
        "tutored_epoch": epoch,
        "mean_flipped": float(alignment[flipped].mean()),
        "mean_clean": float(alignment[~flipped].mean()),
        "sd": float(alignment.std(ddof=1)),
        "snr_per_sample": signal["snr"],
        "gap_over_its_standard_error": signal["gap_over_standard_error"],
        "auroc": noise_detection_auroc(-alignment, flipped),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.studies.trusted_signal", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", default="teach_noise", help="teaching config whose Student is measured (default: teach_noise)"
    )
    parser.add_argument("--seed", type=int, default=FIRST_TEACHING_SEED, help="a teaching seed (default: 1000)")
    parser.add_argument("--label-noise", type=float, default=0.30)
    parser.add_argument("--out", default="experiments/results/teaching/trusted_signal")
    args = parser.parse_args(argv)
    config = load_teach_config(args.config)
    env_config = config.env.replace(
        seed=args.seed, dataset_options={**config.env.dataset_options, "label_noise": args.label_noise}
    )
    rows = measure(DeepfakeCurriculumEnv(env_config), args.seed)
    columns = list(rows[0])
    lines = [
        f"# Trusted alignment of flipped and clean samples (uniform training, seed {args.seed}, label noise {args.label_noise})",
        "",
        "`python -m experiments.studies.trusted_signal " + " ".join(sys.argv[1:] if argv is None else argv) + "`",
        "",
        markdown_table(columns, [[f"{row[name]:.4g}" for name in columns] for row in rows]),
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "trusted_signal.md").write_text("\n".join(lines) + "\n")
    (out / "trusted_signal.json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
