"""Faults injected as a user's mistakes and accidents happen: a grid rerun under changed settings, a run resumed under
another config, frames a reader misreads, a benchmark's parent killed, two runs on one directory, unhelpful messages."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import ROOT, TINY_CLEAN_GRID_ENV
from PIL import Image

import tsrl_env.files
from experiments.cli import main
from experiments.config import SettingsChanged, load_run_config, read_yaml_config
from experiments.grid.cells import cell_dir, load_records
from experiments.grid.runner import run_benchmark
from experiments.grid.spec import load_benchmark_config
from experiments.grid.summary import write_summary
from experiments.training.checkpoint import CHECKPOINT_NAME, write_checkpoint
from experiments.training.student import train_student
from tsrl_env.config import EnvConfig
from tsrl_env.data import make_dataset
from tsrl_env.data.base import decode_frame
from tsrl_env.files import LOCK_NAME, DirectoryInUse, directory_lock


def write_yaml(path: Path, settings: dict) -> Path:
    path.write_text(yaml.safe_dump(settings))
    return path


def grid(path: Path, tutors: list[str], epochs: int) -> Path:
    return write_yaml(path, {"env": {**TINY_CLEAN_GRID_ENV, "epochs": epochs}, "tutors": tutors, "seeds": [0]})


def record_of(out: Path, tutor: str) -> Path:
    return cell_dir(out, "default", tutor, 0) / "record.json"


# ---------------------------------------------------------------- stale benchmark cells


@pytest.mark.slow
def test_a_grid_rerun_under_changed_settings_refuses_its_stale_cells_and_recomputes_them_on_request(tmp_path):
    out = tmp_path / "out"
    config_path = grid(tmp_path / "grid.yaml", ["uniform"], epochs=1)
    run_benchmark(load_benchmark_config(config_path), out, progress=False, cpus_per_cell=1)
    uniform = record_of(out, "uniform")
    assert json.loads(uniform.read_text())["fingerprint"]["env"]["epochs"] == 1

    changed = load_benchmark_config(grid(config_path, ["uniform"], epochs=2))
    for attempt in (lambda: run_benchmark(changed, out, progress=False), lambda: write_summary(changed, out)):
        with pytest.raises(SettingsChanged, match=r"default/uniform/seed0: env\.epochs: 1 -> 2(.|\n)*--rerun-changed"):
            attempt()
    assert json.loads(uniform.read_text())["fingerprint"]["env"]["epochs"] == 1, "refused before any work"

    (record,) = run_benchmark(changed, out, progress=False, cpus_per_cell=1, rerun_changed=True)
    assert len(record["run"].epochs) == 3 and json.loads(uniform.read_text())["fingerprint"]["env"]["epochs"] == 2

    # A tutor added to the grid changes no finished cell: only its own is computed.
    kept = uniform.stat().st_mtime_ns
    grown = load_benchmark_config(grid(config_path, ["uniform", "random"], epochs=2))
    records = run_benchmark(grown, out, progress=False, cpus_per_cell=1)
    assert [r["tutor"] for r in records] == ["uniform", "random"] and uniform.stat().st_mtime_ns == kept

    # A record written before fingerprints existed is taken as matching; the others are still checked.
    old = json.loads(uniform.read_text())
    del old["fingerprint"]
    uniform.write_text(json.dumps(old))
    with pytest.raises(SettingsChanged, match=r"1 cell\(s\)(.|\n)*default/random/seed0: env\.epochs: 2 -> 3"):
        run_benchmark(load_benchmark_config(grid(config_path, ["uniform", "random"], epochs=3)), out, progress=False)


def test_a_run_of_part_of_a_grid_refuses_the_changed_cells_of_the_rest_that_its_tables_would_mix_in(tmp_path):
    out = tmp_path / "out"
    settings = {
        "env": TINY_CLEAN_GRID_ENV,
        "tutors": ["uniform", "constant"],
        "seeds": [0],
        "tutor_kwargs": {"constant": {"weight": 0.5}},
    }
    config_path = write_yaml(tmp_path / "grid.yaml", settings)
    run_benchmark(load_benchmark_config(config_path), out, progress=False, cpus_per_cell=1)
    write_yaml(config_path, {**settings, "tutor_kwargs": {"constant": {"weight": 0.4}}})
    uniform_only = load_benchmark_config(config_path, tutors=["uniform"])
    for rerun_changed in (False, True):
        with pytest.raises(SettingsChanged, match=r"default/constant/seed0: tutor_kwargs(.|\n)*without --tutors"):
            run_benchmark(uniform_only, out, progress=False, rerun_changed=rerun_changed)
    assert record_of(out, "constant").is_file(), "not deleted: this run would not compute it again"
    # Its own cell changed too: refused before that one is deleted, so the refused run leaves the grid as it was.
    write_yaml(
        config_path, {**settings, "env": {**TINY_CLEAN_GRID_ENV, "epochs": 3}, "tutor_kwargs": {"constant": {"weight": 0.4}}}
    )
    with pytest.raises(SettingsChanged, match="without --tutors"):
        run_benchmark(load_benchmark_config(config_path, tutors=["uniform"]), out, progress=False, rerun_changed=True)
    assert record_of(out, "uniform").is_file()


def test_a_grid_refuses_new_cells_beside_cells_computed_on_other_cpu_kernels(tmp_path, monkeypatch):
    out = tmp_path / "out"
    config_path = grid(tmp_path / "grid.yaml", ["uniform"], epochs=1)
    run_benchmark(load_benchmark_config(config_path), out, progress=False, cpus_per_cell=1)
    uniform = record_of(out, "uniform")
    here = json.loads(uniform.read_text())
    elsewhere = {**here, "environment": {**here["environment"], "cpu": "Another CPU", "cpu_capability": "AVX512"}}
    uniform.write_text(json.dumps(elsewhere))

    grown = load_benchmark_config(grid(tmp_path / "grown.yaml", ["uniform", "random"], epochs=1))
    with pytest.raises(
        SettingsChanged, match=r"1 finished cell(.|\n)*seed0: cpu: 'Another CPU' -> .*; cpu_capability: 'AVX512' -> "
    ):
        run_benchmark(grown, out, progress=False, cpus_per_cell=1)
    assert not record_of(out, "random").exists(), "refused before any work"
    assert [r["tutor"] for r in run_benchmark(load_benchmark_config(config_path), out, progress=False)] == ["uniform"], (
        "a grid with nothing left to compute is only summarised"
    )
    # Recomputing changed cells is refused before any is deleted; so is a CPU of another name alone.
    changed = load_benchmark_config(grid(tmp_path / "changed.yaml", ["uniform"], epochs=2))
    uniform.write_text(json.dumps({**here, "environment": {**here["environment"], "cpu": "Another CPU"}}))
    with pytest.raises(SettingsChanged, match=r"seed0: cpu: 'Another CPU' -> '[^']*'\n"):
        run_benchmark(changed, out, progress=False, cpus_per_cell=1, rerun_changed=True)
    assert json.loads(uniform.read_text())["fingerprint"]["env"]["epochs"] == 1, "the changed cell is kept"

    # A kernel cap set now but not when the cell ran is another kernel too.
    uniform.write_text(json.dumps(here))
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    with pytest.raises(SettingsChanged, match=r"MKL_CBWR: None -> 'AVX2'"):
        run_benchmark(grown, out, progress=False, cpus_per_cell=1)
    monkeypatch.delenv("MKL_CBWR")
    assert [r["tutor"] for r in run_benchmark(grown, out, progress=False, cpus_per_cell=1)] == ["uniform", "random"]

    # A record rebuilt from a finished Student's run.json names the machine that trained it, not this one.
    student = cell_dir(out, "default", "random", 0) / "random" / "run.json"
    student.write_text(json.dumps({**json.loads(student.read_text()), "environment": elsewhere["environment"]}))
    record_of(out, "random").unlink()
    assert [r["tutor"] for r in run_benchmark(grown, out, progress=False, cpus_per_cell=1)] == ["uniform", "random"]
    assert json.loads(record_of(out, "random").read_text())["environment"]["cpu"] == "Another CPU"
    with pytest.raises(SettingsChanged, match=r"default/random/seed0: cpu: 'Another CPU'"):
        run_benchmark(load_benchmark_config(grid(tmp_path / "more.yaml", ["uniform", "random", "constant"], epochs=1)), out)


def test_an_unfinished_cell_begun_under_other_settings_is_refused_before_any_work(tmp_path):
    out = tmp_path / "out"
    config = load_benchmark_config(grid(tmp_path / "grid.yaml", ["uniform"], epochs=1))
    begun = cell_dir(out, "default", "uniform", 0) / "uniform"
    begun.mkdir(parents=True)
    earlier = dataclasses.replace(config.run_config("default", "uniform", 0), seed=3)
    write_checkpoint(begun / CHECKPOINT_NAME, {"label": "uniform", "config": earlier.to_dict()})
    with pytest.raises(SettingsChanged, match=r"default/uniform/seed0: seed: 3 -> 0"):
        run_benchmark(config, out, progress=False)
    assert (begun / CHECKPOINT_NAME).is_file() and not (out / "config.yaml").exists()


@pytest.mark.slow
def test_a_corrupt_record_names_its_file_and_is_rebuilt_from_its_students_run_without_training(tmp_path):
    out = tmp_path / "out"
    config = load_benchmark_config(grid(tmp_path / "grid.yaml", ["uniform"], epochs=1))
    (before,) = run_benchmark(config, out, progress=False, cpus_per_cell=1)
    record = record_of(out, "uniform")
    for damage in (record.read_bytes()[:100], b"\xff\xfe", json.dumps({"tutor": "uniform"}).encode()):
        record.write_bytes(damage)
        with pytest.raises(ValueError, match=rf"record '{record}' cannot be read .*delete it: .*rebuilds it from .*run.json"):
            load_records(config, out)
    record.unlink()
    (after,) = run_benchmark(config, out, progress=False, cpus_per_cell=1)
    assert after["run"] == before["run"], "read back from run.json, wall time included: nothing was trained"


# ---------------------------------------------------------------- tsrl train --resume and tutor_kwargs


def test_resume_refuses_a_finished_student_of_other_settings_and_tutor_kwargs_reach_only_their_tutor(tmp_path, capsys):
    config = write_yaml(tmp_path / "ppo.yaml", {**read_yaml_config("tiny"), "tutor_kwargs": {"n_epochs": 4}})
    main(["train", "--config", str(config), "--out", str(tmp_path / "runs"), "--no-progress"])
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "uniform" / "run.json").read_text())["fingerprint"]["tutor_kwargs"] == {}
    assert json.loads((run_dir / "ppo" / "run.json").read_text())["fingerprint"]["tutor_kwargs"] == {"n_epochs": 4}

    # As if killed once the uniform Student had finished, and the seed changed in the run's config since.
    (run_dir / "ppo" / "run.json").unlink()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    write_yaml(run_dir / "config.yaml", {**saved, "seed": 5})
    with pytest.raises(SettingsChanged, match=r"finished Student '.*uniform' .*\(seed: 0 -> 5\).*--rerun-changed"):
        main(["train", "--resume", str(run_dir), "--no-progress"])
    with pytest.raises(SystemExit, match="drop --out"):
        main(["train", "--resume", str(run_dir), "--out", str(tmp_path), "--no-progress"])
    main(["train", "--resume", str(run_dir), "--rerun-changed", "--no-progress"])
    for label in ("uniform", "ppo"):
        assert json.loads((run_dir / label / "run.json").read_text())["fingerprint"]["seed"] == 5
    assert not (run_dir / LOCK_NAME).exists(), "the run's lock is released when it ends"


@pytest.mark.parametrize(
    "override, message",
    [
        (["--device", "tpu"], r"device must be auto or a torch device such as cpu, cuda or cuda:1, got 'tpu'; this machine has"),
        (["--device", "cuda:7"], r"the env setting device is 'cuda:7', but"),
        (["--backbone", "resnet_nope"], r"cannot build the Student of the env settings backbone='resnet_nope'"),
    ],
)
@pytest.mark.parametrize("command", ["train", "calibrate"])
def test_settings_refused_before_the_run_directory_is_made(command, override, message, tmp_path):
    out = tmp_path / "runs"
    with pytest.raises(ValueError, match=message):
        main([command, "--config", "tiny", *override, "--out", str(out), "--no-progress"])
    assert not out.exists()


def test_a_batch_larger_than_the_training_set_is_refused_before_the_run_directory_is_made(tmp_path):
    config = write_yaml(tmp_path / "big_batch.yaml", {"env": {**TINY_CLEAN_GRID_ENV, "batch_size": 256}})
    out = tmp_path / "runs"
    with pytest.raises(ValueError, match=r"batch_size \(256\) exceeds the 128 training images"):
        main(["train", "--config", str(config), "--out", str(out), "--no-progress"])
    assert not out.exists()


# ---------------------------------------------------------------- frames


def corrupt_compressed_stream(path: Path) -> None:
    """Damage the PNG's image data, then give its chunk the CRC of the damaged bytes: only decoding can tell."""
    data = bytearray(path.read_bytes())
    start = data.find(b"IDAT") + 4
    length = struct.unpack(">I", data[start - 8 : start - 4])[0]
    data[start + 10 : start + 40] = bytes(byte ^ 0xFF for byte in data[start + 10 : start + 40])
    data[start + length : start + length + 4] = struct.pack(">I", zlib.crc32(bytes(data[start - 4 : start + length])))
    path.write_bytes(bytes(data))


