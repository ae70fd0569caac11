"""Tests of the real-data sources (DeepfakeBench JSON, image folders), lazy frames, streaming evaluation and the video
preprocessing, on fixtures the tests write: frames of a tiny embedded benchmark laid out as DeepfakeBench lays out
FaceForensics++ (c23 and c40, relative paths, some with Windows separators) and Celeb-DF (no compression level,
absolute paths), as image folders, and a small video drawn with OpenCV around a real face photograph."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import yaml
from helpers import comparable, students_equal
from PIL import Image

from experiments.analysis.summary import benchmark_splits, paired_summary, result_rows
from experiments.analysis.tables import markdown_tables
from experiments.cli import main
from experiments.config import CONFIG_DIR
from experiments.records.student_run import GroupTally, StudentRun
from tsrl_env import TINY_SETTINGS, DeepfakeCurriculumEnv
from tsrl_env.augment import DEEPFAKEBENCH
from tsrl_env.config import MAX_AUTO_WORKERS, EnvConfig, worker_count
from tsrl_env.data import REAL_FAMILY, Dataset, FrameStore, Split, make_dataset
from tsrl_env.data.deepfakebench import sample_frames
from tsrl_env.data.embedded import EmbeddedConfig, generate_embedded
from tsrl_env.data.export import export_deepfakebench
from tsrl_env.metrics import detection_metrics, per_family_auc
from tsrl_env.student import FAKE_CLASS
from tsrl_env.trainer import StudentTrainer, normalise_images

TINY = {
    "image_size": 32,
    "train_size": 64,
    "val_size": 32,
    "test_seen_size": 32,
    "test_unseen_size": 32,
    "frames_per_video": 4,
    "label_noise": 0.0,
}
# The embedded training families stand in for FaceForensics++'s manipulations.
FF_LABELS = {"blend": "FF-DF", "splice": "FF-F2F", "resynth": "FF-FS"}
FF_SPLITS = {"train": "train", "val": "val", "test": "test_seen"}
LEVELS = ("c23", "c40")


@pytest.fixture(scope="module")
def embedded() -> Dataset:
    return generate_embedded(EmbeddedConfig(**TINY))


def videos_of(dataset: Dataset, split: str) -> list[tuple[str | None, list[np.ndarray]]]:
    """(family name or None for real, HWC frames) of each video of an embedded split, in order."""
    data: Split = dataset.splits[split]
    result = []
    for group in dict.fromkeys(data.groups.tolist()):
        indices = (data.groups == group).nonzero().flatten().tolist()
        family = int(data.families[indices[0]])
        frames = [data.images[i].permute(1, 2, 0).numpy() for i in indices]
        result.append((None if family == REAL_FAMILY else dataset.family_names[family], frames))
    return result


def degrade(frame: np.ndarray) -> np.ndarray:
    """A c40-like version of a frame: a heavy JPEG round trip."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=20)
    return np.asarray(Image.open(buffer).convert("RGB"))


def save(path: Path, frame: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(path)


def write_json(folder: Path, name: str, content: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(content))


def write_ffpp(root: Path, embedded: Dataset) -> dict[str, Any]:
    """FaceForensics++ as DeepfakeBench's rearrange writes it: FaceForensics++.json plus FF-DF.json and FF-F2F.json
    (FF-real with one manipulation each), compression levels c23 and c40, paths relative to rgb_dir (c40 ones with
    Windows separators, as in DeepfakeBench's published files). Returns the expected frames per split and level."""
    labels = ["FF-real", *FF_LABELS.values()]
    content: dict[str, Any] = {label: {split: {level: {} for level in LEVELS} for split in FF_SPLITS} for label in labels}
    expected: dict[tuple[str, str], list[tuple[str, np.ndarray]]] = {}
    for ff_split, embedded_split in FF_SPLITS.items():
        for k, (family, frames) in enumerate(videos_of(embedded, embedded_split)):
            label = "FF-real" if family is None else FF_LABELS[family]
            folder = "original_sequences/youtube" if family is None else f"manipulated_sequences/{label}"
            video = f"{ff_split}{k:03d}"
            for level in LEVELS:
                paths = [f"FaceForensics++/{folder}/{level}/frames/{video}/{i:03d}.png" for i in range(len(frames))]
                for path, frame in zip(paths, frames, strict=True):
                    stored = frame if level == "c23" else degrade(frame)
                    save(root / "rgb" / path, stored)
                    expected.setdefault((ff_split, level), []).append((label, stored))
                listed = [path.replace("/", "\\") for path in paths] if level == "c40" else paths
                content[label][ff_split][level][video] = {"label": label, "frames": listed}
    write_json(root / "json", "FaceForensics++", {"FaceForensics++": content})
    # DeepfakeBench's _c40 files: the same content under the plain key, read at level c40.
    write_json(root / "json", "FaceForensics++_c40", {"FaceForensics++": content})
    for label in ("FF-DF", "FF-F2F"):
        write_json(root / "json", label, {label: {"FF-real": content["FF-real"], label: content[label]}})
    # The source lists frames label by label, in the file's order, then video by video.
    return {key: sorted(frames, key=lambda item: labels.index(item[0])) for key, frames in expected.items()}


def write_celeb(root: Path, embedded: Dataset) -> None:
    """Celeb-DF-v2 as DeepfakeBench writes it: no compression level, absolute frame paths, an empty val split.
    Its test videos are the embedded unseen families; its train videos the embedded val split."""
    content = {label: {"train": {}, "val": {}, "test": {}} for label in ("CelebDFv2_real", "CelebDFv2_fake")}
    for split, embedded_split in (("train", "val"), ("test", "test_unseen")):
        for k, (family, frames) in enumerate(videos_of(embedded, embedded_split)):
            label = "CelebDFv2_real" if family is None else "CelebDFv2_fake"
            folder = root / "rgb" / "Celeb-DF-v2" / ("Celeb-real" if family is None else "Celeb-synthesis") / "frames"
            video = f"id{k}_{split}"
            paths = [folder / video / f"{i:03d}.png" for i in range(len(frames))]
            for path, frame in zip(paths, frames, strict=True):
                save(path, frame)
            content[label][split][video] = {"label": label, "frames": [str(path.resolve()) for path in paths]}
    write_json(root / "json", "Celeb-DF-v2", {"Celeb-DF-v2": content})


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory, embedded: Dataset) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("deepfakebench")
    expected = write_ffpp(root, embedded)
    write_celeb(root, embedded)
    return root, expected


