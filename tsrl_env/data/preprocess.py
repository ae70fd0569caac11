"""Videos to face crops in DeepfakeBench's layout, so that the ``deepfakebench`` source reads them.

Input: ``VIDEOS_DIR/{real,fake}/**`` video files, or ``VIDEOS_DIR/{train,val,test}/{real,fake}/**``; as in the
``folder`` source, the first sub-folder of ``fake/`` names the manipulation type. For each video, ``frames_per_video``
frames spread evenly over it are read; in each the largest face found by OpenCV's bundled Haar cascade (its weights
ship inside the ``opencv-python-headless`` package, nothing is downloaded) is cropped with a margin, made square and
resized. A frame with no face is skipped and counted, never cropped at random.

Output: ``OUT_DIR/rgb/<name>/<label>/<video>/<frame number>.png``, ``OUT_DIR/dataset_json/<name>.json`` shaped as
DeepfakeBench's files (no compression level), and ``OUT_DIR/dataset_options.yaml``, the ``deepfakebench`` options
that read it back (labels ``<name>_real`` and ``<name>_fake`` or ``<name>_<type>``, not in DeepfakeBench's standard
label dict, are given there as ``label_dict``).
"""

from __future__ import annotations

import functools
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from tsrl_env.data.frames import SplitFrames, carve_videos

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
SPLITS = ("train", "val", "test")
CASCADE_FILE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class _Video:
    path: str
    label_name: str
    label: int
    name: str  # the video's name in the JSON file
    split: str
    folder: str  # where its crops go, relative to the rgb folder


@dataclass
class _VideoResult:
    video: _Video
    readable: bool
    frames_read: int = 0
    frames: list[str] = field(default_factory=list)  # written crops, relative to the rgb folder


@dataclass
class PreprocessReport:
    """What preprocessing found: videos read, frames sampled, faces found, and where the output went."""

    videos: int = 0
    unreadable_videos: list[str] = field(default_factory=list)
    frames_read: int = 0
    faces_found: int = 0
    videos_without_face: list[str] = field(default_factory=list)
    json_path: Path | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)

    @property
    def frames_without_face(self) -> int:
        """Sampled frames in which no face was found, skipped."""
        return self.frames_read - self.faces_found

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"videos: {self.videos} ({len(self.unreadable_videos)} unreadable)",
            f"frames read: {self.frames_read}; faces found: {self.faces_found}; "
            f"frames without a face, skipped: {self.frames_without_face}",
            f"videos without any face (left out of the dataset): {len(self.videos_without_face)}",
        ]
        lines += [f"  unreadable: {path}" for path in self.unreadable_videos[:5]]
        lines += [f"  no face: {path}" for path in self.videos_without_face[:5]]
        lines.append(f"wrote {self.json_path}")
        return "\n".join(lines)


def _list_videos(videos_dir: Path, name: str, fake_type_folders: bool) -> dict[str, list[tuple[Path, str, int]]]:
    """``(path, label name, label)`` of the videos under each split folder ('' when there are none)."""
    split_folders = [split for split in SPLITS if (videos_dir / split).is_dir()]
    if any((videos_dir / cls).is_dir() for cls in ("real", "fake")):
        roots = {"": videos_dir}
    elif "train" in split_folders and "test" in split_folders:
        roots = {split: videos_dir / split for split in split_folders}
    else:
        found = sorted(path.name for path in videos_dir.iterdir() if path.is_dir()) if videos_dir.is_dir() else []
        raise ValueError(
            f"{str(videos_dir)!r} must hold real/ and fake/ folders of videos, or train/ and test/ (and optionally val/) "
            f"folders that do; it holds the folders: {', '.join(found) or 'none'}"
        )
    listed: dict[str, list[tuple[Path, str, int]]] = {}
    for split, root in roots.items():
        listed[split] = []
        for class_name, label in (("real", 0), ("fake", 1)):
            class_folder = root / class_name
            if not class_folder.is_dir():
                continue
            for path in sorted(p for p in class_folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()):
                parts = path.relative_to(class_folder).parts
                kind = parts[0] if label == 1 and fake_type_folders and len(parts) > 1 else class_name
                listed[split].append((path, f"{name}_{kind}", label))
    return listed


