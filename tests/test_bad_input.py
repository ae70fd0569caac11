"""Bad input is refused with a message that says what was wrong, before any work starts where that is possible."""

from __future__ import annotations

import errno
import json
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from agents import TutorPPO, make_tutor
from experiments.cli import main
from experiments.config import load_run_config
from experiments.preflight import check_tutor_checkpoint
from experiments.training.saved_tutor import load_tutor_checkpoint
from tsrl_env import TINY_SETTINGS, DeepfakeCurriculumEnv, EnvConfig

TINY_OPTIONS = TINY_SETTINGS["dataset_options"]


def write_yaml(path: Path, settings: Any) -> Path:
    path.write_text(yaml.safe_dump(settings))
    return path


# Configuration: wrong types, out-of-range values and unknown keys.


@pytest.mark.parametrize(
    "settings, error, message",
    [
        ({"batch_size": "64"}, TypeError, r"batch_size must be a positive integer, got '64' \(str\)"),
        ({"batch_size": True}, TypeError, r"batch_size must be a positive integer, got True \(bool\)"),
        ({"epochs": 2.5}, TypeError, r"epochs must be a positive integer, got 2.5 \(float\)"),
        ({"seed": "0"}, TypeError, r"seed must be a non-negative integer, got '0' \(str\)"),
        ({"image_size": "32"}, TypeError, r"image_size must be an integer of at least 8 or None, got '32' \(str\)"),
        ({"state_feature_dim": 8.0}, TypeError, r"state_feature_dim must be a positive integer or None, got 8.0 \(float\)"),
        ({"lr": "1e-3"}, TypeError, r"lr must be a number, got '1e-3' \(str\); YAML reads numbers such as 1e-3 as text"),
        ({"lr": "fast"}, TypeError, r"lr must be a number, got 'fast' \(str\)$"),
        ({"ema_alpha": None}, TypeError, r"ema_alpha must be a number, got None \(NoneType\)"),
        ({"device": 0}, TypeError, r"device must be a string, got 0 \(int\)"),
        ({"backbone": None}, TypeError, r"backbone must be a string, got None \(NoneType\)"),
        ({"dataset": ["embedded"]}, TypeError, r"dataset must be a string, got \['embedded'\] \(list\)"),
        ({"dataset_options": [1]}, TypeError, r"dataset_options must be a mapping of option names to values, got \[1\]"),
        ({"augment": "yes"}, TypeError, r"augment must be true, false or deepfakebench, got 'yes' \(str\)"),
        ({"pretrained": 1}, TypeError, r"pretrained must be True, False or a checkpoint path, got 1 \(int\)"),
        ({"state_counters": "learned"}, TypeError, r"state_counters must be a list of counter names \(learned, forgotten\)"),
        ({"batch_size": 0}, ValueError, r"batch_size must be a positive integer, got 0"),
        ({"epochs": -1}, ValueError, r"epochs must be a positive integer, got -1"),
        ({"warmup_epochs": -1}, ValueError, r"warmup_epochs must be a non-negative integer, got -1"),
        ({"num_workers": -2}, ValueError, r"num_workers must be a non-negative integer, got -2"),
        ({"seed": -1}, ValueError, r"seed must be a non-negative integer, got -1"),
        ({"image_size": 4}, ValueError, r"image_size must be an integer of at least 8 or None, got 4"),
        ({"state_feature_dim": 0}, ValueError, r"state_feature_dim must be a positive integer or None, got 0"),
        ({"lr": 0.0}, ValueError, r"lr must be a positive number, got 0.0"),
        ({"lr": float("nan")}, ValueError, r"lr must be a finite number, got nan"),
        ({"weight_decay": -0.1}, ValueError, r"weight_decay must be a non-negative number, got -0.1"),
        ({"ema_alpha": 1.5}, ValueError, r"ema_alpha must lie in \(0, 1\], got 1.5"),
        ({"dataset_options": {"label_noise": 1.0}}, ValueError, r"label_noise must lie in \[0, 1\), got 1.0"),
        ({"dataset_options": {"label_noise": -0.1}}, ValueError, r"label_noise must lie in \[0, 1\), got -0.1"),
        ({"dataset_options": {"label_noise": "high"}}, TypeError, r"label_noise must be a number, got 'high' \(str\)"),
        ({"dataset_options": {"train_size": 0}}, ValueError, r"train_size must be an integer >= 1, got 0"),
        (
            {"dataset_options": {"label_nois": 0.1}},
            TypeError,
            r"unknown embedded option 'label_nois' \(did you mean 'label_noise'\?\); accepted: seed, image_size",
        ),
        ({"dataset": "folder"}, ValueError, r"the folder source needs root"),
        ({"dataset": "deepfakebench", "dataset_options": {"compression": "c99"}}, ValueError, r"compression must be one of"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting_and_the_value(settings, error, message):
    with pytest.raises(error, match=message):
        EnvConfig(**settings)


def test_numpy_integers_are_accepted_as_plain_integers():
    config = EnvConfig(batch_size=np.int64(16), seed=np.int32(3))
    assert (config.batch_size, config.seed) == (16, 3) and type(config.batch_size) is int


def test_a_bad_yaml_config_is_refused_before_any_work(tmp_path):
    env = {"backbone": "test_resnet", "dataset_options": TINY_OPTIONS}
    cases = [
        ({"env": {**env, "batchsize": 8}}, TypeError, r"unknown environment setting 'batchsize' \(did you mean 'batch_size'\?\)"),
        ({"env": {**env, "batch_size": 0}}, ValueError, r"batch_size must be a positive integer, got 0"),
        ({"env": {**env, "epochs": -2}}, ValueError, r"epochs must be a positive integer, got -2"),
        (
            {"env": {**env, "dataset_options": {**TINY_OPTIONS, "label_noise": 1.5}}},
            ValueError,
            r"label_noise must lie in \[0, 1\)",
        ),
        ({"env": "tiny"}, TypeError, r"the env section of .* must be a mapping of environment settings, got 'tiny' \(str\)"),
        ({"env": env, "seed": "abc"}, TypeError, r"seed must be a non-negative integer, got 'abc' \(str\)"),
        ({"env": env, "tutor": "ppoo"}, ValueError, r"unknown tutor 'ppoo' \(did you mean 'ppo'\?\); accepted: ppo, sac"),
        ({"env": env, "tutor_kwargs": [1]}, TypeError, r"tutor_kwargs must be a mapping of keyword arguments, got \[1\]"),
        (["seed", 3], TypeError, r"must hold key: value settings, got \['seed', 3\] \(list\)"),
    ]
    for index, (settings, error, message) in enumerate(cases):
        path = write_yaml(tmp_path / f"bad{index}.yaml", settings)
        with pytest.raises(error, match=message):
            load_run_config(path)
        out = tmp_path / f"out{index}"
        with pytest.raises(error, match=message):
            main(["train", "--config", str(path), "--out", str(out), "--no-progress"])
        assert not out.exists(), "nothing is written before the config is accepted"

    exponent = tmp_path / "exponent.yaml"
    exponent.write_text("env:\n  lr: 1e-3\n")
    with pytest.raises(TypeError, match=r"lr must be a number, got '1e-3' \(str\); YAML reads numbers such as 1e-3 as text"):
        load_run_config(exponent)
    broken = tmp_path / "broken.yaml"
    broken.write_text("env: {epochs: 2\n")
    with pytest.raises(ValueError, match=r"config file '.*broken.yaml' is not valid YAML"):
        load_run_config(broken)
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer, got -1"):
        main(["train", "--config", "tiny", "--seed", "-1", "--out", str(tmp_path / "negative")])
    with pytest.raises(TypeError, match=r"unknown environment setting 'batchsize'"):
        main(["benchmark", "--config", str(write_yaml(tmp_path / "bench.yaml", {"env": {"batchsize": 8}}))])


@pytest.mark.parametrize(
    "argv, error, message",
    [
        (
            ["benchmark", "--config", "smoke", "--tutors", "ppo,sack"],
            ValueError,
            r"unknown tutor 'sack' in the tutors given \(--tutors\) \(did you mean 'sac'\?\); accepted: ppo, sac",
        ),
        (
            ["benchmark", "--config", "smoke", "--tutors", "ppo@tsrll"],
            ValueError,
            r"unknown reward 'tsrll' in the tutors given \(--tutors\) \(tutor@reward\) \(did you mean 'tsrl'\?\)",
        ),
        (["train", "--config", "tiny", "--reward", "tsrll"], ValueError, r"unknown reward 'tsrll' \(did you mean 'tsrl'\?\)"),
        (
            ["benchmark", "--config", "tiny"],
            TypeError,
            r"'seed' is not a benchmark setting in tiny \(did you mean 'seeds'\?\): it is a tsrl train setting; a benchmark",
        ),
        (
            ["train", "--config", "smoke"],
            TypeError,
            r"'tutors' is not a run setting in smoke \(did you mean 'tutor'\?\): it is a benchmark setting: run this file",
        ),
    ],
)
def test_a_name_or_a_config_of_the_wrong_kind_is_refused_with_what_to_give(argv, error, message, tmp_path):
    with pytest.raises(error, match=message):
        main([*argv, "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_an_env_setting_at_the_top_level_is_told_to_go_under_env(tmp_path):
    path = tmp_path / "top.yaml"
    path.write_text("lr: 0.01\nenv:\n  epochs: 1\n")
    with pytest.raises(
        TypeError, match=r"'lr' is not a run setting in .*top.yaml: it is an environment setting, so indent it under env:"
    ):
        load_run_config(path)
    with pytest.raises(TypeError, match=r"'lr' is not a benchmark setting in .*: it is an environment setting"):
        main(["benchmark", "--config", str(path)])


@pytest.mark.parametrize(
    "command, choices",
    [
        ("train", ["noise_mentor", "meta_weight_net", "next_visit", "val_alignment", "deepfakebench_reference", "tiny"]),
        ("benchmark", ["noise_mentor", "teaching_heldout", "benchmark_paired"]),
        ("evaluate", ["deepfakebench", "tiny"]),
        ("teach", ["teach_noise"]),
    ],
)
def test_every_subcommands_help_lists_its_choices(command, choices, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse folds long lines
    assert all(choice in shown for choice in choices), shown


# Actions: NaN/inf, wrong shape and wrong dtype are errors that change nothing; out of [0, 1] is clipped and counted.


@pytest.fixture(scope="module")
def tiny_env() -> DeepfakeCurriculumEnv:
    return DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "warmup_epochs": 0})


BATCH = TINY_SETTINGS["batch_size"]


@pytest.mark.parametrize(
    "action, error, message",
    [
        (np.full(BATCH, np.inf), ValueError, r"action holds 32 NaN or infinite weight\(s\) \(0 NaN, 32 infinite\)"),
        (np.r_[np.nan, -np.inf, np.ones(BATCH - 2)], ValueError, r"2 NaN or infinite weight\(s\) \(1 NaN, 1 infinite\)"),
        (0.5, ValueError, r"action must have shape \(32,\) \(one weight per sample of the batch\), got \(\)"),
        (np.ones(BATCH + 1), ValueError, r"shape \(32,\).*got \(33,\)"),
        ([[0.5] * 3, [0.5]], ValueError, r"action must be an array of shape \(32,\).*inhomogeneous"),
        (None, ValueError, r"got \(\)"),
        (np.ones(BATCH, np.complex64), TypeError, r"action must hold real numbers .*got dtype complex64"),
        (np.array([None] * BATCH), TypeError, r"got dtype object"),
        (np.array(["1"] * BATCH), TypeError, r"got dtype <U1"),
    ],
)
def test_bad_actions_are_refused_and_leave_the_step_undone(tiny_env, action, error, message):
    tiny_env.reset(seed=0)
    with pytest.raises(error, match=message):
        tiny_env.step(action)
    _, _, _, _, info = tiny_env.step(np.ones(BATCH, np.float32))
    assert (info["epoch"], info["step"]) == (0, 0), "the refused action took no step"


def test_numeric_actions_of_any_real_dtype_are_clipped_and_counted(tiny_env):
    tiny_env.reset(seed=0)
    for action, clipped in [
        (np.r_[1e40, -1e40, np.full(BATCH - 2, 0.5)], 2),
        (np.r_[[2, -1], np.ones(BATCH - 2, np.int64)], 2),
        (np.ones(BATCH, bool), 0),
        ([0.25] * BATCH, 0),
        (np.full(BATCH, 1.0000001, np.float64), BATCH),
        (torch.full((BATCH,), 0.5, dtype=torch.bfloat16), 0),  # a tutor's tensors: any float type, in a graph or not
        (torch.full((BATCH,), 2.0, requires_grad=True), BATCH),
    ]:
        _, _, _, _, info = tiny_env.step(action)
        assert info["clipped_actions"] == clipped
        assert info["weights"].dtype == np.float32 and np.all((info["weights"] >= 0) & (info["weights"] <= 1))


# A Student loss that becomes NaN or infinite stops the run, naming where and what to lower.


@pytest.mark.parametrize("warmup_epochs, phase", [(0, "tutored"), (1, "warm-up")])
def test_a_diverging_student_stops_naming_the_epoch_step_and_learning_rate(warmup_epochs, phase):
    env = DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "warmup_epochs": warmup_epochs, "lr": 1e30})
    message = (
        rf"the Student's loss became (nan|inf) at {phase} epoch 0, step \d+ \(counting from 0\); "
        r"rerun with a lower learning rate: the env setting lr is 1e\+30, try 1e\+29"
    )
    with pytest.raises(FloatingPointError, match=message):
        env.reset(seed=0)
        for _ in range(env.steps_per_epoch):
            env.step(np.ones(BATCH, np.float32))


def test_a_bad_loss_is_caught_after_its_update_without_the_update_waiting_for_it():
    env = DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "warmup_epochs": 0})
    env.reset(seed=0)
    trainer = env.trainer
    loss = trainer.update(env.pending_batch, torch.full((BATCH,), float("nan")), "tutored")
    assert torch.isnan(loss), "the update returns without reading its loss on the host"
    with pytest.raises(FloatingPointError, match=r"at tutored epoch 0, step 0 \(counting from 0\)"):
        trainer.evaluate("val")  # the next evaluation (or forward, or state copy) reads it first
    trainer.check_loss()  # reported once