def options(root: Path, **changes: Any) -> dict[str, Any]:
    return {
        "dataset_json_folder": str(root / "json"),
        "rgb_dir": str(root / "rgb"),
        "train_dataset": ["FaceForensics++"],
        "test_dataset": ["FaceForensics++", "Celeb-DF-v2"],
        "frame_num": 4,
        "image_size": 32,
        **changes,
    }


def decoded(split: Split) -> list[np.ndarray]:
    return [split.images[i].permute(1, 2, 0).numpy() for i in range(len(split))]


def test_sample_frames_spreads_evenly_in_frame_number_order():
    frames = [f"v/{i}.png" for i in (7, 1, 0, 9, 3, 2, 8, 4, 6, 5, 10, 11)]
    assert sample_frames(frames, 4) == ["v/0.png", "v/3.png", "v/6.png", "v/9.png"]
    assert sample_frames(frames[:3], 4) == ["v/0.png", "v/1.png", "v/7.png"]


@pytest.mark.parametrize("level", LEVELS)
def test_deepfakebench_reads_ffpp_at_each_compression_and_celeb_with_absolute_paths(bench, embedded, level):
    root, expected = bench
    dataset = make_dataset("deepfakebench", **options(root, compression=level))
    assert set(dataset.splits) == {"train", "val", "test_FaceForensics++", "test_Celeb-DF-v2"}
    assert dataset.family_names == ("CelebDFv2_fake", "FF-DF", "FF-F2F", "FF-FS")
    for split, ff_split in (("train", "train"), ("val", "val"), ("test_FaceForensics++", "test")):
        data = dataset.splits[split]
        assert isinstance(data.images, FrameStore) and not data.in_memory
        wanted = expected[(ff_split, level)]
        assert len(data) == len(wanted)
        for image, (_, frame) in zip(decoded(data), wanted, strict=True):
            np.testing.assert_array_equal(image, frame)
        fake_names = [dataset.family_names[f] if f != REAL_FAMILY else "FF-real" for f in data.families.tolist()]
        assert fake_names == [label for label, _ in wanted]
        assert torch.equal(data.labels, (data.families != REAL_FAMILY).long())
        assert torch.equal(data.labels, data.clean_labels) and not data.flipped.any()
    # Celeb-DF lists its real videos, then its fake ones.
    celeb = dataset.splits["test_Celeb-DF-v2"]
    unseen = sorted(videos_of(embedded, "test_unseen"), key=lambda video: video[0] is not None)
    wanted = [(int(family is not None), frame) for family, frames in unseen for frame in frames]
    for image, (_, frame) in zip(decoded(celeb), wanted, strict=True):
        np.testing.assert_array_equal(image, frame)
    assert celeb.labels.tolist() == [label for label, _ in wanted]
    assert torch.isnan(celeb.strengths[celeb.labels == 1]).all() and (celeb.strengths[celeb.labels == 0] == 0).all()


def test_a_dataset_named_with_a_compression_suffix_reads_that_level(bench):
    root, expected = bench
    dataset = make_dataset("deepfakebench", **options(root, test_dataset=["FaceForensics++_c40"]))
    test = dataset.splits["test_FaceForensics++_c40"]
    for image, (_, frame) in zip(decoded(test), expected[("test", "c40")], strict=True):
        np.testing.assert_array_equal(image, frame)


def test_groups_are_videos_and_video_auc_groups_by_video_name(bench, embedded):
    root, _ = bench
    dataset = make_dataset("deepfakebench", **options(root))
    ffpp = json.loads((root / "json" / "FaceForensics++.json").read_text())["FaceForensics++"]
    for split, ff_split in (("train", "train"), ("test_FaceForensics++", "test")):
        videos = [video for label in ffpp.values() for video in label[ff_split]["c23"].values()]
        groups = dataset.splits[split].groups
        assert groups.unique().numel() == len(videos)
        # Each video's frames are consecutive and share one group.
        starts = np.cumsum([0] + [len(video["frames"]) for video in videos])
        for start, end in zip(starts[:-1], starts[1:], strict=True):
            assert groups[start:end].unique().numel() == 1
    # Group ids are shared across splits only by the same video, so no test video is mistaken for a training one.
    train_groups = set(dataset.splits["train"].groups.tolist())
    assert not train_groups & set(dataset.splits["test_FaceForensics++"].groups.tolist())
    # Video AUC averages a video's frames: one confident frame per fake video ranks it above every real video.
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    scores = np.array([0.5, 0.5, 0.4, 0.4, 0.1, 0.95, 0.2, 0.9])
    metrics = detection_metrics(labels, scores, groups)
    assert metrics["auc"] == 0.5 and metrics["video_auc"] == 1.0