@pytest.fixture
def frame_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for label in ("real", "fake"):
        for video in range(8):
            (tmp_path / label / f"v{video}").mkdir(parents=True)
            for frame in range(2):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / label / f"v{video}" / f"{frame}.png")
    gradient = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(gradient).save(tmp_path / "real" / "v0" / "gray16.png")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "fake" / "v0" / "tiny.png")
    corrupt_compressed_stream(tmp_path / "fake" / "v1" / "0.png")
    return tmp_path


@pytest.mark.parametrize("mode", ["L", "LA", "P", "1", "RGBA"])
def test_grayscale_palette_and_alpha_frames_decode_to_their_colours(mode, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    image.save(tmp_path / "frame.png")
    expected = np.asarray(image.convert("RGBA").convert("RGB"))
    assert np.array_equal(np.asarray(decode_frame(str(tmp_path / "frame.png"))), expected)


def test_16_bit_tiny_and_corrupt_stream_frames_are_read_right_or_caught_before_training(frame_folder):
    gray16 = frame_folder / "real" / "v0" / "gray16.png"
    assert Image.open(gray16).mode == "I;16"
    decoded = np.asarray(decode_frame(str(gray16)))
    expected = np.round(np.asarray(Image.open(gray16), np.float64) / 257).astype(np.uint8)
    assert decoded.shape == (32, 32, 3) and np.array_equal(decoded[..., 1], expected) and decoded.max() == 255

    options = {"root": str(frame_folder), "image_size": 32, "fake_type_folders": False}
    with pytest.raises(ValueError, match=r"2 of 34 frames are missing or unreadable") as refused:
        make_dataset("folder", **options)
    assert "v1/0.png: unreadable (OSError: broken data stream" in str(refused.value)
    assert "tiny.png: too small (1x1 px; a frame needs at least 16 px a side)" in str(refused.value)

    dataset = make_dataset("folder", **options, on_bad_frames="skip")
    assert sum(dataset.bad_frames.values()) == 2
    stores = [split.images for split in dataset.splits.values()]
    for store in stores:
        for index in range(len(store)):
            store[index]  # every frame left decodes: none fails mid-epoch
    (store, index), *_ = [(s, i) for s in stores for i in range(len(s)) if s.path(i).endswith("gray16.png")]
    assert np.array_equal(store[index][0].numpy(), expected), "the 16-bit frame reaches the Student scaled, not white"


# ---------------------------------------------------------------- orphaned workers, two runs on one directory


def _process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie has exited; whoever adopted it has not reaped it yet


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states under /proc")
@pytest.mark.slow
def test_pool_workers_exit_when_their_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, time\n"
        "from experiments.grid.runner import worker_pool\n"
        "if __name__ == '__main__':\n"
        "    pool = worker_pool(1)\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 600)\n"
        "    time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 30
        while not _process_gone(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _process_gone(worker), "the worker outlived its killed parent"
    finally:
        parent.kill()
        if not _process_gone(worker):
            os.kill(worker, signal.SIGKILL)


@pytest.mark.slow
def test_a_second_run_on_a_locked_directory_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from tsrl_env.files import directory_lock\n"
            f"with directory_lock(Path({str(out)!r}), 'tsrl benchmark'):\n    print('locked', flush=True); time.sleep(600)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        config = load_benchmark_config(grid(tmp_path / "grid.yaml", ["uniform"], epochs=1))
        with pytest.raises(DirectoryInUse, match=rf"{out} is in use by tsrl benchmark \(pid {holder.pid}, since .*lock file"):
            run_benchmark(config, out, progress=False)
        assert not (out / "cells").exists(), "refused before any work"
    finally:
        holder.kill()
        holder.wait()
    with directory_lock(out, "tsrl train"):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"taking over the lock of tsrl benchmark (pid {holder.pid}, no longer running" in caplog.text
    assert not (out / LOCK_NAME).exists()


# ---------------------------------------------------------------- messages


@pytest.mark.parametrize(
    "content, message",
    [
        ("# settings to come\n", r"config file '.*config.yaml' holds no settings \(it is empty or all comments\)"),
        ("env:\n  epochs: 2\n  epochs: 3\n", r"'.*config.yaml' is not valid YAML: the key 'epochs' is given twice(.|\n)*line 3"),
    ],
)
def test_config_files_that_would_be_misread_are_refused_naming_the_file(content, message, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_yaml_config(path)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"strength_range": 0.5}, r"strength_range must be a list, e.g. \[0.7, 1.0\], got 0.5 \(float\)"),
        ({"train_size": True}, r"train_size must be an integer >= 1, got True \(bool\)"),
    ],
)
def test_dataset_options_of_the_wrong_shape_are_refused_naming_them(options, message):
    with pytest.raises(TypeError, match=message):
        EnvConfig(dataset_options=options)


