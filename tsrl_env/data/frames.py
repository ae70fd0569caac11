"""What the file-based sources share: frame lists per split, the frame check, video-disjoint carving, assembly.

A source (``deepfakebench``, ``folder``) lists for each split the frame files with their label, video and
manipulation family as :class:`SplitFrames`; :func:`build_frame_dataset` checks every file, handles the bad ones
as ``on_bad_frames`` says, and assembles a :class:`~tsrl_env.data.base.Dataset` whose images stay on disk.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from tsrl_env.data.base import DECODE_ERRORS, MIN_FRAME_SIZE, REAL_FAMILY, Dataset, FrameStore, Split, decode_frame
from tsrl_env.validation import on_bad_frames_setting

logger = logging.getLogger(__name__)


# How many bad frames an error message or a log line lists.
_LISTED_BAD_FRAMES = 5


@dataclass
class SplitFrames:
    """The frames of one split, listed before any file is opened: one entry per frame, in order.

    ``videos`` names the video each frame comes from (unique within the dataset, e.g. prefixed by its label);
    ``families`` is the manipulation family of a fake frame, ``None`` for a real one.
    """

    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    families: list[str | None] = field(default_factory=list)

    def add_video(self, video: str, label: int, family: str | None, paths: list[str]) -> None:
        """Append the frames ``paths`` of one video."""
        self.paths.extend(paths)
        self.labels.extend([label] * len(paths))
        self.videos.extend([video] * len(paths))
        self.families.extend([family] * len(paths))

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, keep: np.ndarray) -> SplitFrames:
        """The frames where the boolean mask ``keep`` is True."""
        indices = np.flatnonzero(keep)
        return SplitFrames(
            [self.paths[i] for i in indices],
            [self.labels[i] for i in indices],
            [self.videos[i] for i in indices],
            [self.families[i] for i in indices],
        )


def carve_videos(frames: SplitFrames, fraction: float, seed: int) -> tuple[SplitFrames, SplitFrames]:
    """Split off about ``fraction`` of the videos (whole videos, each class on its own) as a new split.

    Returns ``(rest, carved)``. Every class with at least two videos gives at least one, so a small carved split
    still holds both classes. The choice depends only on the video names and ``seed``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the fraction of videos to carve must lie in (0, 1), got {fraction}")
    videos = np.asarray(frames.videos, dtype=object)
    labels = np.asarray(frames.labels)
    rng = np.random.default_rng(seed)
    carved: set[str] = set()
    for label in (0, 1):
        names = sorted(set(videos[labels == label]))
        if len(names) < 2:
            continue
        count = min(len(names) - 1, max(1, round(fraction * len(names))))
        carved.update(names[i] for i in rng.permutation(len(names))[:count])
    in_carved = np.array([video in carved for video in frames.videos], dtype=bool)
    return frames.select(~in_carved), frames.select(in_carved)


def _frame_problem(path: str) -> str | None:
    """Why ``path`` cannot be used as a frame, or None when it can."""
    if not os.path.isfile(path):
        return "missing"
    try:
        with Image.open(path) as image:
            # PNG's verify checks every chunk's CRC, which decoding does not; decoding finds what the CRCs cannot: a
            # compressed stream damaged before its CRC was computed, a truncated JPEG.
            if image.format == "PNG":
                image.verify()
        size = decode_frame(path).size
    except UnidentifiedImageError:
        return "unreadable (not an image file PIL recognises)"
    except DECODE_ERRORS as error:
        return f"unreadable ({type(error).__name__}: {error})"
    if min(size) < MIN_FRAME_SIZE:
        return f"too small ({size[0]}x{size[1]} px; a frame needs at least {MIN_FRAME_SIZE} px a side)"
    return None


def check_frames(paths: list[str], threads: int | None = None) -> list[str | None]:
    """The problem of each frame file (``None`` for a good one), reading files on ``threads`` threads.

    Threads suffice because PIL and file reads release the GIL; the default is twice the CPUs, at most 32.
    """
    threads = threads or min(32, 2 * (os.cpu_count() or 1))
    if threads == 1 or len(paths) < 64:
        return [_frame_problem(path) for path in paths]
    # PIL registers its format plugins lazily, in shared tables, the first time a file needs them: do it here, once,
    # rather than in several threads at the same time.
    Image.init()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(_frame_problem, paths, chunksize=64))