# Tutor checkpoints: missing, corrupted, or from another environment are refused, naming the file.


@pytest.fixture(scope="module")
def narrow_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PPO tutor saved on an env whose state rows are 8 + 5 wide, unlike the tiny env's."""
    path = tmp_path_factory.mktemp("tutor") / "tutor.zip"
    make_tutor("ppo", DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "state_feature_dim": 8})).save(path)
    return path


def test_a_tutor_from_another_environment_is_refused_naming_what_differs(tiny_env, narrow_checkpoint, tmp_path):
    message = (
        r"tutor checkpoint '.*tutor.zip' does not fit this run \(ValueError: Observation spaces do not match: "
        r"Box\(-inf, inf, \(13,\), float32\) != Box\(-inf, inf, \(\d+,\), float32\); saved != this run's\)"
    )
    with pytest.raises(ValueError, match=message):
        load_tutor_checkpoint("ppo", narrow_checkpoint, tiny_env)
    with pytest.raises(ValueError, match=r"does not fit this run.*another tutor than 'attention'"):
        load_tutor_checkpoint("attention", narrow_checkpoint, tiny_env)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        main(["train", "--config", "tiny", "--tutor-checkpoint", str(narrow_checkpoint), "--out", str(out), "--no-progress"])
    assert list(out.iterdir()) == [], "refused before the uniform Student trained"