def test_a_first_checkpoint_that_cannot_be_written_does_not_claim_an_earlier_one(tmp_path, monkeypatch):
    def disk_full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tsrl_env.files.os, "fsync", disk_full)
    with pytest.raises(OSError, match=r"No space left on device\); no checkpoint of it was written before: free space"):
        write_checkpoint(tmp_path / "checkpoint.pt", {"label": "a"})


@pytest.mark.slow
def test_the_command_line_prints_a_user_error_in_two_lines_with_exit_code_2(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    command = [sys.executable, "-m", "experiments.cli"]
    arguments = ["train", "--config", str(empty), "--out", str(tmp_path / "runs")]
    quiet = subprocess.run([*command, *arguments], cwd=ROOT, capture_output=True, text=True)
    assert quiet.returncode == 2
    assert quiet.stderr.splitlines() == [
        f"tsrl train: config file {str(empty)!r} holds no settings (it is empty or all comments); write its settings, "
        f"e.g. as in {ROOT / 'experiments' / 'configs' / 'tiny.yaml'}",
        f"(tsrl --verbose {' '.join(arguments)} shows where it was raised)",
    ]
    verbose = subprocess.run([*command, "--verbose", *arguments], cwd=ROOT, capture_output=True, text=True)
    assert verbose.returncode == 1 and "Traceback (most recent call last)" in verbose.stderr


def test_tensorboard_logs_that_cannot_be_written_are_reported_with_their_folder_and_the_resume_command(tmp_path, monkeypatch):
    def disk_full(folder: str, formats: list[str]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("experiments.training.student.configure", disk_full)
    message = r"cannot write the TensorBoard logs in '.*tensorboard/ppo' \(No space left on device\); .*tsrl train --resume"
    with pytest.raises(OSError, match=message):
        train_student(load_run_config("tiny"), tmp_path, progress=False)


def test_the_record_of_a_student_holds_the_tallies_its_state_columns_allow(tmp_path):
    config = write_yaml(
        tmp_path / "run.yaml",
        {"env": {**TINY_CLEAN_GRID_ENV, "epochs": 1, "state_columns": ["features", "p_fake", "correctness"]}},
    )
    main(["train", "--config", str(config), "--no-baseline", "--no-progress", "--out", str(tmp_path / "runs")])
    (run,) = json.loads(next((tmp_path / "runs").glob("*/results.json")).read_text())
    assert sum(run["weight_by_ema_loss"]["counts"]) == 0, "no EMA-loss column: that tally stays empty"
    assert sum(run["weight_by_correct"]["counts"]) == sum(run["weight_by_label_noise"]["counts"]) == 128
    assert set(run["epochs"][-1]["state_column_auroc"]) == {"p_label", "wrong"}