def test_training_datasets_combine_and_a_shared_real_video_counts_once(bench):
    root, expected = bench
    dataset = make_dataset("deepfakebench", **options(root, train_dataset=["FF-DF", "FF-F2F"], test_dataset=["FF-DF"]))
    wanted = [label for label, _ in expected[("train", "c23")] if label in ("FF-real", "FF-DF", "FF-F2F")]
    train = dataset.splits["train"]
    assert len(train) == len(wanted)
    assert sorted(train.families.tolist()).count(REAL_FAMILY) == wanted.count("FF-real")
    assert dataset.family_names == ("FF-DF", "FF-F2F")
    assert set(dataset.splits) == {"train", "val", "test_FF-DF"}


def test_val_fraction_carves_whole_videos_when_the_json_has_no_val(bench):
    root, _ = bench
    with pytest.raises(ValueError, match="'val' split of 'Celeb-DF-v2' holds no video.*set val_fraction"):
        make_dataset("deepfakebench", **options(root, train_dataset=["Celeb-DF-v2"]))
    dataset = make_dataset("deepfakebench", **options(root, train_dataset=["Celeb-DF-v2"], val_fraction=0.25))
    train, val = dataset.splits["train"], dataset.splits["val"]
    assert len(train) + len(val) == TINY["val_size"]
    assert not set(train.groups.tolist()) & set(val.groups.tolist())
    assert set(val.labels.tolist()) == {0, 1}


def edited_json(root: Path, tmp_path: Path, name: str, edit) -> str:
    content = json.loads((root / "json" / "FaceForensics++.json").read_text())
    edit(content)
    write_json(tmp_path, name, content)
    return str(tmp_path)


def test_bad_inputs_name_the_file_the_key_and_what_was_found(bench, tmp_path):
    root, _ = bench

    def load(**changes):
        return make_dataset("deepfakebench", **options(root, **changes))

    with pytest.raises(FileNotFoundError, match=r"no dataset file .*Celeb-DF-v3\.json.*holds the datasets: 'Celeb-DF-v2', "):
        load(test_dataset=["Celeb-DF-v3"])
    with pytest.raises(FileNotFoundError, match="dataset_json_folder '/nonexistent' does not exist"):
        load(dataset_json_folder="/nonexistent")

    folder = edited_json(root, tmp_path / "renamed", "FF-DF", lambda content: None)
    with pytest.raises(ValueError, match=r"FF-DF\.json has no dataset 'FF-DF' at its top level; it has: 'FaceForensics\+\+'"):
        load(dataset_json_folder=folder, train_dataset=["FF-DF"], test_dataset=["FF-DF"])

    def relabel(content):
        video = next(iter(content["FaceForensics++"]["FF-DF"]["train"]["c23"].values()))
        video["label"] = "FF-Deepfake"

    folder = edited_json(root, tmp_path / "relabelled", "FaceForensics++", relabel)
    with pytest.raises(
        ValueError,
        match=r"FaceForensics\+\+\.json: video FaceForensics\+\+ -> FF-DF -> train -> c23 -> train\d+ has the label "
        r"'FF-Deepfake', which is not in the label dict; known labels: 'DFD_fake'.*label_dict=\{'FF-Deepfake': 0 or 1\}",
    ):
        load(dataset_json_folder=folder, test_dataset=["FaceForensics++"])
    # The same file loads once the label dict knows the name.
    relabelled = load(dataset_json_folder=folder, test_dataset=["FaceForensics++"], label_dict={"FF-Deepfake": 1})
    assert "FF-Deepfake" in relabelled.family_names

    def drop_val(content):
        del content["FaceForensics++"]["FF-real"]["val"]

    folder = edited_json(root, tmp_path / "no_val", "FaceForensics++", drop_val)
    with pytest.raises(ValueError, match=r"FaceForensics\+\+ -> FF-real has no split 'val'; it has: 'train', 'test'"):
        load(dataset_json_folder=folder, test_dataset=["FaceForensics++"])
    with pytest.raises(ValueError, match=r"FF-real -> train has no compression level 'raw'; it has: 'c23', 'c40'"):
        load(compression="raw")
    with pytest.raises(TypeError, match=r"unknown deepfakebench option 'frames_num' \(did you mean 'frame_num'\?\)"):
        load(frames_num=8)


def test_bad_frames_stop_the_run_before_training_or_are_skipped_and_counted(tmp_path, embedded, caplog):
    write_celeb(tmp_path, embedded)
    json_path = tmp_path / "json" / "Celeb-DF-v2.json"
    content = json.loads(json_path.read_text())["Celeb-DF-v2"]
    test_frames = [path for video in content["CelebDFv2_fake"]["test"].values() for path in video["frames"]]
    Path(test_frames[0]).unlink()
    Path(test_frames[1]).write_bytes(Path(test_frames[1]).read_bytes()[:-200])  # truncated PNG
    Path(test_frames[2]).write_text("not an image")
    settings = options(tmp_path, train_dataset=["Celeb-DF-v2"], test_dataset=["Celeb-DF-v2"], val_fraction=0.25)
    with pytest.raises(ValueError, match=r"3 of 64 frames are missing or unreadable \(test_Celeb-DF-v2: 3\)") as error:
        make_dataset("deepfakebench", **settings)
    message = str(error.value)
    assert f"{test_frames[0]}: missing" in message and f"{test_frames[1]}: unreadable (OSError: Truncated" in message
    assert f"{test_frames[2]}: unreadable (not an image file" in message and "on_bad_frames='skip'" in message

    with caplog.at_level(logging.WARNING):
        dataset = make_dataset("deepfakebench", **settings, on_bad_frames="skip")
    assert dataset.bad_frames == {"test_Celeb-DF-v2": 3}
    assert len(dataset.splits["test_Celeb-DF-v2"]) == TINY["test_unseen_size"] - 3
    assert "3 of 64 frames are missing or unreadable" in caplog.text and "left out" in caplog.text
    env = DeepfakeCurriculumEnv(
        dataset="deepfakebench",
        dataset_options={**settings, "on_bad_frames": "skip"},
        backbone="test_resnet",
        batch_size=8,
        epochs=1,
        warmup_epochs=0,
        num_workers=0,
    )
    _, info = env.reset(seed=0)
    assert info["bad_frames"] == {"test_Celeb-DF-v2": 3}