def _assign_splits(
    listed: dict[str, list[tuple[Path, str, int]]], dataset: str, val_fraction: float, test_fraction: float, seed: int
) -> list[_Video]:
    """Every video with its split: from its split folder, or carved (whole videos, per class) when there is none."""
    videos: list[_Video] = []
    names: dict[tuple[str, str], Path] = {}
    for split, items in listed.items():
        one_per_video = SplitFrames()
        for path, label_name, label in items:
            previous = names.setdefault((label_name, path.stem), path)
            if previous != path:
                raise ValueError(f"two videos of label {label_name!r} are named {path.stem!r}: {previous} and {path}; rename one")
            one_per_video.add_video(str(path), label, None, [str(path)])
        by_split: dict[str, SplitFrames] = {}
        if split == "":
            rest, by_split["test"] = carve_videos(one_per_video, test_fraction, seed)
            by_split["train"], by_split["val"] = carve_videos(rest, val_fraction / (1.0 - test_fraction), seed)
        elif split == "train" and "val" not in listed:
            by_split["train"], by_split["val"] = carve_videos(one_per_video, val_fraction, seed)
        else:
            by_split[split] = one_per_video
        split_of = {video: name for name, frames in by_split.items() for video in frames.videos}
        videos += [
            _Video(str(path), label_name, label, path.stem, split_of[str(path)], f"{dataset}/{label_name}/{path.stem}")
            for path, label_name, label in items
        ]
    return videos


@functools.cache
def _face_detector() -> cv2.CascadeClassifier:
    detector = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / CASCADE_FILE))
    if detector.empty():
        raise RuntimeError(f"OpenCV's face cascade {CASCADE_FILE} did not load from {cv2.data.haarcascades}")
    return detector


