"""Pretrained weights built on first use (``pretrain`` in a run config), and the main job's place in the held-out grid."""

import hashlib
import json
import zipfile

import pytest
import torch
import yaml

from experiments.cli import main
from experiments.config import load_run_config
from experiments.grid.cells import cell_dir
from experiments.grid.runner import run_benchmark
from experiments.grid.spec import load_benchmark_config
from experiments.protocol import ProtocolViolation, check_dataset, protocol_named
from experiments.teaching.config import load_teach_config, load_teach_config_dict

TINY_DATA = {"image_size": 32, "train_size": 128, "val_size": 64, "test_seen_size": 64, "test_unseen_size": 64}


def _write(path, settings):
    path.write_text(yaml.safe_dump(settings))
    return path


def _tiny_recipe(tmp_path):
    return _write(
        tmp_path / "pretrain.yaml",
        {
            "tutor": "uniform",
            "env": {
                "dataset_options": {**TINY_DATA, "tiles": "fixed", "content": "pretraining", "seed": 7},
                "backbone": "test_resnet",
                "batch_size": 32,
                "epochs": 1,
                "warmup_epochs": 1,
            },
        },
    )


def _tiny_env(weights):
    return {
        "dataset_options": {**TINY_DATA, "tiles": "fixed", "seed": 100, "noise_seed": 200, "label_noise": 0.3},
        "backbone": "test_resnet",
        "pretrained_file": str(weights),
        "batch_size": 32,
        "epochs": 1,
        "warmup_epochs": 1,
    }


def _tiny_run(tmp_path, weights):
    settings = {"tutor": "self_paced", "pretrain": str(_tiny_recipe(tmp_path)), "env": _tiny_env(weights)}
    return _write(tmp_path / "run.yaml", settings)


@pytest.mark.slow
def test_a_missing_pretrained_file_is_built_once_then_read_by_every_student(tmp_path, capsys):
    weights = tmp_path / "weights" / "student.pt"
    run_config = _tiny_run(tmp_path, weights)
    main(["train", "--config", str(run_config), "--out", str(tmp_path / "runs"), "--no-progress"])
    assert f"building the pretrained Student {weights}" in capsys.readouterr().out

    pretraining = weights.parent / "pretraining"
    built, trained = torch.load(weights, weights_only=True), torch.load(pretraining / "uniform" / "student.pt", weights_only=True)
    assert built.keys() == trained.keys() and all(torch.equal(built[key], trained[key]) for key in built)
    beside = yaml.safe_load((weights.parent / "config.yaml").read_text())
    assert beside["env"]["dataset_options"]["content"] == "pretraining"  # what the protocol check reads
    assert not list(weights.parent.glob(".staging*"))
    # Saved under its own name, as the grids' file was: the archive inside is named after it.
    assert zipfile.ZipFile(weights).namelist()[0].startswith("student/")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    (run_dir,) = (tmp_path / "runs").iterdir()
    for student in ("uniform", "self_paced"):
        record = json.loads((run_dir / student / "run.json").read_text())
        assert record["fingerprint"]["files"]["env.pretrained_file"] == digest
        assert "pretrain" not in record["fingerprint"]  # the file's hash decides, not how it was built

    before = weights.stat().st_mtime_ns
    main(["train", "--config", str(run_config), "--out", str(tmp_path / "again"), "--no-baseline", "--no-progress"])
    assert "building the pretrained Student" not in capsys.readouterr().out
    assert weights.stat().st_mtime_ns == before


@pytest.mark.slow
def test_calibrate_builds_a_missing_pretrained_file_before_its_students(tmp_path, capsys):
    weights = tmp_path / "weights" / "student.pt"
    run_config = _tiny_run(tmp_path, weights)
    main(["calibrate", "--config", str(run_config), "--seeds", "0", "--out", str(tmp_path / "c"), "--no-progress"])
    assert f"building the pretrained Student {weights}" in capsys.readouterr().out
    records = sorted((tmp_path / "c").glob("*/uniform/run.json"))
    assert [record.parent.parent.name for record in records] == ["noise0.3_seed0", "noise0_seed0"]
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert all(json.loads(record.read_text())["fingerprint"]["files"]["env.pretrained_file"] == digest for record in records)