def test_full_episode_on_deepfakebench_data_with_worker_processes(bench):
    root, _ = bench
    env = DeepfakeCurriculumEnv(
        dataset="deepfakebench",
        dataset_options=options(root, image_size=256),
        backbone="test_resnet",
        batch_size=16,
        epochs=1,
        warmup_epochs=0,
        image_size=32,
        num_workers=1,
        augment=False,
    )
    assert env.dataset.image_size == 256 and env.splits["train"].image_size == 32
    forwarded = []
    forward = env.trainer.forward_next_batch
    env.trainer.forward_next_batch = lambda: forwarded.append(forward()) or forwarded[-1]
    observation, info = env.reset(seed=0)
    assert observation.shape == env.observation_space.shape and info["bad_frames"] == {}
    terminated, steps = False, 0
    while not terminated:
        # The batch the workers decoded is the one the env's own order picked.
        pending = forwarded[-1]
        expected = torch.stack([env.splits["train"].images[int(i)] for i in pending.ids])
        assert torch.equal(pending.images, normalise_images(expected))
        observation, reward, terminated, _, info = env.step(np.full(env.batch_size, 0.5, np.float32))
        steps += 1
    assert steps == env.steps_per_epoch == TINY["train_size"] // 16
    assert set(info["test"]) == {"test_FaceForensics++", "test_Celeb-DF-v2"}
    for metrics in info["test"].values():
        assert 0.0 <= metrics["auc"] <= 1.0 and 0.0 <= metrics["video_auc"] <= 1.0
    assert set(info["test"]["test_FaceForensics++"]["family_auc"]) <= {"FF-DF", "FF-F2F", "FF-FS"}
    env.close()


@pytest.fixture(scope="module")
def trained_run(bench, tmp_path_factory) -> tuple[Path, Path, str]:
    """``tsrl train`` on the FaceForensics++ / Celeb-DF-v2 fixture: its config, its run directory and what it printed."""
    root, _ = bench
    config = {
        "tutor": "ppo",
        "env": {
            "dataset": "deepfakebench",
            "dataset_options": options(root, image_size=32),
            "backbone": "test_resnet",
            "batch_size": 16,
            "epochs": 1,
            "warmup_epochs": 1,
            "num_workers": 0,
        },
    }
    folder = tmp_path_factory.mktemp("trained")
    path = folder / "real.yaml"
    path.write_text(yaml.safe_dump(config))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main(["train", "--config", str(path), "--out", str(folder / "runs"), "--no-progress"])
    (run_dir,) = (folder / "runs").iterdir()
    return path, run_dir, printed.getvalue()


def test_tsrl_train_reads_deepfakebench_data_from_its_config(trained_run):
    _, run_dir, printed = trained_run
    assert "uniform val AUC" in printed
    for dataset in ("FaceForensics++", "Celeb-DF-v2"):
        for metric in ("AUC", "video AUC", "ACC", "EER"):
            assert_numbers(printed, f"{dataset} {metric}", columns=2)
    assert_numbers(printed, "FaceForensics++ AUC FF-DF", columns=2)
    results = json.loads((run_dir / "results.json").read_text())
    assert [run["label"] for run in results] == ["uniform", "ppo"]
    assert set(results[1]["test"]) == {"test_FaceForensics++", "test_Celeb-DF-v2"}


