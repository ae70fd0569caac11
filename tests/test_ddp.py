"""One Student trained with DistributedDataParallel: a real 2-process gloo run on the CPU, launched by torchrun, against
one process with the same global batch and seed; a run resumed across two processes; the bytes per step by kind; and
the clear errors.

Equivalence tolerances (2 processes vs 1, Student ``test_convnext``, which has LayerNorms and no BatchNorm, so that the
CPU's per-shard normalisation cannot differ): the ranks' gradients are averaged by an all-reduce and each shard's
forward runs at half the batch, so floating-point sums differ in order and the runs agree up to rounding, which the
training then carries along. Observed on the 2-core build machine (torch 2.14.1): Students' weights 2.8e-7 apart at
most (tolerance 1e-5), per-epoch mean rewards, mean weights and losses 1.5e-8 (tolerance 1e-6), the weight tallies'
sums 1.8e-7 (tolerance 1e-4), validation AUCs and every test metric identical (tolerance 1/64: one of a split's 64
frames crossing a threshold or swapping ranks with a neighbour).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from helpers import ROOT, subprocess_env, tsrl_in_this_process

from experiments.cli import main
from experiments.config import load_run_config
from experiments.performance import ddp_comm
from experiments.performance.common import torchrun
from experiments.performance.ddp_equivalence import METRIC_TOLERANCE, max_differences, weight_difference
from experiments.training.checkpoint import CHECKPOINT_NAME
from experiments.training.student import train_student
from tsrl_env import TINY_SETTINGS, DeepfakeCurriculumEnv
from tsrl_env.distributed import TORCHRUN_VARIABLES, DistributedGroupView

BATCHNORM_FREE = "test_convnext"
WEIGHT_TOLERANCE = 1e-5
CURVE_TOLERANCE = 1e-6
TALLY_TOLERANCE = 1e-4
CPU = torch.device("cpu")

pytestmark = pytest.mark.slow


def _run_cli(launcher: list[str], *arguments: str) -> None:
    """Run the ``tsrl`` command line through ``launcher`` (python, or torchrun) and check that it succeeded."""
    command = [*launcher, "-m", "experiments.cli", *arguments]
    finished = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]


def _train(out: Path, config: Path, launcher: list[str] | None, *extra: str) -> Path:
    """Run ``tsrl train`` through ``launcher`` (torchrun; None: in this process) and return its run directory."""
    arguments = ["train", "--config", str(config), "--out", str(out), "--no-progress", *extra]
    if launcher is None:
        tsrl_in_this_process(*arguments)
    else:
        _run_cli(launcher, *arguments)
    (run_dir,) = out.iterdir()  # torchrun's rank 1 wrote nothing of its own
    return run_dir


@pytest.fixture(scope="module")
def one_and_two_processes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Run directories of ``tsrl train`` in one process and with ``--ddp`` across two, on the same config."""
    root = tmp_path_factory.mktemp("ddp")
    config = yaml.safe_load((ROOT / "experiments" / "configs" / "tiny.yaml").read_text())
    config["env"].update(backbone=BATCHNORM_FREE, device="cpu")
    config_path = root / "tiny_batchnorm_free.yaml"
    config_path.write_text(yaml.safe_dump(config))
    single = _train(root / "one", config_path, None)
    distributed = _train(root / "two", config_path, torchrun(), "--ddp")
    return single, distributed


def _assert_same_student(single: Path, distributed: Path, label: str) -> None:
    """The Student ``label`` of two run directories: records and weights equal within the module's tolerances."""
    one = json.loads((single / label / "run.json").read_text())
    two = json.loads((distributed / label / "run.json").read_text())
    for record in (one, two):
        record.pop("wall_time_s")
    epochs = max_differences(one.pop("epochs"), two.pop("epochs"))
    assert epochs.pop("val_auc") <= METRIC_TOLERANCE
    assert epochs.pop("weight_histogram") == 0 and epochs.pop("epoch") == 0
    assert all(difference <= CURVE_TOLERANCE for difference in epochs.values()), epochs  # reward, weight, loss
    assert all(difference <= METRIC_TOLERANCE for difference in max_differences(one.pop("test"), two.pop("test")).values())
    tallies = max_differences(one, two)  # the weights' sums and counts by group
    assert all(difference == 0 for name, difference in tallies.items() if name.endswith(".counts")), tallies
    assert all(difference <= TALLY_TOLERANCE for difference in tallies.values()), tallies

    assert weight_difference(single / label / "student.pt", distributed / label / "student.pt") <= WEIGHT_TOLERANCE