def _bad_frame_report(bad: dict[str, list[tuple[str, str]]], total: int) -> str:
    count = sum(len(items) for items in bad.values())
    per_split = ", ".join(f"{split}: {len(items)}" for split, items in bad.items() if items)
    listed = [f"  {path}: {problem}" for items in bad.values() for path, problem in items][:_LISTED_BAD_FRAMES]
    more = f"\n  ... and {count - len(listed)} more" if count > len(listed) else ""
    return f"{count} of {total} frames are missing or unreadable ({per_split}); the first ones:\n" + "\n".join(listed) + more


def build_frame_dataset(name: str, splits: dict[str, SplitFrames], image_size: int, on_bad_frames: str = "error") -> Dataset:
    """Check every frame file of ``splits`` and assemble a dataset whose images are read from disk on demand.

    ``on_bad_frames="error"`` (default) raises a ``ValueError`` before any training when a frame is missing,
    unreadable (decoded whole) or smaller than ``MIN_FRAME_SIZE`` pixels a side, with the count and the first paths;
    ``"skip"`` drops those frames, logs the same report as a warning and counts them per split in
    ``Dataset.bad_frames``. Family names are the fake frames' families, sorted; video
    names map to group ids shared across splits.
    """
    on_bad_frames_setting(on_bad_frames)
    for split, frames in splits.items():
        if not len(frames):
            raise ValueError(f"split {split!r} of dataset {name!r} has no frames")
    all_paths = [path for frames in splits.values() for path in frames.paths]
    logger.info("checking %d frame files of dataset %r", len(all_paths), name)
    problems = iter(check_frames(all_paths))
    bad: dict[str, list[tuple[str, str]]] = {}
    good: dict[str, np.ndarray] = {}
    for split, frames in splits.items():
        split_problems = [next(problems) for _ in range(len(frames))]
        good[split] = np.array([problem is None for problem in split_problems], dtype=bool)
        bad[split] = [(path, problem) for path, problem in zip(frames.paths, split_problems, strict=True) if problem]
    bad_count = sum(len(items) for items in bad.values())
    if bad_count:
        report = _bad_frame_report(bad, len(all_paths))
        if on_bad_frames == "error":
            raise ValueError(
                f"dataset {name!r}: {report}\nRestore or remove them, or set on_bad_frames='skip' to train without them "
                "(they are then counted in the log and in the env's reset info['bad_frames'])"
            )
        logger.warning("dataset %r: %s\nThey are left out (on_bad_frames='skip').", name, report)
        splits = {split: frames.select(good[split]) for split, frames in splits.items()}
        for split, frames in splits.items():
            if not len(frames):
                raise ValueError(f"dataset {name!r}: every frame of split {split!r} is missing or unreadable")

    family_names = tuple(sorted({family for frames in splits.values() for family in frames.families if family is not None}))
    family_index = {family: index for index, family in enumerate(family_names)}
    group_index: dict[str, int] = {}
    built = {}
    for split, frames in splits.items():
        labels = torch.tensor(frames.labels, dtype=torch.int64)
        families = [REAL_FAMILY if family is None else family_index[family] for family in frames.families]
        built[split] = Split(
            images=FrameStore(frames.paths, image_size),
            labels=labels,
            clean_labels=labels.clone(),
            groups=torch.tensor([group_index.setdefault(video, len(group_index)) for video in frames.videos]),
            families=torch.tensor(families, dtype=torch.int64),
            # Real data does not say how visible a fake's trace is: NaN, where the embedded benchmark knows it.
            strengths=torch.where(labels == 1, float("nan"), 0.0).to(torch.float32),
        )
    return Dataset(name, built, family_names, bad_frames={split: len(items) for split, items in bad.items() if items})