def test_tsrl_evaluate_scores_saved_students_as_training_did(trained_run, tmp_path, capsys):
    config, run_dir, _ = trained_run
    main(["evaluate", str(run_dir), str(run_dir / "ppo" / "student.pt"), "--config", str(config), "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert f"{run_dir.name}/ppo" in printed.splitlines()[0]
    for dataset in ("FaceForensics++", "Celeb-DF-v2"):
        assert_numbers(printed, f"{dataset} AUC", columns=3)
    trained = json.loads((run_dir / "results.json").read_text())
    evaluated = json.loads((tmp_path / "results.json").read_text())
    assert [run["label"] for run in evaluated] == [f"{run_dir.name}/{label}" for label in ("uniform", "ppo", "ppo")]
    assert [run["test"] for run in evaluated] == [trained[0]["test"], trained[1]["test"], trained[1]["test"]]


def test_tsrl_evaluate_refuses_a_student_of_another_backbone_or_size(trained_run, tmp_path):
    config, run_dir, _ = trained_run
    with pytest.raises(ValueError, match="trained as backbone 'test_resnet' at 32 px, but .* backbone 'resnet10t' at 32 px"):
        main(["evaluate", str(run_dir), "--config", str(config), "--backbone", "resnet10t", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="at 32 px, but .* 'test_resnet' at 48 px"):
        main(["evaluate", str(run_dir), "--config", str(config), "--image-size", "48", "--out", str(tmp_path)])
    bare = tmp_path / "bare" / "student.pt"
    bare.parent.mkdir()
    bare.write_bytes((run_dir / "ppo" / "student.pt").read_bytes())
    with pytest.raises(ValueError, match="do not fit a Student of backbone 'resnet10t'"):
        main(["evaluate", str(bare), "--config", str(config), "--backbone", "resnet10t", "--out", str(tmp_path)])
    assert not (tmp_path / "results.json").exists()


@pytest.mark.slow
def test_the_reference_preset_trains_with_a_taught_tutor_and_its_student_is_scored_on_celeb_df_alone(bench, tmp_path, capsys):
    """The paper's regime as docs/data.md gives it: deepfakebench_reference (here on the fixture, at a tiny size) with
    the tutor taught from the generalisation oracle, frozen, then ``tsrl evaluate`` on Celeb-DF-v2 only."""
    root, _ = bench
    reference = yaml.safe_load((CONFIG_DIR / "deepfakebench_reference.yaml").read_text())
    folders = {key: options(root)[key] for key in ("dataset_json_folder", "rgb_dir")}
    reference["env"]["dataset_options"] |= folders | {"frame_num": 4, "image_size": 32}
    tiny = {"backbone": "test_resnet", "pretrained": False, "batch_size": 16, "epochs": 1, "warmup_epochs": 1, "num_workers": 0}
    reference["env"] |= tiny
    config = tmp_path / "reference.yaml"
    config.write_text(yaml.safe_dump(reference))
    tutor = "generalisation_mentor_v1_pretrained"
    main(["train", "--config", str(config), "--tutor", tutor, "--no-baseline", "--out", str(tmp_path / "runs"), "--no-progress"])
    (run_dir,) = (tmp_path / "runs").iterdir()
    trained = json.loads((run_dir / "results.json").read_text())
    assert [run["label"] for run in trained] == [tutor]
    assert set(trained[0]["test"]) == {"test_FaceForensics++", "test_Celeb-DF-v2"}

    unseen = copy.deepcopy(reference)
    unseen["env"]["dataset_options"]["test_dataset"] = ["Celeb-DF-v2"]
    celeb = tmp_path / "celeb.yaml"
    celeb.write_text(yaml.safe_dump(unseen))
    capsys.readouterr()
    main(["evaluate", str(run_dir / tutor / "student.pt"), "--config", str(celeb), "--out", str(tmp_path / "evaluated")])
    assert_numbers(capsys.readouterr().out, "Celeb-DF-v2 AUC", columns=1)
    (evaluated,) = json.loads((tmp_path / "evaluated" / "results.json").read_text())
    assert evaluated["test"] == {"test_Celeb-DF-v2": trained[0]["test"]["test_Celeb-DF-v2"]}


def assert_numbers(printed: str, row: str, columns: int) -> None:
    """The printed table's row ``row`` holds ``columns`` numbers, no ``-``."""
    (line,) = [line for line in printed.splitlines() if line.startswith(f"{row}  ")]
    cells = line.removeprefix(row).split()
    assert len(cells) == columns and all(cell.replace(".", "", 1).isdigit() for cell in cells), line


def test_streaming_evaluation_gives_the_metrics_of_all_scores_at_once(bench):
    root, _ = bench
    env = DeepfakeCurriculumEnv(
        dataset="deepfakebench",
        dataset_options=options(root),
        backbone="test_resnet",
        batch_size=16,
        epochs=1,
        warmup_epochs=0,
        num_workers=0,
    )
    env.reset(seed=0)
    env.step(np.ones(env.batch_size, np.float32))
    for split in ("test_FaceForensics++", "test_Celeb-DF-v2"):
        data = env.splits[split]
        env.student.eval()
        with torch.no_grad():
            images = torch.stack([data.images[i] for i in range(len(data))])
            scores = env.student(normalise_images(images))[0].softmax(dim=1)[:, FAKE_CLASS].numpy()
        env.student.train()
        labels = data.labels.numpy()
        expected = detection_metrics(labels, scores, data.groups.numpy())
        expected["family_auc"] = per_family_auc(labels, scores, data.families.numpy(), env.dataset.family_names)
        assert env.evaluate(split) == expected


def test_in_memory_evaluation_still_gives_the_metrics_of_all_scores_at_once():
    env = DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "warmup_epochs": 0})
    env.reset(seed=0)
    env.step(np.ones(env.batch_size, np.float32))
    data = env.splits["test_seen"]
    assert data.in_memory
    env.student.eval()
    with torch.no_grad():
        scores = env.student(normalise_images(data.images))[0].softmax(dim=1)[:, FAKE_CLASS].numpy()
    env.student.train()
    labels = data.labels.numpy()
    expected = detection_metrics(labels, scores, data.groups.numpy())
    expected["family_auc"] = per_family_auc(labels, scores, data.families.numpy(), env.dataset.family_names)
    assert env.evaluate("test_seen") == expected


def write_folder(root: Path, embedded: Dataset, split: str) -> None:
    """real/<video>/<frame>.png and fake/<family>/<video>/<frame>.jpg (fakes as JPEG, reals as PNG)."""
    for k, (family, frames) in enumerate(videos_of(embedded, split)):
        folder = root / "real" / f"video{k}" if family is None else root / "fake" / family / f"video{k}"
        for i, frame in enumerate(frames):
            save(folder / f"{i:03d}.{'png' if family is None else 'jpg'}", frame)


def test_folder_source_flat_layout_carves_video_disjoint_splits(tmp_path, embedded):
    write_folder(tmp_path, embedded, "train")
    save(tmp_path / "real" / "single.png", videos_of(embedded, "val")[0][1][0])
    dataset = make_dataset("folder", root=str(tmp_path), image_size=32, val_fraction=0.2, test_fraction=0.25)
    assert set(dataset.splits) == {"train", "val", "test"}
    assert dataset.family_names == ("blend", "resynth", "splice")
    assert sum(len(split) for split in dataset.splits.values()) == TINY["train_size"] + 1
    groups = [set(split.groups.tolist()) for split in dataset.splits.values()]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    for split in dataset.splits.values():
        assert set(split.labels.tolist()) == {0, 1}
        assert torch.equal(split.labels, (split.families != REAL_FAMILY).long())
    # A single image directly under real/ is a video of its own; a video folder's frames share one group.
    all_groups = torch.cat([split.groups for split in dataset.splits.values()])
    assert all_groups.unique().numel() == len(videos_of(embedded, "train")) + 1


def test_folder_source_split_layout_reads_each_split_and_carves_val(tmp_path, embedded):
    write_folder(tmp_path / "train", embedded, "train")
    write_folder(tmp_path / "test_unseen", embedded, "test_unseen")
    dataset = make_dataset("folder", root=str(tmp_path), image_size=32, fake_type_folders=False)
    assert set(dataset.splits) == {"train", "val", "test_unseen"}
    assert dataset.family_names == ("fake",)
    assert len(dataset.splits["train"]) + len(dataset.splits["val"]) == TINY["train_size"]
    test, unseen = dataset.splits["test_unseen"], embedded.splits["test_unseen"]
    assert len(test) == len(unseen) and int(test.labels.sum()) == int(unseen.labels.sum())
    other = tmp_path / "other"
    (other / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"must hold real/ and fake/ folders, or split folders .*; it holds the folders: images"):
        make_dataset("folder", root=str(other), image_size=32)


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (256, 256))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()


