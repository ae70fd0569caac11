"""Datasets preprocessed by DeepfakeBench (FaceForensics++, Celeb-DF, DFDC, ...), read as they are on disk.

DeepfakeBench describes a dataset by ``<dataset_json_folder>/<name>.json``, shaped
``{name: {label_name: {split: [compression:] {video_name: {"label": label_name, "frames": [paths...]}}}}}``: splits are
``train``/``val``/``test``; FaceForensics++ and its sub-datasets, DeepFakeDetection and FaceShifter put the
compression level (``c23``, ``c40``, ``raw``) between the split and the videos. Label names map to 0/1 through a
label dict. Frame paths are relative to ``rgb_dir`` or absolute; frame files are named by their number.

The ``train`` split unites the training datasets' ``train`` videos, ``val`` their ``val`` videos (or, with
``val_fraction``, videos carved from ``train``), and each test dataset gives a ``test_<name>`` split from its
``test`` videos. Every frame is checked before training (see ``tsrl_env.data.frames``); images stay on disk.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tsrl_env.data.base import Dataset
from tsrl_env.data.frames import SplitFrames, build_frame_dataset, carve_videos
from tsrl_env.data.label_noise import noise_model, with_label_noise
from tsrl_env.validation import image_size_setting, integer_setting, on_bad_frames_setting, real_setting, reject_unknown_keys

logger = logging.getLogger(__name__)

DATASET_NAME = "deepfakebench"
COMPRESSION_LEVELS = ("c23", "c40", "raw")

# DeepfakeBench's standard label dict: the ``label_dict`` of training/config/train_config.yaml in SCLBD/DeepfakeBench
# (github.com/SCLBD/DeepfakeBench), copied name for name. FF-FH is FaceShifter, DF_* DeeperForensics-1.0, DFD_*
# DeepFakeDetection.
DEEPFAKEBENCH_LABEL_DICT: dict[str, int] = {
    "DFD_fake": 1,
    "DFD_real": 0,
    "FF-SH": 1,
    "FF-F2F": 1,
    "FF-DF": 1,
    "FF-FS": 1,
    "FF-NT": 1,
    "FF-FH": 1,
    "FF-real": 0,
    "CelebDFv1_real": 0,
    "CelebDFv1_fake": 1,
    "CelebDFv2_real": 0,
    "CelebDFv2_fake": 1,
    "DFDCP_Real": 0,
    "DFDCP_FakeA": 1,
    "DFDCP_FakeB": 1,
    "DFDC_Fake": 1,
    "DFDC_Real": 0,
    "DF_fake": 1,
    "DF_real": 0,
    "UADFV_Fake": 1,
    "UADFV_Real": 0,
    "roop_Real": 0,
    "roop_Fake": 1,
}

# Names listed in an error message before it says how many more there are.
_LISTED_NAMES = 12


def _listing(names: list[str] | Any) -> str:
    names = [str(name) for name in names]
    if not names:
        return "nothing"
    more = f", ... ({len(names) - _LISTED_NAMES} more)" if len(names) > _LISTED_NAMES else ""
    return ", ".join(repr(name) for name in names[:_LISTED_NAMES]) + more


@dataclass(frozen=True)
class DeepfakeBenchConfig:
    """Where DeepfakeBench data lies and which of it to use. The names of DeepfakeBench's own settings are kept.

    Attributes:
        dataset_json_folder: folder of the ``<name>.json`` dataset files.
        rgb_dir: root that relative frame paths start from. A relative path starting with ``./`` or ``../`` is taken
            from the current directory instead, as DeepfakeBench does; ``\\`` separators are read as ``/``.
        train_dataset: datasets whose ``train`` (and ``val``) videos are trained on, combined.
        test_dataset: datasets whose ``test`` videos are evaluated, each as its own split ``test_<name>``.
        compression: level picked in datasets that have one (``c23``, ``c40``, ``raw``). A dataset named with a
            level suffix, as DeepfakeBench's ``FF-DF_c40``, reads ``FF-DF_c40.json`` at that level.
        frame_num: frames per video, ``{"train": n, "test": m}`` (``train`` for the training split, ``test`` for val
            and test), or one number for both; a longer video gives n frames spread evenly over it.
        label_dict: label names mapped to 0 (real) or 1 (fake), added to (or overriding) DeepfakeBench's standard
            ones in ``DEEPFAKEBENCH_LABEL_DICT``.
        image_size: side the frames are resized to when decoded (the env's ``image_size``, when set, wins).
        val_fraction: None uses the JSON files' ``val`` videos; a fraction carves that share of the training videos
            (whole videos, per class) as ``val`` instead, for datasets whose ``val`` is empty (Celeb-DF's is).
        on_bad_frames: ``"error"`` stops before training when a frame is missing or unreadable; ``"skip"`` drops
            such frames and counts them.
        seed: seed of the ``val_fraction`` carving.
        label_noise: rate at which training labels are flipped on top of the files' (0: none), as ``noise_model``
            spends it (``video``, the default: every frame of a flipped video, as a labelling error in the JSON would
            be; ``class_conditional``, ``frame``: see ``label_noise.py``), with the draws of ``noise_seed``. The true
            labels are kept, so the flipped ones are known (the ``oracle`` tutor, noise-detection AUROC).
        noise_model: the label-noise model ``label_noise`` follows.
        noise_seed: seed of the flips' draws, apart from the images: the same files, reading options and
            ``noise_seed`` give the same flips (``label_noise.with_label_noise``).
    """

    dataset_json_folder: str = "./preprocessing/dataset_json"
    rgb_dir: str = "./datasets/rgb"
    train_dataset: tuple[str, ...] = ("FaceForensics++",)
    test_dataset: tuple[str, ...] = ("FaceForensics++",)
    compression: str = "c23"
    frame_num: dict[str, int] = field(default_factory=lambda: {"train": 32, "test": 32})
    label_dict: dict[str, int] = field(default_factory=dict)
    image_size: int = 256
    val_fraction: float | None = None
    on_bad_frames: str = "error"
    seed: int = 0
    label_noise: float = 0.0
    noise_model: str = "video"
    noise_seed: int = 0

    def __post_init__(self) -> None:
        # Accept lists and single names (YAML, command line) but store tuples so the config stays hashable.
        for name in ("train_dataset", "test_dataset"):
            value = getattr(self, name)
            value = (value,) if isinstance(value, str) else tuple(value)
            if not value:
                raise ValueError(f"{name} must name at least one dataset")
            object.__setattr__(self, name, value)
        if self.compression not in COMPRESSION_LEVELS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSION_LEVELS)}, got {self.compression!r}")
        frame_num = self.frame_num
        if isinstance(frame_num, int):
            frame_num = {"train": frame_num, "test": frame_num}
        if not isinstance(frame_num, dict) or set(frame_num) != {"train", "test"}:
            raise ValueError(f"frame_num must be a number or a mapping with keys 'train' and 'test', got {frame_num!r}")
        for key, value in frame_num.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"frame_num[{key!r}] must be a positive integer, got {value!r}")
        object.__setattr__(self, "frame_num", dict(frame_num))
        wrong = {name: value for name, value in self.label_dict.items() if value not in (0, 1)}
        if wrong:
            raise ValueError(f"label_dict values must be 0 (real) or 1 (fake), got {wrong}")
        image_size_setting(self.image_size)
        if self.val_fraction is not None and not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1) or be None, got {self.val_fraction}")
        on_bad_frames_setting(self.on_bad_frames)
        if not 0.0 <= real_setting("label_noise", self.label_noise) < 1.0:
            raise ValueError(f"label_noise must lie in [0, 1), got {self.label_noise}")
        noise_model(self.noise_model)
        object.__setattr__(self, "noise_seed", integer_setting("noise_seed", self.noise_seed, 0))

    @property
    def labels(self) -> dict[str, int]:
        """The label dict in force: DeepfakeBench's standard names with ``label_dict`` on top."""
        return {**DEEPFAKEBENCH_LABEL_DICT, **self.label_dict}


def _frame_sort_key(path: str) -> tuple[int, int | str]:
    stem = Path(path).stem
    return (0, int(stem)) if stem.isdigit() else (1, stem)


def sample_frames(frames: list[str], count: int) -> list[str]:
    """``count`` frames spread evenly over a video's frames, taken in frame-number order (all when there are fewer)."""
    ordered = sorted(frames, key=_frame_sort_key)
    if len(ordered) <= count:
        return ordered
    return [ordered[i] for i in (np.arange(count) * len(ordered)) // count]


def _resolve(path: str, rgb_dir: Path) -> str:
    path = path.replace("\\", "/")
    if os.path.isabs(path) or path.startswith(("./", "../")):
        return path
    return str(rgb_dir / path)


class _DatasetFile:
    """One DeepfakeBench dataset file, read once, with errors that name the file and the key path."""

    def __init__(self, folder: Path, dataset: str, compression: str) -> None:
        if not folder.is_dir():
            raise FileNotFoundError(
                f"dataset_json_folder {str(folder)!r} does not exist; it must hold DeepfakeBench's <dataset>.json files"
            )
        self.path = folder / f"{dataset}.json"
        if not self.path.is_file():
            found = sorted(path.stem for path in folder.glob("*.json"))
            raise FileNotFoundError(
                f"no dataset file {str(self.path)!r} for dataset {dataset!r}; {str(folder)!r} holds the datasets: "
                f"{_listing(found)}"
            )
        try:
            content = json.loads(self.path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{self.path} is not a valid JSON file: {error}") from None
        if not isinstance(content, dict):
            raise ValueError(f"{self.path} must hold a JSON object {{dataset name: labels}}, got {type(content).__name__}")
        self.name, self.compression = dataset, compression
        base, _, suffix = dataset.rpartition("_")
        if dataset not in content and suffix in COMPRESSION_LEVELS and base in content:
            # DeepfakeBench's FF-DF_c40.json holds the key FF-DF, read at level c40.
            self.name, self.compression = base, suffix
        if self.name not in content:
            raise ValueError(f"{self.path} has no dataset {dataset!r} at its top level; it has: {_listing(content)}")
        self.labels: dict[str, Any] = content[self.name]

    def videos(self, split: str) -> list[tuple[str, str, list[str], str]]:
        """``(label group, video name, frame paths, key path)`` of every video of ``split``, in file order."""
        result = []
        for group, by_split in self.labels.items():
            where = f"{self.name} -> {group}"
            if not isinstance(by_split, dict) or split not in by_split:
                found = list(by_split) if isinstance(by_split, dict) else []
                raise ValueError(f"{self.path}: {where} has no split {split!r}; it has: {_listing(found)}")
            videos = by_split[split]
            where = f"{where} -> {split}"
            if _has_compression_level(videos):
                if self.compression not in videos:
                    raise ValueError(
                        f"{self.path}: {where} has no compression level {self.compression!r}; it has: {_listing(videos)}"
                    )
                videos = videos[self.compression]
                where = f"{where} -> {self.compression}"
            for video, info in videos.items():
                if not isinstance(info, dict) or "label" not in info or "frames" not in info:
                    found = list(info) if isinstance(info, dict) else type(info).__name__
                    raise ValueError(
                        f"{self.path}: video {where} -> {video} must be an object with 'label' and 'frames'; it has: "
                        f"{_listing(found) if isinstance(found, list) else found}"
                    )
                result.append((str(info["label"]), str(video), list(info["frames"]), f"{where} -> {video}"))
        return result


def _has_compression_level(videos: Any) -> bool:
    """Whether a split's mapping is keyed by compression level rather than by video name."""
    return (
        isinstance(videos, dict)
        and bool(videos)
        and all(key in COMPRESSION_LEVELS and isinstance(value, dict) and "frames" not in value for key, value in videos.items())
    )


def _collect(files: list[_DatasetFile], split: str, config: DeepfakeBenchConfig, frame_count: int, rgb_dir: Path) -> SplitFrames:
    """The frames of ``split`` over ``files``; a video listed by several files (FF-real in FF-DF and FF-F2F) once."""
    frames = SplitFrames()
    labels = config.labels
    seen: set[str] = set()
    for dataset_file in files:
        for label_name, video, paths, where in dataset_file.videos(split):
            if label_name not in labels:
                raise ValueError(
                    f"{dataset_file.path}: video {where} has the label {label_name!r}, which is not in the label dict; "
                    f"known labels: {_listing(labels)}; add it with label_dict={{{label_name!r}: 0 or 1}}"
                )
            # DeepfakeBench's unique video name: the same video name can be real in one label and fake in another.
            key = f"{label_name}_{video}"
            if key in seen or not paths:
                continue
            seen.add(key)
            label = labels[label_name]
            chosen = [_resolve(path, rgb_dir) for path in sample_frames([str(path) for path in paths], frame_count)]
            frames.add_video(key, label, label_name if label == 1 else None, chosen)
    return frames


def load_deepfakebench(config: DeepfakeBenchConfig | None = None, **options: Any) -> Dataset:
    """DeepfakeBench data described by ``config`` with ``options`` applied (see :class:`DeepfakeBenchConfig`).

    Splits: ``train``, ``val`` and ``test_<name>`` for each test dataset; a frame's group is its video. Missing
    files, keys and labels raise errors naming the file, the key path and what was found instead; missing or
    unreadable frames are handled as ``on_bad_frames`` says.
    """
    reject_unknown_keys(options, [f.name for f in dataclasses.fields(DeepfakeBenchConfig)], "deepfakebench option")
    config = dataclasses.replace(config or DeepfakeBenchConfig(), **options)
    folder = Path(config.dataset_json_folder)
    rgb_dir = Path(config.rgb_dir)
    names = dict.fromkeys([*config.train_dataset, *config.test_dataset])
    files = {name: _DatasetFile(folder, name, config.compression) for name in names}
    train_files = [files[name] for name in config.train_dataset]
    train_count, test_count = config.frame_num["train"], config.frame_num["test"]

    splits: dict[str, SplitFrames] = {"train": _collect(train_files, "train", config, train_count, rgb_dir)}
    if config.val_fraction is None:
        splits["val"] = _collect(train_files, "val", config, test_count, rgb_dir)
        if not len(splits["val"]):
            raise ValueError(
                f"the 'val' split of {_listing(config.train_dataset)} holds no video (Celeb-DF's JSON leaves it empty); "
                "set val_fraction (e.g. 0.1) to carve a validation split from the training videos"
            )
    else:
        splits["train"], splits["val"] = carve_videos(splits["train"], config.val_fraction, config.seed)
    for name in config.test_dataset:
        splits[f"test_{name}"] = _collect([files[name]], "test", config, test_count, rgb_dir)
        if not len(splits[f"test_{name}"]):
            raise ValueError(f"{files[name].path}: the 'test' split of dataset {name!r} holds no video")
    _warn_about_leaks(splits)
    dataset = build_frame_dataset(DATASET_NAME, splits, config.image_size, config.on_bad_frames)
    if config.label_noise == 0.0:
        # Flipped none, and knows it, as the embedded source at rate 0: a grid over noise rates runs the oracle at each.
        return dataclasses.replace(dataset, knows_label_noise=True)
    return with_label_noise(dataset, config.label_noise, config.noise_model, config.noise_seed)


def _warn_about_leaks(splits: dict[str, SplitFrames]) -> None:
    """Log the videos that are both trained on and evaluated (Celeb-DF's JSON lists its test videos under train)."""
    trained = set(splits["train"].videos)
    for split, frames in splits.items():
        if split == "train":
            continue
        shared = trained.intersection(frames.videos)
        if shared:
            logger.warning(
                "%d video(s) of split %r are also in the training split, e.g. %s: its metrics are not held-out",
                len(shared),
                split,
                sorted(shared)[0],
            )