def largest_face(frame: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x, y, width, height)`` of the largest face the Haar cascade finds in a BGR frame, or None."""
    gray = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    smallest = max(24, min(gray.shape) // 12)
    faces = _face_detector().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(smallest, smallest))
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda face: int(face[2]) * int(face[3]))
    return int(x), int(y), int(w), int(h)


def crop_face(frame: np.ndarray, face: tuple[int, int, int, int], margin: float, size: int) -> np.ndarray:
    """A square crop around ``face``, its side enlarged by ``margin`` (0.3 = 30%), kept inside the frame, resized."""
    x, y, w, h = face
    height, width = frame.shape[:2]
    side = min(int(round(max(w, h) * (1.0 + margin))), height, width)
    # Centre the square on the face, then shift it back inside the frame rather than padding with made-up pixels.
    left = min(max(0, x + w // 2 - side // 2), width - side)
    top = min(max(0, y + h // 2 - side // 2), height - side)
    crop = frame[top : top + side, left : left + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interpolation)


def _frame_indices(capture: cv2.VideoCapture, path: str, count: int) -> list[int]:
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    if total <= 0:
        # Some containers do not record their length: count by decoding headers once.
        counter = cv2.VideoCapture(path)
        while counter.grab():
            total += 1
        counter.release()
    if total <= count:
        return list(range(total))
    return sorted({int(i) for i in (np.arange(count) * total) // count})


def _process_video(video: _Video, rgb_dir: str, frames_per_video: int, image_size: int, margin: float) -> _VideoResult:
    capture = cv2.VideoCapture(video.path)
    if not capture.isOpened():
        return _VideoResult(video, readable=False)
    wanted = _frame_indices(capture, video.path, frames_per_video)
    result = _VideoResult(video, readable=bool(wanted))
    relative_folder = Path(video.folder)
    digits = max(3, len(str(max(wanted, default=0))))
    index, remaining = 0, set(wanted)
    # Sequential grabs rather than seeks: seeking is inexact in many codecs, decoding forward never is.
    while remaining and capture.grab():
        if index in remaining:
            remaining.discard(index)
            ok, frame = capture.retrieve()
            if ok:
                result.frames_read += 1
                face = largest_face(frame)
                if face is not None:
                    relative = relative_folder / f"{index:0{digits}d}.png"
                    target = Path(rgb_dir) / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if not cv2.imwrite(str(target), crop_face(frame, face, margin, image_size)):
                        raise OSError(f"could not write {target}")
                    result.frames.append(relative.as_posix())
        index += 1
    capture.release()
    result.readable = result.readable and result.frames_read > 0
    return result


def preprocess_videos(
    videos_dir: str | Path,
    out_dir: str | Path,
    name: str = "videos",
    frames_per_video: int = 32,
    image_size: int = 256,
    margin: float = 0.3,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    fake_type_folders: bool = True,
    seed: int = 0,
    workers: int = 1,
) -> PreprocessReport:
    """Sample, detect, crop and write every video under ``videos_dir`` (see the module's docstring); return the counts.

    ``name`` names the dataset (its JSON file, its top-level key and its label prefix). Without split folders, whole
    videos are carved into train, val and test by ``val_fraction`` and ``test_fraction``; with ``train/`` and
    ``test/`` but no ``val/``, val is carved from train. ``workers`` processes handle videos in parallel.
    """
    if frames_per_video < 1 or image_size < 8 or margin < 0 or workers < 1:
        raise ValueError(
            "frames_per_video and workers must be at least 1, image_size at least 8 and margin non-negative; got "
            f"{frames_per_video}, {workers}, {image_size}, {margin}"
        )
    videos_dir, out_dir = Path(videos_dir), Path(out_dir)
    videos = _assign_splits(_list_videos(videos_dir, name, fake_type_folders), name, val_fraction, test_fraction, seed)
    if not videos:
        raise ValueError(f"no video file ({', '.join(VIDEO_EXTENSIONS)}) under {str(videos_dir)!r}")
    rgb_dir = out_dir / "rgb"
    arguments = (str(rgb_dir), frames_per_video, image_size, margin)
    if workers == 1:
        results = [_process_video(video, *arguments) for video in videos]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_process_video, videos, *([argument] * len(videos) for argument in arguments)))

    report = PreprocessReport(videos=len(videos))
    labels = {video.label_name: video.label for video in sorted(videos, key=lambda video: video.label_name)}
    content: dict[str, dict[str, dict[str, Any]]] = {label: {split: {} for split in SPLITS} for label in labels}
    for result in results:
        video = result.video
        report.frames_read += result.frames_read
        report.faces_found += len(result.frames)
        if not result.readable:
            report.unreadable_videos.append(video.path)
        elif not result.frames:
            report.videos_without_face.append(video.path)
        else:
            content[video.label_name][video.split][video.name] = {"label": video.label_name, "frames": result.frames}
    logger.info("preprocessed %d videos: %d frames read, %d faces found", report.videos, report.frames_read, report.faces_found)

    json_folder = out_dir / "dataset_json"
    json_folder.mkdir(parents=True, exist_ok=True)
    report.json_path = json_folder / f"{name}.json"
    report.json_path.write_text(json.dumps({name: content}, indent=1))
    report.dataset_options = {
        "dataset_json_folder": str(json_folder),
        "rgb_dir": str(rgb_dir),
        "train_dataset": [name],
        "test_dataset": [name],
        "frame_num": frames_per_video,
        "label_dict": labels,
        "image_size": image_size,
    }
    (out_dir / "dataset_options.yaml").write_text(
        yaml.safe_dump({"dataset": "deepfakebench", "dataset_options": report.dataset_options}, sort_keys=False)
    )
    return report