def test_preprocess_crops_faces_skips_frames_without_one_and_feeds_the_deepfakebench_source(tmp_path, capsys):
    # A Haar cascade finds no face in a drawn cartoon, so the face comes from a real photograph shipped with
    # scikit-image (the astronaut Eileen Collins); the other frames are flat grey with a drawn circle, no face.
    face = cv2.cvtColor(cv2.resize(skimage.data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
    blank = np.full((256, 256, 3), 128, np.uint8)
    cv2.circle(blank, (128, 128), 60, (40, 40, 200), -1)
    # 10 frames: 0-5 show the face (shifted a little each frame), 6-9 do not.
    frames = [np.roll(face, 2 * i, axis=1) for i in range(6)] + [blank] * 4
    videos = tmp_path / "videos"
    for split in ("train", "val", "test"):
        write_video(videos / split / "real" / f"{split}_a.avi", frames)
        write_video(videos / split / "fake" / "FaceSwap" / f"{split}_b.avi", frames[::-1])
    write_video(videos / "train" / "real" / "no_face.avi", [blank] * 10)
    (videos / "train" / "real" / "broken.mp4").write_text("not a video")

    out = tmp_path / "out"
    main(["preprocess", str(videos), str(out), "--name", "mine", "--frames", "5", "--size", "64"])
    printed = capsys.readouterr().out
    # 7 readable videos, 5 frames sampled from each (0, 2, 4, 6, 8): the 6 face videos show a face in 3 of them.
    assert "videos: 8 (1 unreadable)" in printed
    assert "frames read: 35; faces found: 18; frames without a face, skipped: 17" in printed
    assert "videos without any face (left out of the dataset): 1" in printed
    content = json.loads((out / "dataset_json" / "mine.json").read_text())["mine"]
    assert set(content) == {"mine_real", "mine_FaceSwap"}
    real = content["mine_real"]["train"]["train_a"]
    assert real["label"] == "mine_real" and real["frames"] == [f"mine/mine_real/train_a/{i:03d}.png" for i in (0, 2, 4)]
    fake = content["mine_FaceSwap"]["test"]["test_b"]["frames"]
    assert [Path(path).name for path in fake] == ["004.png", "006.png", "008.png"]
    crop = cv2.imread(str(out / "rgb" / real["frames"][0]))
    assert crop.shape == (64, 64, 3)

    settings = yaml.safe_load((out / "dataset_options.yaml").read_text())
    assert settings["dataset"] == "deepfakebench"
    dataset = make_dataset("deepfakebench", **settings["dataset_options"])
    assert {name: len(split) for name, split in dataset.splits.items()} == {"train": 6, "val": 6, "test_mine": 6}
    assert dataset.family_names == ("mine_FaceSwap",)
    assert dataset.splits["train"].image_size == 64


def test_a_run_on_frame_files_resumes_exactly(bench, tmp_path, monkeypatch, written_checkpoints):
    # A DataLoader draws its seed from the global torch RNG at every epoch start, the restore's included: the
    # checkpointed RNG states must be set after that, or the tutor's actions after a resume would differ.

    from experiments.config import load_run_config
    from experiments.training.checkpoint import CHECKPOINT_NAME
    from experiments.training.student import train_student

    root, _ = bench
    env_settings = {"dataset": "deepfakebench", "dataset_options": options(root), "batch_size": 16, "num_workers": 0}
    config = load_run_config("tiny", epochs=3, **env_settings)
    whole = train_student(config, tmp_path / "whole", progress=False)
    monkeypatch.undo()
    copies = {payload["env"]["epoch"]: data for payload, data in written_checkpoints}
    (tmp_path / "resumed" / "ppo").mkdir(parents=True)
    (tmp_path / "resumed" / "ppo" / CHECKPOINT_NAME).write_bytes(copies[1])
    resumed = train_student(config, tmp_path / "resumed", progress=False, resume=True)
    assert [e.mean_weight for e in resumed.epochs] == [e.mean_weight for e in whole.epochs]
    assert resumed.test == whole.test
    records = [comparable(json.loads((tmp_path / d / "ppo" / "run.json").read_text())) for d in ("whole", "resumed")]
    assert records[0] == records[1]
    assert students_equal(tmp_path / "whole" / "ppo" / "student.pt", tmp_path / "resumed" / "ppo" / "student.pt")


def test_benchmark_tables_name_the_test_splits_of_the_data(tmp_path):
    splits = ("test_FaceForensics++", "test_Celeb-DF-v2")

    def record(tutor: str, seed: int, auc: float) -> dict[str, Any]:
        metrics = {"video_auc": auc, "acc": 0.5, "eer": 0.3, "ap": 0.6}
        test = {split: {"auc": auc + k / 10, **metrics} for k, split in enumerate(splits)}
        noise = GroupTally(["clean", "flipped"], [1.0, 1.0], [1, 1])
        run = StudentRun(tutor, test=test, wall_time_s=1.0, weight_by_label_noise=noise)
        return {"variant": "ffpp", "tutor": tutor, "seed": seed, "run": run}

    records = [record("uniform", seed, 0.6) for seed in range(2)] + [record("focal", seed, 0.6 + seed / 100) for seed in range(2)]
    assert benchmark_splits(records) == splits
    rows = result_rows(records, splits)
    assert rows[3]["diff_test_Celeb-DF-v2_auc"] == pytest.approx(0.01)
    markdown = markdown_tables(paired_summary(rows, splits), splits)
    assert "Δ FaceForensics++ AUC | Δ Celeb-DF-v2 AUC | Δ FaceForensics++ video AUC" in markdown
    assert "| FaceForensics++ AUC | Celeb-DF-v2 AUC |" in markdown


def test_train_options_reach_the_run_and_no_baseline_trains_the_tutored_student_alone(tmp_path, capsys):
    main(
        ["train", "--config", "tiny", "--tutor", "self_paced", "--reward", "next_visit", "--batch-size", "16"]
        + ["--image-size", "32", "--epochs", "1", "--warmup-epochs", "0", "--no-baseline"]
        + ["--out", str(tmp_path), "--no-progress"]
    )
    (run_dir,) = tmp_path.iterdir()
    env = yaml.safe_load((run_dir / "config.yaml").read_text())["env"]
    assert (env["reward"], env["batch_size"], env["image_size"]) == ("next_visit", 16, 32)
    assert [run["label"] for run in json.loads((run_dir / "results.json").read_text())] == ["self_paced"]
    assert not (run_dir / "uniform").exists() and "uniform" not in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--batch-size"):
        main(["train", "--resume", str(run_dir), "--batch-size", "8"])


def test_num_workers_auto_is_the_cpus_less_one_at_most_eight(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)), raising=False)
    assert worker_count("auto") == 1 and worker_count(3) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert worker_count("auto") == MAX_AUTO_WORKERS == 8
    assert EnvConfig(num_workers="auto").num_workers == "auto"
    with pytest.raises(ValueError, match="num_workers must be a non-negative integer or auto, got 'many'"):
        EnvConfig(num_workers="many")