@pytest.mark.slow
def test_a_grid_builds_its_missing_pretrained_file_before_its_cells(tmp_path):
    weights = tmp_path / "weights" / "student.pt"
    env = {**_tiny_env(weights), "dataset_options": {**TINY_DATA, "seed": 100}}  # no flips: the uniform cell alone
    grid = {"pretrain": str(_tiny_recipe(tmp_path)), "env": env, "tutors": ["uniform"], "seeds": [0]}
    config = load_benchmark_config(_write(tmp_path / "grid.yaml", grid))
    run_benchmark(config, tmp_path / "grid", cpus_per_cell=1, progress=False)
    saved = json.loads((cell_dir(tmp_path / "grid", "default", "uniform", 0) / "record.json").read_text())
    assert saved["fingerprint"]["files"]["env.pretrained_file"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert yaml.safe_load((tmp_path / "grid" / "config.yaml").read_text())["pretrain"] == grid["pretrain"]


def test_bad_settings_are_refused_before_the_pretrained_file_is_built(tmp_path):
    weights = tmp_path / "weights" / "student.pt"
    run_config = _tiny_run(tmp_path, weights)
    with pytest.raises(ValueError, match="the env setting device is 'cuda:99'"):
        main(["train", "--config", str(run_config), "--device", "cuda:99", "--out", str(tmp_path / "runs")])
    with pytest.raises(ValueError, match="pretrain config .* builds the weights of 'test_resnet'; give the backbone"):
        main(["train", "--config", str(run_config), "--backbone", "resnet10t", "--out", str(tmp_path / "runs")])
    grid = {"pretrain": str(_tiny_recipe(tmp_path)), "env": {**_tiny_env(weights), "device": "cuda:99"}, "tutors": ["uniform"]}
    with pytest.raises(ValueError, match="the env setting device is 'cuda:99'"):
        run_benchmark(load_benchmark_config(_write(tmp_path / "grid.yaml", grid)), tmp_path / "grid", progress=False)
    assert not (tmp_path / "weights").exists() and not (tmp_path / "runs").exists()


def test_a_distributed_run_asks_for_its_pretrained_file_to_be_built_first(tmp_path):
    run_config = _tiny_run(tmp_path, tmp_path / "weights" / "student.pt")
    with pytest.raises(SystemExit, match="is not built yet, and every process would load it"):
        main(["train", "--ddp", "--config", str(run_config), "--out", str(tmp_path / "runs")])
    assert not (tmp_path / "weights").exists()


def test_pretrain_needs_a_file_to_build_and_a_recipe_from_random_weights(tmp_path):
    with pytest.raises(ValueError, match="pretrained_file: PATH under env"):
        load_run_config("tiny", pretrain="pretrain_v1")
    grid = _write(tmp_path / "grid.yaml", {"pretrain": "pretrain_v1", "tutors": ["uniform"]})
    with pytest.raises(ValueError, match="pretrained_file: PATH under env"):
        load_benchmark_config(grid)
    with pytest.raises(ValueError, match="pretrained_file: PATH under env"):
        load_teach_config_dict({"pretrain": "pretrain_v1"})
    teaching = load_teach_config("teach_v1_pretrained")
    assert teaching.pretrain == "pretrain_v1" and "pretrain" not in teaching.to_dict()  # its records match as before
    recipe = _write(tmp_path / "recipe.yaml", {"tutor": "uniform", "env": {"pretrained_file": str(tmp_path / "x.pt")}})
    run = _write(tmp_path / "run.yaml", {"pretrain": str(recipe), "env": {"pretrained_file": str(tmp_path / "y.pt")}})
    with pytest.raises(ValueError, match="is not a pretraining run"):
        main(["train", "--config", str(run), "--out", str(tmp_path / "runs"), "--no-progress"])


def test_the_main_job_is_a_cell_of_the_held_out_pretrained_grid(tmp_path):
    """``tsrl train``'s default repeats the pair (uniform, taught tutor) of one grid cell, on evaluation data under
    protocol v1, from weights whose pretraining passes the protocol's check."""
    job = load_run_config("main")
    grid = load_benchmark_config("protocol_v1_pretrained")
    assert job.tutor in grid.tutors and "uniform" in grid.tutors
    for tutor in (job.tutor, "uniform"):
        cell = grid.run_config("video_0.30/e0", tutor, job.seed)
        student = job.for_student(tutor).to_dict()
        assert student.pop("pretrain") == "pretrain_v1"
        assert student == cell.to_dict()

    weights = tmp_path / "student.pt"
    env = job.env.replace(pretrained_file=str(weights))
    load_run_config(job.pretrain).save(tmp_path / "config.yaml")  # as the build leaves it beside the weights
    check_dataset(protocol_named("v1"), "evaluation", env, "the main job")
    benchmark_pretraining = load_run_config(job.pretrain, dataset_options={"content": "benchmark"})
    benchmark_pretraining.save(tmp_path / "config.yaml")
    with pytest.raises(ProtocolViolation, match="trained on benchmark content"):
        check_dataset(protocol_named("v1"), "evaluation", env, "the main job")

    # Before the weights are built, the config that will build them is what the check reads.
    unbuilt = job.env.replace(pretrained_file=str(tmp_path / "unbuilt" / "student.pt"))
    check_dataset(protocol_named("v1"), "evaluation", unbuilt, "the main job", job.pretrain)
    with pytest.raises(ProtocolViolation, match="trained on benchmark content"):
        check_dataset(protocol_named("v1"), "evaluation", unbuilt, "the main job", str(tmp_path / "config.yaml"))