def test_corrupted_or_missing_tutor_checkpoints_are_refused(tiny_env, narrow_checkpoint, tmp_path):
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"not a zip")
    truncated = tmp_path / "truncated.zip"
    whole = narrow_checkpoint.read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    ppo = tmp_path / "ppo.zip"
    make_tutor("ppo", tiny_env).save(ppo)
    for path, name, reason in [
        (garbage, "ppo", r"ValueError: Error: the file .*garbage.zip wasn't a zip-file"),
        (truncated, "ppo", r"\w+Error: "),
        (narrow_checkpoint, "focal", r"UnicodeDecodeError"),
        (ppo, "sac", r"AttributeError: 'SigmoidGaussianPolicy' object has no attribute 'actor'"),
    ]:
        message = rf"cannot load tutor checkpoint '.*{path.name}' as the '{name}' tutor \({reason}.*\): the file is corrupted"
        with pytest.raises(ValueError, match=message):
            load_tutor_checkpoint(name, path, tiny_env)
    assert isinstance(load_tutor_checkpoint("ppo", ppo, tiny_env), TutorPPO), "a checkpoint that fits loads"
    check_tutor_checkpoint(load_run_config("tiny"), ppo)
    with pytest.raises(FileNotFoundError, match=r"tutor checkpoint '.*missing.zip' does not exist or is not a file"):
        load_tutor_checkpoint("ppo", tmp_path / "missing.zip", tiny_env)
    with pytest.raises(FileNotFoundError, match=r"does not exist or is not a file"):
        load_tutor_checkpoint("ppo", tmp_path, tiny_env)