def test_deepfakebench_augmentations_are_the_same_whatever_decodes_them(bench):
    root, _ = bench
    settings = {"dataset": "deepfakebench", "dataset_options": options(root), "backbone": "test_resnet", "batch_size": 16}
    batches = []
    for workers in (0, 2):
        trainer = StudentTrainer(EnvConfig(**settings, augment=DEEPFAKEBENCH, num_workers=workers))
        trainer.start(student_seed=0, data_seed=3)
        trainer.start_epoch(0)
        batches.append(trainer.next_batch())
        trainer.close()
    (ids, _, images, _), (ids_2, _, images_2, _) = batches
    assert torch.equal(ids, ids_2) and torch.equal(images, images_2)
    frames = torch.stack([trainer.splits["train"].images[int(i)] for i in ids])
    assert not torch.equal(images.abs(), normalise_images(frames).abs()), "blur, jitter or JPEG changed some image"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, embedded: Dataset) -> dict[str, Any]:
    return export_deepfakebench(embedded, tmp_path_factory.mktemp("exported"))


def test_an_exported_dataset_reads_back_with_the_same_splits_images_and_labels(exported, embedded):
    back = make_dataset("deepfakebench", **exported)
    # It flipped none of the labels it read, and knows it (the oracle runs at noise 0 as on the embedded data).
    assert set(back.splits) == set(embedded.splits) and back.knows_label_noise
    assert not any(split.flipped.any() for split in back.splits.values())
    for name, split in embedded.splits.items():
        images = sorted(image.tobytes() for image in decoded(split))
        assert sorted(image.tobytes() for image in decoded(back.splits[name])) == images
        assert int(back.splits[name].labels.sum()) == int(split.clean_labels.sum())
        assert len(set(back.splits[name].groups.tolist())) == len(set(split.groups.tolist()))
    written = yaml.safe_load((Path(exported["rgb_dir"]).parent / "dataset_options.yaml").read_text())
    assert written == {"dataset": "deepfakebench", "dataset_options": exported}


