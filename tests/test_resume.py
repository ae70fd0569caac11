"""Resume and reproduce: epoch-start checkpoints, runs killed by real signals and resumed, failures injected."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import ROOT, comparable, students_equal, subprocess_env, tsrl_in_this_process

import tsrl_env.files
from experiments.cli import main
from experiments.config import load_run_config
from experiments.training.checkpoint import CHECKPOINT_NAME, CheckpointError, read_checkpoint, write_checkpoint
from experiments.training.signals import RunStopped
from experiments.training.student import train_student
from tsrl_env import TINY_SETTINGS, DeepfakeCurriculumEnv, StudentTrainer, TrainingBatch

# Long enough epochs (24 steps) that a kill right after a checkpoint lands mid-epoch, not at the run's end.
KILL_SETTINGS = {"epochs": 4, "dataset_options": {**TINY_SETTINGS["dataset_options"], "train_size": 768}}


def _results(run_dir: Path) -> list[dict]:
    return [comparable(run) for run in json.loads((run_dir / "results.json").read_text())]


# ---------------------------------------------------------------- the environment's epoch-start state


@pytest.mark.parametrize("reward", ["tsrl", "next_visit", "val_alignment", "counterfactual"])
def test_restoring_an_epoch_start_state_continues_the_episode_exactly(reward, one_torch_thread):
    settings = {**TINY_SETTINGS, "epochs": 3, "reward": reward}
    env = DeepfakeCurriculumEnv(**settings)
    env.reset(seed=3)
    weights = np.random.default_rng(0).random((3 * env.steps_per_epoch, env.batch_size)).astype(np.float32)
    saved, trajectory = None, []
    for step, action in enumerate(weights):
        observation, reward_value, terminated, _, info = env.step(action)
        trajectory.append((observation, reward_value))
        if "val" in info and env.epoch == 1:
            buffer = io.BytesIO()
            torch.save(env.epoch_start_state(), buffer)  # through bytes, as a checkpoint file holds it
            saved = (buffer.getvalue(), step + 1)
    final_test = info["test"]

    restored = DeepfakeCurriculumEnv(**settings)
    state = torch.load(io.BytesIO(saved[0]), weights_only=False)
    observation, info = restored.reset(seed=99, options={"restore": state})
    assert info["restored"] and info["epoch"] == 1 and info["warmup"] == []
    np.testing.assert_array_equal(observation, trajectory[saved[1] - 1][0])
    for step in range(saved[1], len(weights)):
        observation, reward_value, terminated, _, info = restored.step(weights[step])
        np.testing.assert_array_equal(observation, trajectory[step][0])
        assert reward_value == trajectory[step][1]
    assert terminated and info["test"] == final_test


def test_a_state_is_refused_by_an_environment_with_other_settings(one_torch_thread):
    env = DeepfakeCurriculumEnv(**TINY_SETTINGS)
    env.reset(seed=0)
    state = env.epoch_start_state()
    other = DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "ema_alpha": 0.2})
    with pytest.raises(ValueError, match=r"other env settings \(ema_alpha: 0.1 -> 0.2\)"):
        other.reset(options={"restore": state})
    lower_lr = DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "lr": 1e-4})
    lower_lr.reset(options={"restore": state})
    assert all(group["lr"] == 1e-4 for group in lower_lr.trainer.optimizer.param_groups), "a restore may lower the learning rate"
    with pytest.raises(ValueError, match=r"lacks \['trainer'\]"):
        env.reset(options={"restore": {key: value for key, value in state.items() if key != "trainer"}})
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) \['resume'\]"):
        env.reset(options={"resume": state})


def test_reset_follows_gymnasium_seeding(one_torch_thread):
    env = DeepfakeCurriculumEnv(**TINY_SETTINGS)
    first, _ = env.reset()
    unseeded_again, _ = env.reset()
    configured, _ = DeepfakeCurriculumEnv(**TINY_SETTINGS).reset(seed=TINY_SETTINGS.get("seed", 0))
    np.testing.assert_array_equal(first, configured)  # the first reset without a seed uses config.seed
    assert not np.array_equal(first, unseeded_again), "a reset without a seed continues the RNG: a new episode"
    reseeded, _ = env.reset(seed=0)
    np.testing.assert_array_equal(first, reseeded)


# ---------------------------------------------------------------- whole runs: reproduce, resume


@pytest.mark.parametrize("tutor", ["ppo", "sac", "random"])
def test_same_seed_same_run_different_seed_different_run(tutor, tmp_path, one_torch_thread):
    config = load_run_config("tiny", tutor=tutor)
    first = train_student(config, tmp_path / "first", progress=False)
    second = train_student(config, tmp_path / "second", progress=False)
    other_seed = train_student(load_run_config("tiny", tutor=tutor, seed=1), tmp_path / "other", progress=False)
    same = comparable(json.loads((tmp_path / "first" / tutor / "run.json").read_text()))
    assert same == comparable(json.loads((tmp_path / "second" / tutor / "run.json").read_text()))
    assert students_equal(tmp_path / "first" / tutor / "student.pt", tmp_path / "second" / tutor / "student.pt")
    assert [e.val_auc for e in first.epochs] == [e.val_auc for e in second.epochs]
    assert [e.val_auc for e in first.epochs] != [e.val_auc for e in other_seed.epochs]
    assert not (tmp_path / "first" / tutor / CHECKPOINT_NAME).exists(), "a finished run removes its checkpoint"


def test_a_tutor_that_does_not_learn_skips_its_rewards_unless_they_are_recorded(tmp_path, one_torch_thread):
    config = load_run_config("tiny", tutor="self_paced")
    skipped = train_student(config, tmp_path / "skipped", progress=False)
    recorded = train_student(config, tmp_path / "recorded", progress=False, record_rewards=True)
    assert skipped.reward_by_label_noise is None and recorded.reward_by_label_noise is not None
    tutored = [(a, b) for a, b in zip(skipped.epochs, recorded.epochs, strict=True) if a.phase == "tutored"]
    assert tutored and all(np.isnan(a.mean_reward) and np.isfinite(b.mean_reward) for a, b in tutored)
    assert skipped.test == recorded.test
    assert [e.val_auc for e in skipped.epochs] == [e.val_auc for e in recorded.epochs]
    skipped_student, recorded_student = (tmp_path / run / "self_paced" / "student.pt" for run in ("skipped", "recorded"))
    assert students_equal(skipped_student, recorded_student)


@pytest.mark.parametrize("tutor", ["ppo", "sac", "attention", "random"])
@pytest.mark.slow
def test_a_run_resumed_from_any_epoch_checkpoint_ends_as_the_uninterrupted_run(
    tutor, tmp_path, monkeypatch, written_checkpoints, one_torch_thread
):
    config = load_run_config("tiny", tutor=tutor, epochs=3)
    uninterrupted = train_student(config, tmp_path / "whole", progress=False)
    monkeypatch.undo()
    copies = {payload["env"]["epoch"]: data for payload, data in written_checkpoints}
    assert sorted(copies) == [0, 1, 2], "one checkpoint per tutored epoch start"
    for epoch, data in copies.items():
        run_dir = tmp_path / f"from_{epoch}"
        (run_dir / tutor).mkdir(parents=True)
        (run_dir / tutor / CHECKPOINT_NAME).write_bytes(data)
        resumed = train_student(config, run_dir, progress=False, resume=True)
        assert comparable(json.loads((run_dir / tutor / "run.json").read_text())) == comparable(
            json.loads((tmp_path / "whole" / tutor / "run.json").read_text())
        ), f"resumed at tutored epoch {epoch}"
        assert students_equal(run_dir / tutor / "student.pt", tmp_path / "whole" / tutor / "student.pt")
        assert resumed.test == uninterrupted.test


def _train_arguments(config_path: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(config_path), "--out", str(out), "--no-progress", *extra]


def _train_command(config_path: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments.cli", *_train_arguments(config_path, out, *extra)]


def _kill_after_checkpoint(command: list[str], run_parent: Path, signal_number: int, epoch: int) -> tuple[Path, subprocess.Popen]:
    """Start ``command``, send ``signal_number`` as soon as the PPO Student's checkpoint of ``epoch`` is on disk."""
    process = subprocess.Popen(command, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        checkpoints = list(run_parent.glob(f"*/ppo/{CHECKPOINT_NAME}"))
        if checkpoints:
            state = torch.load(checkpoints[0], map_location="cpu", weights_only=False)
            if state["env"]["epoch"] >= epoch:
                process.send_signal(signal_number)
                break
        time.sleep(0.02)
    process.wait(timeout=120)
    (run_dir,) = run_parent.iterdir()
    return run_dir, process


@pytest.fixture(scope="module")
def kill_test_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A YAML config for the kill tests and the run directory of one uninterrupted run of it."""
    root = tmp_path_factory.mktemp("kill")
    config = yaml.safe_load((ROOT / "experiments" / "configs" / "tiny.yaml").read_text())
    config["env"].update(KILL_SETTINGS)
    config_path = root / "kill.yaml"
    config_path.write_text(yaml.safe_dump(config))
    tsrl_in_this_process(*_train_arguments(config_path, root / "whole", "--deterministic"))
    (whole,) = (root / "whole").iterdir()
    return config_path, whole


@pytest.mark.slow
def test_a_run_killed_mid_epoch_by_sigkill_resumes_to_the_uninterrupted_result(kill_test_runs, tmp_path):
    config_path, whole = kill_test_runs
    run_dir, process = _kill_after_checkpoint(
        _train_command(config_path, tmp_path, "--deterministic"), tmp_path, signal.SIGKILL, epoch=2
    )
    assert process.returncode == -signal.SIGKILL
    assert not (run_dir / "ppo" / "run.json").exists(), "the kill must land before the PPO Student finished"
    assert (
        read_checkpoint(run_dir / "ppo" / CHECKPOINT_NAME, load_run_config(run_dir / "config.yaml"), "ppo")["env"]["epoch"] == 2
    )
    tsrl_in_this_process("train", "--resume", str(run_dir), "--no-progress", "--deterministic")  # raises if it fails
    assert _results(run_dir) == _results(whole)
    for label in ("uniform", "ppo"):
        assert students_equal(run_dir / label / "student.pt", whole / label / "student.pt")


@pytest.mark.slow
def test_sigterm_stops_the_run_keeps_the_checkpoint_and_says_how_to_resume(kill_test_runs, tmp_path):
    config_path, whole = kill_test_runs
    run_dir, process = _kill_after_checkpoint(_train_command(config_path, tmp_path), tmp_path, signal.SIGTERM, epoch=1)
    assert process.returncode == 128 + signal.SIGTERM
    stderr = process.stderr.read()
    assert "ppo: stopped by SIGTERM during tutored epoch 1" in stderr
    assert f"start of tutored epoch 1 is kept ({run_dir / 'ppo' / CHECKPOINT_NAME})" in stderr
    assert f"tsrl train --resume {run_dir}" in stderr
    tsrl_in_this_process("train", "--resume", str(run_dir), "--no-progress")
    assert _results(run_dir) == _results(whole)


# ---------------------------------------------------------------- failures injected


def test_a_diverging_loss_stops_the_run_keeps_the_last_good_checkpoint_and_resumes_with_a_lower_lr(
    tmp_path, monkeypatch, one_torch_thread
):
    original = StudentTrainer.forward_next_batch

    def loss_turns_nan_at_epoch_1_step_2(self: StudentTrainer) -> TrainingBatch:
        batch = original(self)
        if batch.epoch == 1 and batch.step == 2:  # the tiny config warms up for one epoch, epoch 0
            batch.losses = batch.losses * float("nan")
        return batch

    monkeypatch.setattr(StudentTrainer, "forward_next_batch", loss_turns_nan_at_epoch_1_step_2)
    config = load_run_config("tiny", epochs=3)
    with pytest.raises(RunStopped) as stopped:
        train_student(config, tmp_path, progress=False)
    message = str(stopped.value)
    assert "loss became nan at tutored epoch 1, step 2" in message
    assert f"checkpoint of the start of tutored epoch 1 is kept ({tmp_path / 'ppo' / CHECKPOINT_NAME})" in message
    assert f"tsrl train --resume {tmp_path} --lr 0.0001" in message
    assert stopped.value.exit_code == 1
    monkeypatch.undo()

    lower = load_run_config("tiny", epochs=3, lr=1e-4)
    assert read_checkpoint(tmp_path / "ppo" / CHECKPOINT_NAME, lower, "ppo")["env"]["epoch"] == 1
    run = train_student(lower, tmp_path, progress=False, resume=True)
    assert [e.phase for e in run.epochs] == ["warm-up", "tutored", "tutored", "tutored"]
    assert np.isfinite(run.test["test_seen"]["auc"])


def test_corrupted_and_foreign_checkpoints_are_refused_whole(tmp_path, one_torch_thread):
    config = load_run_config("tiny", tutor="random")
    path = tmp_path / CHECKPOINT_NAME
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read .*corrupted or not a tsrl checkpoint"):
        read_checkpoint(path, config, "random")

    env = DeepfakeCurriculumEnv(config.env)
    env.reset(seed=0)
    write_checkpoint(path, {"label": "random", "config": config.to_dict(), "env": env.epoch_start_state()})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_checkpoint(truncated, config, "random")
    with pytest.raises(CheckpointError, match=r"another config \(env.epochs: 2 -> 5; seed: 0 -> 1\)"):
        read_checkpoint(path, load_run_config("tiny", tutor="random", epochs=5, seed=1), "random")
    with pytest.raises(CheckpointError, match="belongs to the run 'random', not 'uniform'"):
        read_checkpoint(path, config, "uniform")
    torch.save({"format": 99}, path)
    with pytest.raises(CheckpointError, match="not a tsrl checkpoint of format 2"):
        read_checkpoint(path, config, "random")


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / CHECKPOINT_NAME
    write_checkpoint(path, {"label": "a", "epoch": 1})
    before = path.read_bytes()

    def disk_full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tsrl_env.files.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left on device.*previous checkpoint there is kept.*--resume") as error:
        write_checkpoint(path, {"label": "a", "epoch": 2})
    assert error.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME], "no temporary file is left behind"


def test_resume_refuses_options_that_change_the_run(tmp_path, capsys):

    main(["train", "--config", "tiny", "--out", str(tmp_path), "--no-progress"])
    (run_dir,) = tmp_path.iterdir()
    with pytest.raises(SystemExit, match="--seed, --epochs cannot change it"):
        main(["train", "--resume", str(run_dir), "--seed", "2", "--epochs", "3"])
    with pytest.raises(SystemExit, match="not a run directory"):
        main(["train", "--resume", str(tmp_path)])
    capsys.readouterr()
    main(["train", "--resume", str(run_dir), "--no-progress"])
    assert "ppo mean weight" in capsys.readouterr().out, "a finished run resumes to its tables without training"


def test_a_stop_signal_during_a_checkpoint_write_waits_for_it(tmp_path):
    from experiments.training.signals import RunInterrupted, interrupt_on_stop_signals, stop_signals_deferred

    path = tmp_path / CHECKPOINT_NAME
    with interrupt_on_stop_signals(), pytest.raises(RunInterrupted, match="SIGTERM"):
        with stop_signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler has run by now, and held the signal
            write_checkpoint(path, {"label": "a"})
            written = True
    assert written and torch.load(path, weights_only=False)["label"] == "a"
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]


def test_rollouts_that_do_not_start_at_epoch_starts_are_checkpointed_where_they_do(
    tmp_path, written_checkpoints, one_torch_thread
):
    config = load_run_config("tiny", tutor="ppo", epochs=3, tutor_kwargs={"n_steps": 3})  # 8 steps per epoch
    run = train_student(config, tmp_path, progress=False)
    assert [e.phase for e in run.epochs] == ["warm-up", "tutored", "tutored", "tutored"]
    written = [payload["env"]["epoch"] for payload, _ in written_checkpoints]
    assert written == [0], "rollouts start at steps 0, 3, 6, 9, ...: only epoch 0 starts with one"


def test_a_tutor_loaded_to_act_is_not_saved_in_its_checkpoints(tmp_path, written_checkpoints, one_torch_thread):
    train_student(load_run_config("tiny", tutor="sac"), tmp_path / "first", progress=False)
    first_run = len(written_checkpoints)
    config = load_run_config("tiny", tutor="sac", seed=1)
    train_student(config, tmp_path / "second", tutor_checkpoint=tmp_path / "first" / "sac" / "tutor.zip", progress=False)
    tutors = [payload["tutor"] for payload, _ in written_checkpoints[first_run:]]
    assert tutors == [{}, {}], "a loaded tutor acts deterministically and is loaded from its file again on resume"
