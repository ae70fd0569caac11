"""tsrl teach as reliable as train and benchmark: a run killed at any point between its writes, stopped by a signal or
short of disk space continues to the result of a run never stopped; two runs on one directory, a changed or damaged
record and settings that cannot work are refused before any Student trains, in a line that says what to do."""

from __future__ import annotations

import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import experiments.teaching.files
import experiments.teaching.teach
import experiments.training.student
from agents import load_tutor
from experiments.cli import main
from experiments.teaching.config import load_teach_config
from experiments.teaching.files import FAULT_POINTS, FAULT_VARIABLE
from experiments.teaching.teach import teach
from experiments.training.signals import RunStopped
from tsrl_env import TINY_SETTINGS
from tsrl_env.files import LOCK_NAME, DirectoryInUse

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["ema_loss", "counters", "p_fake", "correctness", "area_under_margin", "knn_disagreement", "trusted_probe"]
ROWS_PER_STUDENT = 256  # the tiny train split, one tutored epoch


def write_config(path: Path, **changes: object) -> Path:
    settings = {
        "env": {**TINY_SETTINGS, "epochs": 1, "state_columns": COLUMNS},
        "label_noise": [0.3, 0.0],
        "imitation": {"epochs": 2, "batch_size": 128},
        "paired": False,
        **changes,
    }
    path.write_text(yaml.safe_dump(settings))
    return path