# Output directories: an unwritable one is refused before any training starts.

COMMANDS = [["train", "--config", "tiny"], ["benchmark", "--config", "benchmark_noise"], ["calibrate", "--config", "tiny"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: command[0])
def test_an_output_directory_under_a_file_is_refused(command, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    out = blocker / "runs"
    message = rf"cannot write to the output directory '{re.escape(str(out))}' \(Not a directory\); give another one with --out"
    with pytest.raises(OSError, match=message):
        main([*command, "--out", str(out), "--no-progress"])


@pytest.fixture
def read_only_directory(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "read_only"
    directory.mkdir(mode=stat.S_IRUSR | stat.S_IXUSR)
    yield directory
    directory.chmod(stat.S_IRWXU)


def _refuses_writes(directory: Path) -> bool:
    try:
        (directory / "probe").touch()
    except PermissionError:
        return True
    return False


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: command[0])
def test_a_read_only_output_directory_is_refused(command, read_only_directory, monkeypatch):
    if not _refuses_writes(read_only_directory):
        # Root writes into read-only directories: the probe file's refusal is what the kernel would say to anyone else.
        def refused(*args: Any, **kwargs: Any) -> None:
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr("experiments.preflight.tempfile.TemporaryFile", refused)
    message = rf"cannot write to the output directory '{re.escape(str(read_only_directory))}' \(Permission denied\)"
    with pytest.raises(OSError, match=message):
        main([*command, "--out", str(read_only_directory), "--no-progress"])


# Saved Students given to tsrl evaluate: one of another size is refused wherever its settings are recorded, a file that
# is not a Student's weights in one line, before any data is read.


@pytest.fixture
def tiny_student_weights() -> dict[str, torch.Tensor]:
    from tsrl_env.student import Student

    return Student.from_timm("test_resnet").state_dict()


def test_a_student_of_another_size_is_refused_whether_its_settings_are_in_its_file_or_its_record(
    tiny_student_weights, tmp_path, caplog
):
    trained_with = EnvConfig(**TINY_SETTINGS).to_dict()  # 32 px
    in_file = tmp_path / "alone" / "student.pt"
    in_file.parent.mkdir()
    torch.save({"state_dict": tiny_student_weights, "env": trained_with}, in_file)
    copied = tmp_path / "copied" / "ppo"
    copied.mkdir(parents=True)
    torch.save(tiny_student_weights, copied / "student.pt")
    (copied / "run.json").write_text(json.dumps({"label": "ppo", "fingerprint": {"env": trained_with}}))
    for student in (in_file, copied / "student.pt", copied):
        with pytest.raises(ValueError, match=r"trained as backbone 'test_resnet' at 32 px, but .* 'test_resnet' at 64 px"):
            main(["evaluate", str(student), "--config", "tiny", "--image-size", "64", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    bare = tmp_path / "bare" / "student.pt"
    bare.parent.mkdir()
    torch.save(tiny_student_weights, bare)
    main(["evaluate", str(bare), str(in_file), "--config", "tiny", "--out", str(tmp_path / "out")])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [run["label"] for run in results] == ["bare", "alone"] and results[1]["test"] == results[0]["test"]
    assert "the settings bare was trained with are not known" in caplog.text and "alone was" not in caplog.text


def test_a_file_that_is_not_a_students_weights_is_refused_in_one_line(tmp_path):
    garbage = tmp_path / "student.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError) as refused:
        main(["evaluate", str(garbage), "--config", "tiny", "--out", str(tmp_path / "out")])
    assert str(refused.value) == (
        f"{str(garbage)!r} is not a Student's weights (UnpicklingError: Weights only load failed); give a student.pt that "
        "tsrl train saved"
    )
    torch.save({"epoch": 3}, garbage)
    with pytest.raises(ValueError, match=r"is not a Student's weights \(it holds a dict, not a state dict of tensors\)"):
        main(["evaluate", str(garbage), "--config", "tiny", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_evaluate_without_a_config_tests_on_the_data_the_students_were_trained_with(tiny_student_weights, tmp_path):
    trained_with = EnvConfig(**TINY_SETTINGS).to_dict()
    student = tmp_path / "alone" / "student.pt"
    student.parent.mkdir()
    torch.save({"state_dict": tiny_student_weights, "env": trained_with}, student)
    main(["evaluate", str(student), "--out", str(tmp_path / "own")])
    main(["evaluate", str(student), "--config", "tiny", "--out", str(tmp_path / "given")])
    own, given = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("own", "given"))
    assert own[0]["test"] == given[0]["test"], "the tiny config names the data the Student was trained on"
    bare = tmp_path / "bare" / "student.pt"
    bare.parent.mkdir()
    torch.save(tiny_student_weights, bare)
    with pytest.raises(ValueError, match="bare were trained with are not recorded .*give the test data with --config"):
        main(["evaluate", str(bare), "--out", str(tmp_path / "out")])


def test_a_mistyped_config_name_is_answered_with_the_name_meant():
    from experiments.config import read_yaml_config

    with pytest.raises(FileNotFoundError, match=r"no config file 'demoo' \(did you mean 'demo'\?\)"):
        read_yaml_config("demoo")