def test_label_noise_on_files_flips_whole_videos_by_its_own_seed_and_keeps_the_truth(exported):
    def train(**noise):
        return make_dataset("deepfakebench", **exported, **noise).splits["train"]

    clean = train()
    noisy = train(label_noise=0.5, noise_seed=3)
    flipped, groups = noisy.flipped.numpy(), noisy.groups.numpy()
    assert 0 < flipped.mean() < 1 and all(len(set(flipped[groups == group])) == 1 for group in set(groups.tolist()))
    assert torch.equal(noisy.clean_labels, clean.labels) and torch.equal(
        train(label_noise=0.5, noise_seed=3).labels, noisy.labels
    )
    assert not torch.equal(train(label_noise=0.5, noise_seed=4).labels, noisy.labels)
    one_way = train(label_noise=0.5, noise_model="class_conditional", noise_seed=3)
    assert one_way.flipped.any() and not (one_way.flipped & (one_way.clean_labels == 0)).any()
    dataset = make_dataset("deepfakebench", **exported, label_noise=0.5)
    assert dataset.knows_label_noise and not any(dataset.splits[name].flipped.any() for name in dataset.splits if name != "train")
    with pytest.raises(ValueError, match="manipulation strengths"):
        make_dataset("deepfakebench", **exported, label_noise=0.3, noise_model="instance")
    with pytest.raises(ValueError, match="label_noise must lie in"):
        make_dataset("deepfakebench", **exported, label_noise=1.0)


def test_a_grid_on_files_with_label_noise_gets_the_oracle_and_random_rows(exported, tmp_path):
    from experiments.grid.spec import load_benchmark_config

    path = tmp_path / "files.yaml"
    env = {**TINY_SETTINGS, "dataset": "deepfakebench", "dataset_options": exported}
    variants = {"noisy": {"dataset_options": {"label_noise": 0.3}}, "clean": {}}
    path.write_text(yaml.safe_dump({"env": env, "tutors": ["uniform"], "seeds": [0], "variants": variants}))
    assert load_benchmark_config(path).tutors == ("oracle", "random", "uniform")
    path.write_text(yaml.safe_dump({"env": env, "tutors": ["uniform"], "seeds": [0]}))
    assert load_benchmark_config(path).tutors == ("uniform",)


def test_a_grid_whose_oracle_cannot_know_the_flipped_labels_is_refused_before_any_work(exported, tmp_path):
    from experiments.grid.spec import load_benchmark_config

    path = tmp_path / "files.yaml"
    files = {"env": {**TINY_SETTINGS, "dataset": "deepfakebench", "dataset_options": exported}, "seeds": [0]}
    variants = {"noisy": {"dataset_options": {"label_noise": 0.3}}, "clean": {}}
    path.write_text(yaml.safe_dump({**files, "tutors": ["uniform", "oracle"], "variants": variants}))
    assert load_benchmark_config(path).tutors == ("random", "uniform", "oracle")  # files at noise 0 included
    folder = {**TINY_SETTINGS, "dataset": "folder", "dataset_options": {"root": str(tmp_path)}}
    path.write_text(yaml.safe_dump({"env": folder, "seeds": [0], "tutors": ["uniform", "oracle"]}))
    with pytest.raises(ValueError, match="'oracle' tutor with keywords {} reads which training labels are wrong.*'folder'"):
        load_benchmark_config(path)
    path.write_text(yaml.safe_dump({"env": folder, "seeds": [0], "tutors": ["uniform", "small_loss"]}))
    with pytest.raises(ValueError, match="'small_loss' tutor with keywords {} reads .* how many are"):
        load_benchmark_config(path)
    estimated = {"small_loss": {"noise_rate": "estimated"}}
    path.write_text(yaml.safe_dump({"env": folder, "seeds": [0], "tutors": ["uniform", "small_loss"], "tutor_kwargs": estimated}))
    assert load_benchmark_config(path).tutors == ("uniform", "small_loss")


def test_tsrl_export_writes_a_grids_dataset_that_the_files_source_reads(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    options = {key: value for key, value in TINY.items() if key != "label_noise"}
    settings = {
        "env": {**TINY_SETTINGS, "dataset_options": options},
        "tutors": ["uniform"],
        "seeds": [0],
        "datasets": {"d0": {"seed": 5, "label_noise": 0.3}, "d1": {"seed": 6}},
    }
    path.write_text(yaml.safe_dump(settings))
    main(["export", "--config", str(path), "--dataset", "d1", "--out", str(tmp_path / "d1")])
    assert "read them back with" in capsys.readouterr().out
    written = yaml.safe_load((tmp_path / "d1" / "dataset_options.yaml").read_text())["dataset_options"]
    back = make_dataset("deepfakebench", **written)
    source = make_dataset("embedded", **{**options, "seed": 6, "label_noise": 0.0})
    assert sorted(image.tobytes() for image in decoded(back.splits["train"])) == sorted(
        image.tobytes() for image in decoded(source.splits["train"])
    )
    with pytest.raises(SystemExit, match="no dataset 'd9'"):
        main(["export", "--config", str(path), "--dataset", "d9", "--out", str(tmp_path / "d9")])
    # Variants that change the images need --variant; a split the layout has no place for is refused.
    settings["variants"] = {"small": {"dataset_options": {"train_size": 32}}, "noisy": {"dataset_options": {"label_noise": 0.1}}}
    path.write_text(yaml.safe_dump(settings))
    with pytest.raises(SystemExit, match="name one with --variant"):
        main(["export", "--config", str(path), "--out", str(tmp_path / "any")])
    main(["export", "--config", str(path), "--variant", "small", "--out", str(tmp_path / "small")])
    small = yaml.safe_load((tmp_path / "small" / "dataset_options.yaml").read_text())["dataset_options"]
    assert len(make_dataset("deepfakebench", **small).splits["train"]) == 32
    with pytest.raises(ValueError, match="val_unseen_size: 0"):
        export_deepfakebench(make_dataset("embedded", **options, val_unseen_size=16), tmp_path / "unseen")