def teach_in_a_process(config: Path, out: Path, students: int, fault: str | None = None, **options: object) -> subprocess.Popen:
    """``tsrl teach`` in a process of its own (one torch thread, as in this one), killed at ``fault`` if given."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if fault:
        environment[FAULT_VARIABLE] = fault
    command = [sys.executable, "-m", "experiments.cli", "teach", "--config", str(config), "--students", str(students)]
    return subprocess.Popen(
        [*command, "--out", str(out)],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,
    )


def curve_of(out: Path) -> list[dict]:
    """The Students ``teaching.json`` records, without their wall times."""
    return [
        {k: v for k, v in student.items() if k != "wall_time_s"}
        for student in json.loads((out / "teaching.json").read_text())["students"]
    ]


def assert_same_run(out: Path, reference: Path) -> None:
    """``out`` holds what the uninterrupted run ``reference`` holds: the curve, the examples and the tutor's weights."""
    assert json.dumps(curve_of(out)) == json.dumps(curve_of(reference))  # NaNs included
    with np.load(out / "examples.npz") as examples, np.load(reference / "examples.npz") as expected:
        assert examples["states"].shape == expected["states"].shape
        np.testing.assert_array_equal(examples["states"], expected["states"])
        np.testing.assert_array_equal(examples["targets"], expected["targets"])
    ours, theirs = (load_tutor("ppo", path / "tutor.zip").policy.state_dict() for path in (out, reference))
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
    assert not (out / "tutor.next.zip").exists() and not (out / LOCK_NAME).exists()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A teaching config and the run of two Students it makes when nothing stops it."""
    folder = tmp_path_factory.mktemp("reference")
    config = write_config(folder / "teach.yaml")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        teach(load_teach_config(config), 2, folder / "out", progress=False)
    finally:
        torch.set_num_threads(threads)
    return config, folder / "out"


@pytest.mark.parametrize("point", FAULT_POINTS)
@pytest.mark.slow
def test_a_run_killed_between_its_writes_continues_to_the_uninterrupted_result(point, reference, tmp_path):
    config, expected = reference
    out = tmp_path / "out"
    killed = teach_in_a_process(config, out, 2, fault=f"{point}:2")
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert (out / LOCK_NAME).exists(), "a killed run leaves its lock"
    recorded = len(json.loads((out / "teaching.json").read_text())["students"])
    assert recorded == (1 if point in ("after_examples_saved", "after_tutor_staged") else 2)
    curve = teach(load_teach_config(config), 2, out, progress=False)
    assert [student.examples for student in curve] == [ROWS_PER_STUDENT, 2 * ROWS_PER_STUDENT]
    assert_same_run(out, expected)


@pytest.mark.parametrize("failing", ["examples.npz", "tutor.next.zip", "teaching.json", "tutor.zip"])
def test_a_full_disk_stops_the_run_with_the_record_consistent_and_a_rerun_continues(failing, reference, tmp_path, monkeypatch):
    config, expected = reference
    out = tmp_path / "out"
    written, write = [], experiments.teaching.files.write_atomically

    def disk_full_at_the_second_student(path: Path, data: bytes | str) -> None:
        written.append(path.name)
        if path.name == failing and written.count(failing) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(path, data)

    monkeypatch.setattr(experiments.teaching.files, "write_atomically", disk_full_at_the_second_student)
    command = f"tsrl teach --config {config} --students 2 --out {out}"
    kept = "records Student 2, whose tutor is tutor.next.zip" if failing == "tutor.zip" else "keeps the 1 Student"
    message = rf"cannot write '{out / failing}' \(No space left on device\); teaching.json {kept}.*continue with: {command}"
    with pytest.raises(OSError, match=message):
        teach(load_teach_config(config), 2, out, progress=False, resume_command=command)
    monkeypatch.undo()
    teach(load_teach_config(config), 2, out, progress=False)
    assert_same_run(out, expected)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.slow
def test_a_stop_signal_keeps_the_students_recorded_and_names_a_command_that_continues(stop, tmp_path):
    config = write_config(tmp_path / "teach.yaml", paired=True)
    out = tmp_path / "out"
    running = teach_in_a_process(config, out, 2)
    assert running.stdout.readline().startswith("torch threads: "), "the run's header names its threads"
    assert running.stdout.readline().startswith("Student 1 (seed 1000"), "the first Student is recorded"
    running.send_signal(stop)
    _, errors = running.communicate(timeout=300)
    assert running.returncode == 128 + stop and "Traceback" not in errors
    command = shlex.join(["tsrl", "teach", "--config", str(config), "--students", "2", "--out", str(out)])
    stopped = errors.strip().splitlines()[-1]
    assert f"stopped by {stop.name}" in stopped and stopped.endswith(f"Continue with: {command}")
    assert len(json.loads((out / "teaching.json").read_text())["students"]) == 1
    main(shlex.split(command)[1:] + ["--no-progress"])
    assert [student["examples"] for student in curve_of(out)] == [ROWS_PER_STUDENT, 2 * ROWS_PER_STUDENT]
    assert (out / "uniform" / "seed1001" / "uniform" / "run.json").is_file()


@pytest.mark.slow
def test_a_second_teach_on_the_same_directory_is_refused_while_the_first_runs(reference, tmp_path):
    config, _ = reference
    out = tmp_path / "out"
    first = teach_in_a_process(write_config(tmp_path / "longer.yaml", paired=True), out, 3)
    try:
        deadline = time.monotonic() + 120
        while not (out / LOCK_NAME).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGSTOP)  # holding the lock, as a run that is busy
        with pytest.raises(DirectoryInUse, match=rf"{out} is in use by tsrl teach \(pid {first.pid}, since"):
            teach(load_teach_config(config), 2, out, progress=False)
    finally:
        first.kill()
        first.communicate()


def test_a_changed_config_is_refused_naming_the_setting_and_a_damaged_record_naming_the_file(reference, tmp_path):
    config, expected = reference
    out = tmp_path / "out"
    out.mkdir()
    for name in ("teaching.json", "examples.npz", "tutor.zip", "tutor.json"):
        (out / name).write_bytes((expected / name).read_bytes())
    changed = load_teach_config(write_config(tmp_path / "changed.yaml", imitation={"epochs": 3, "batch_size": 128}))
    with pytest.raises(ValueError, match=r"another teaching config \(imitation.epochs: 2 -> 3\): give the settings it was"):
        teach(changed, 3, out, progress=False)
    record = json.loads((out / "teaching.json").read_text())
    del record["config"]["env"]["precision"]  # as a record written before that env setting existed
    (out / "teaching.json").write_text(json.dumps(record))
    assert len(teach(load_teach_config(config), 2, out, progress=False)) == 2, "its default is the setting it ran under"
    examples = np.load(out / "examples.npz")
    np.savez(out / "examples.npz", states=examples["states"][:100], targets=examples["targets"][:100])
    with pytest.raises(ValueError, match=rf"'{out / 'examples.npz'}' hold 100 rows where {out / 'teaching.json'} counts 512"):
        teach(load_teach_config(config), 3, out, progress=False)
    (out / "teaching.json").write_text('{"config": ')
    with pytest.raises(ValueError, match=rf"the teaching record '{out / 'teaching.json'}' cannot be read \(JSONDecodeError"):
        teach(load_teach_config(config), 3, out, progress=False)


def test_a_tutor_that_is_not_the_recorded_one_is_refused(reference, tmp_path):
    config, expected = reference
    out = tmp_path / "out"
    out.mkdir()
    for name in ("teaching.json", "examples.npz", "tutor.json"):
        (out / name).write_bytes((expected / name).read_bytes())
    (out / "tutor.zip").write_bytes(b"another tutor")
    with pytest.raises(ValueError, match=r"the tutor '.*tutor.zip' is not the one .*teaching.json records \(SHA-256"):
        teach(load_teach_config(config), 3, out, progress=False)


@pytest.mark.parametrize(
    "changes, error, message",
    [
        ({"imitation": {"epochs": 2, "lr": 0.1}}, TypeError, r"unknown imitation setting 'lr'; accepted: epochs, batch_size"),
        ({"imitation": {"epochs": 0}}, ValueError, r"imitation epochs must be a positive integer, got 0"),
        ({"paired": "no"}, TypeError, r"paired must be true or false, got 'no' \(str\)"),
        ({"tutor": "uniform"}, ValueError, r"the tutor 'uniform' cannot be taught: .*; tutors that have one: ppo$"),
        ({"tutor": "sac"}, ValueError, r"the tutor 'sac' cannot be taught"),
        ({"tutor": "ppp"}, ValueError, r"unknown tutor 'ppp' \(did you mean 'ppo'\?\)"),
        ({"label_noise": [0.3, "a"]}, TypeError, r"label_noise must be a number, got 'a' \(str\)"),
        ({"label_noise": 0.3}, TypeError, r"label_noise must list noise levels in \[0, 1\), e.g. \[0.3, 0.0\], got 0.3"),
        ({"first_seed": 7}, ValueError, r"teaching seeds must start at 1000 or above"),
        (
            {"env": {**TINY_SETTINGS, "device": "cuda"}},
            ValueError,
            r"the env setting device is 'cuda', but CUDA is not available",
        ),
    ],
    ids=lambda value: json.dumps(value)[:60] if isinstance(value, dict) else None,
)
def test_settings_that_cannot_work_are_refused_before_the_output_directory_is_made(changes, error, message, tmp_path):
    if "device" in changes.get("env", {}) and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out"
    with pytest.raises(error, match=message):
        main(["teach", "--config", str(write_config(tmp_path / "teach.yaml", **changes)), "--out", str(out), "--no-progress"])
    assert not out.exists()


def test_partial_imitation_settings_take_the_defaults_and_no_students_are_refused(tmp_path):
    config = load_teach_config(write_config(tmp_path / "teach.yaml", imitation={"epochs": 2}))
    assert config.imitation == {"epochs": 2, "batch_size": 512, "learning_rate": 1e-3}
    with pytest.raises(ValueError, match=r"the number of Students to teach \(--students\) must be a positive integer, got 0"):
        main(["teach", "--config", str(tmp_path / "teach.yaml"), "--students", "0", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_tutor_keywords_that_do_not_make_a_tutor_are_refused_before_any_student_trains(tmp_path, monkeypatch):
    def no_student(*args: object, **kwargs: object) -> None:
        raise AssertionError("a Student trained")

    monkeypatch.setattr(experiments.teaching.teach, "_teach_one_student", no_student)
    config = load_teach_config(write_config(tmp_path / "teach.yaml", tutor_kwargs={"n_steps": -4}))
    message = r"tutor_kwargs \{'n_steps': -4\} does not make a 'ppo' tutor \(AssertionError: `batch_size` must be greater"
    with pytest.raises(ValueError, match=message):
        teach(config, 1, tmp_path / "out", progress=False)
    assert os.listdir(tmp_path / "out") == []


def test_teaching_files_are_written_with_the_permissions_of_the_umask(reference):
    _, out = reference
    wanted = 0o666 & ~_umask()
    for name in ("teaching.json", "examples.npz", "tutor.zip", "tutor.json", "teaching.md"):
        assert (out / name).stat().st_mode & 0o777 == wanted, name


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_the_report_is_refused_where_nothing_was_taught(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path} holds no Student taught \(teaching.json\); teach first"):
        main(["teach", "--summary-only", "--out", str(tmp_path)])


def test_a_stop_in_a_paired_uniform_student_names_the_teach_command(tmp_path, monkeypatch):
    act = experiments.training.student._act

    def stopped_while_acting(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # handled as the run's stop signal, in this thread
        act(*args, **kwargs)

    monkeypatch.setattr(experiments.training.student, "_act", stopped_while_acting)
    config = load_teach_config(write_config(tmp_path / "teach.yaml", paired=True))
    command = f"tsrl teach --config {tmp_path / 'teach.yaml'} --students 1 --out {tmp_path / 'out'}"
    with pytest.raises(RunStopped, match=rf"^uniform: stopped by SIGTERM during .*Continue with: {command}$") as stopped:
        teach(config, 1, tmp_path / "out", progress=False, resume_command=command)
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    assert not (tmp_path / "out" / "teaching.json").exists()