def test_two_processes_train_the_students_one_process_trains(one_and_two_processes):
    single, distributed = one_and_two_processes
    for label in ("uniform", "ppo"):
        _assert_same_student(single, distributed, label)
    assert (distributed / "ppo" / "tutor.zip").is_file() and not (distributed / "ppo" / CHECKPOINT_NAME).exists()


def test_a_run_resumed_with_ddp_ends_as_the_uninterrupted_run(
    one_and_two_processes, tmp_path, monkeypatch, written_checkpoints, one_torch_thread
):
    """A checkpoint written by one process, resumed across two: rank 0 reads it (and reads back the finished Student),
    the other rank gets the epoch-start state from rank 0."""
    single, _ = one_and_two_processes
    config = load_run_config(single / "config.yaml")
    train_student(config, tmp_path / "checkpointed", progress=False)  # the PPO Student, in this process
    monkeypatch.undo()
    copies = {payload["env"]["epoch"]: data for payload, data in written_checkpoints}
    run_dir = tmp_path / "interrupted"
    shutil.copytree(single / "uniform", run_dir / "uniform")  # finished before the interruption
    shutil.copy(single / "config.yaml", run_dir / "config.yaml")
    (run_dir / "ppo").mkdir()
    (run_dir / "ppo" / CHECKPOINT_NAME).write_bytes(copies[1])  # stopped during tutored epoch 1
    uniform_record = (run_dir / "uniform" / "run.json").read_bytes()

    _run_cli(torchrun(), "train", "--ddp", "--resume", str(run_dir), "--no-progress")
    assert (run_dir / "uniform" / "run.json").read_bytes() == uniform_record, "a finished Student is read back"
    _assert_same_student(single, run_dir, "ppo")
    assert (run_dir / "results.json").is_file() and not (run_dir / "ppo" / CHECKPOINT_NAME).exists()


def test_the_bytes_per_step_are_those_of_the_shapes():
    tiny = ["--backbone", BATCHNORM_FREE, "--image-size", "32", "--train-size", "128", "--batch-size", "32"]
    measured = ddp_comm.main([*tiny, "--reward", "val_alignment"])
    shard, state_width, parameters, features = 16, 64 + 5, 207_258, 64
    assert measured["parameters"] == parameters and measured["state_dim"] == state_width
    assert measured["step"] == {
        "gradients": 4 * parameters,  # every parameter's float32 gradient, once per update
        "states": shard * (4 + 1 + 4 + 4 * state_width),  # loss, correct, p(true class), state row
        "weights": 4 * (32 + 1),  # the batch's weights and the clipped count
        "loss": 4,
        "rewards": 4 * shard + 16 * 4 * (2 + features),  # the rewards; the trusted batch's errors and head inputs
    }
    assert measured["evaluation"] == {"evaluation": 4 * 128}, "256 validation scores, half from each rank"
    assert measured["reset"]["setup"] > 4 * parameters, "DDP's initial copy of the Student, and the reset arguments"


def test_a_batch_that_does_not_divide_by_the_world_size_is_refused_before_any_data_is_loaded():
    view = DistributedGroupView(rank=1, world_size=3, device=CPU)
    message = r"batch_size 64 does not divide by the 3 processes training the Student.* multiple of 3 \(e\.g\. 63\)"
    with pytest.raises(ValueError, match=message):
        view.equal_shard(64, "batch_size")
    with pytest.raises(ValueError, match="batch_size 32 does not divide by the 3 processes"):
        DeepfakeCurriculumEnv(**TINY_SETTINGS, group=view)
    assert view.equal_shard(63, "batch_size") == slice(21, 42)
    assert [DistributedGroupView(rank, 3, CPU).shard(10) for rank in range(3)] == [slice(0, 4), slice(4, 7), slice(7, 10)]


def test_ddp_without_torchrun_says_how_to_launch_and_writes_nothing(tmp_path, monkeypatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit, match=r"tsrl train --ddp: .*\(RANK, LOCAL_RANK, .* not set\).*torchrun --nproc_per_node=2"):
        main(["train", "--ddp", "--config", "tiny", "--out", str(tmp_path / "runs"), "--no-progress"])
    assert not (tmp_path / "runs").exists()
