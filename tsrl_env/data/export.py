"""A dataset written to disk in DeepfakeBench's layout, so that the ``deepfakebench`` source reads it back.

What for: the embedded benchmark's images read through the same path as a user's FaceForensics++ or Celeb-DF frames
(JSON, files on disk, per-video labels, ``label_noise`` drawn by the loader), to check that path and to measure tutors
on it with a known truth.

Layout: ``OUT_DIR/rgb/<dataset>/<label>/<video>/<frame number>.png`` and ``OUT_DIR/dataset_json/<dataset>.json``,
shaped as DeepfakeBench's files with no compression level. The ``train`` and ``val`` splits and the first test split
go to the dataset ``seen`` (its ``train``, ``val`` and ``test`` videos), every other test split ``test_<name>`` to a
dataset ``<name>`` holding only ``test`` videos, so that reading ``train_dataset: [seen]`` and ``test_dataset: [seen,
<name>...]`` gives back splits of the same names (``test_seen``, ``test_unseen`` for the embedded benchmark). Each
video's label is ``<dataset>_real`` or ``<dataset>_<family>``, mapped to 0 or 1 by the ``label_dict`` written to
``OUT_DIR/dataset_options.yaml`` with every other option that reads the data back. The true labels are written: a
source's flipped labels stay its own. The JSON files and the options are written last, each atomically; running an
interrupted export again writes every frame anew.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from tsrl_env.data.base import REAL_FAMILY, Dataset, Split
from tsrl_env.files import write_atomically

SEEN = "seen"
"""The dataset that holds the training, validation and first test split."""
DATASET_SPLITS = ("train", "val")


def export_deepfakebench(dataset: Dataset, out_dir: str | Path) -> dict[str, Any]:
    """Write ``dataset``'s images in DeepfakeBench's layout under ``out_dir`` (see the module's docstring); returns the
    ``deepfakebench`` dataset options that read them back, also written to ``out_dir/dataset_options.yaml``."""
    unplaced = [split for split in dataset.splits if split not in DATASET_SPLITS and not split.startswith("test")]
    if unplaced:
        raise ValueError(
            f"DeepfakeBench's layout has train, val and test videos only, and dataset {dataset.name!r} also has the "
            f"split(s) {unplaced}: build it without them (for the embedded benchmark, val_unseen_size: 0)"
        )
    out_dir = Path(out_dir)
    rgb_dir, json_dir = out_dir / "rgb", out_dir / "dataset_json"
    first_test, *other_tests = dataset.test_splits
    placement = {**{split: (SEEN, split) for split in DATASET_SPLITS}, first_test: (SEEN, "test")}
    placement |= {split: (split.removeprefix("test_"), "test") for split in other_tests}
    contents: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    label_dict: dict[str, int] = {}
    frames_per_video = 0
    for split, (name, json_split) in placement.items():
        content = contents.setdefault(name, {})
        for video, indices in _videos(dataset.splits[split]):
            family = int(dataset.splits[split].families[indices[0]])
            label = f"{name}_real" if family == REAL_FAMILY else f"{name}_{dataset.family_names[family]}"
            label_dict[label] = int(dataset.splits[split].clean_labels[indices[0]])
            video_name = f"{split}_{video:05d}"
            paths = [f"{name}/{label}/{video_name}/{frame:03d}.png" for frame in range(len(indices))]
            for path, index in zip(paths, indices, strict=True):
                _save_png(rgb_dir / path, dataset.splits[split].images[int(index)])
            videos = content.setdefault(label, {"train": {}, "val": {}, "test": {}})[json_split]
            videos[video_name] = {"label": label, "frames": paths}
            frames_per_video = max(frames_per_video, len(indices))
    json_dir.mkdir(parents=True, exist_ok=True)
    for name, content in contents.items():
        write_atomically(json_dir / f"{name}.json", json.dumps({name: content}, indent=1))
    options = {
        "dataset_json_folder": str(json_dir),
        "rgb_dir": str(rgb_dir),
        "train_dataset": [SEEN],
        "test_dataset": list(contents),
        "frame_num": frames_per_video,
        "label_dict": dict(sorted(label_dict.items())),
        "image_size": dataset.splits["train"].image_size,
    }
    write_atomically(
        out_dir / "dataset_options.yaml",
        yaml.safe_dump({"dataset": "deepfakebench", "dataset_options": options}, sort_keys=False),
    )
    return options


def _videos(split: Split) -> list[tuple[int, np.ndarray]]:
    """(group, sample indices in order) of each video of ``split``, in order of first appearance."""
    groups = split.groups.numpy()
    return [(int(group), np.flatnonzero(groups == group)) for group in dict.fromkeys(groups.tolist())]


def _save_png(path: Path, image: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
