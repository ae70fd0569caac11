"""Plain image folders: ``root/{real,fake}/**`` or ``root/<split>/{real,fake}/**``, PNG or JPEG files.

Under ``fake/``, the first sub-folder names the manipulation type (``fake/Deepfakes/...``), unless
``fake_type_folders`` is False; images directly under ``fake/`` are of the type ``fake``. Below the class (and type)
folder, the images of one folder form one video (``real/video_7/000.png``); an image directly under the class or
type folder is a video of its own. Without split folders, whole videos are carved into ``train``, ``val`` and
``test``; with them, ``train`` is required, ``val`` is carved from ``train`` when absent, and every ``test`` or
``test_*`` folder is a test split.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsrl_env.data.base import Dataset
from tsrl_env.data.frames import SplitFrames, build_frame_dataset, carve_videos
from tsrl_env.validation import image_size_setting, on_bad_frames_setting, reject_unknown_keys

DATASET_NAME = "folder"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
CLASS_FOLDERS = {"real": 0, "fake": 1}


@dataclass(frozen=True)
class FolderConfig:
    """Where the image folder is and how to read it.

    Attributes:
        root: the folder holding ``real/`` and ``fake/``, or split folders (``train/``, ``val/``, ``test*/``) that do.
        image_size: side the images are resized to when decoded (the env's ``image_size``, when set, wins).
        val_fraction: share of the videos carved as ``val`` when there is no ``val`` folder.
        test_fraction: share of the videos carved as ``test`` when there are no split folders.
        fake_type_folders: whether the first sub-folder of ``fake/`` names the manipulation type.
        on_bad_frames: ``"error"`` stops before training when an image is unreadable; ``"skip"`` drops and counts it.
        seed: seed of the carving.
    """

    root: str = ""
    image_size: int = 256
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    fake_type_folders: bool = True
    on_bad_frames: str = "error"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.root:
            raise ValueError("the folder source needs root, the folder holding real/ and fake/ (or split folders)")
        image_size_setting(self.image_size)
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"val_fraction + test_fraction must stay below 1, got {self.val_fraction + self.test_fraction}")
        on_bad_frames_setting(self.on_bad_frames)


def _scan(split_folder: Path, root: Path, fake_type_folders: bool) -> SplitFrames:
    """The images under ``split_folder/real`` and ``split_folder/fake``, grouped into videos."""
    frames = SplitFrames()
    for class_name, label in CLASS_FOLDERS.items():
        class_folder = split_folder / class_name
        if not class_folder.is_dir():
            continue
        images = sorted(path for path in class_folder.rglob("*") if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file())
        for path in images:
            parts = path.relative_to(class_folder).parts
            family = None
            if label == 1:
                typed = fake_type_folders and len(parts) > 1
                family = parts[0] if typed else "fake"
                parts = parts[1:] if typed else parts
            video = path.parent if len(parts) > 1 else path
            frames.add_video(video.relative_to(root).as_posix(), label, family, [str(path)])
    return frames


def _class_folders_of(folder: Path) -> bool:
    return any((folder / name).is_dir() for name in CLASS_FOLDERS)


def load_folder(config: FolderConfig | None = None, **options: Any) -> Dataset:
    """The images under ``root`` as a dataset (see the module's docstring for the layouts it reads)."""
    reject_unknown_keys(options, [f.name for f in dataclasses.fields(FolderConfig)], "folder option")
    config = dataclasses.replace(config, **options) if config is not None else FolderConfig(**options)
    root = Path(config.root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder root {str(root)!r} does not exist")
    splits: dict[str, SplitFrames] = {}
    if _class_folders_of(root):
        everything = _scan(root, root, config.fake_type_folders)
        rest, splits["test"] = carve_videos(everything, config.test_fraction, config.seed)
        splits["train"], splits["val"] = carve_videos(rest, config.val_fraction / (1.0 - config.test_fraction), config.seed)
    else:
        children = sorted(path.name for path in root.iterdir() if path.is_dir())
        split_names = [name for name in children if name in ("train", "val") or name.startswith("test")]
        if "train" not in split_names or not any(name.startswith("test") for name in split_names):
            raise ValueError(
                f"{str(root)!r} must hold real/ and fake/ folders, or split folders train/ and test/ (or test_*/, "
                f"plus val/ optionally) that do; it holds the folders: {', '.join(children) or 'none'}"
            )
        for name in split_names:
            if not _class_folders_of(root / name):
                raise ValueError(f"split folder {str(root / name)!r} holds neither real/ nor fake/")
            splits[name] = _scan(root / name, root, config.fake_type_folders)
        if "val" not in splits:
            splits["train"], splits["val"] = carve_videos(splits["train"], config.val_fraction, config.seed)
    for name, frames in splits.items():
        if not len(frames):
            raise ValueError(f"split {name!r} of {str(root)!r} has no {'/'.join(IMAGE_EXTENSIONS)} image")
    return build_frame_dataset(DATASET_NAME, splits, config.image_size, config.on_bad_frames)
