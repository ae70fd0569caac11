"""Shared warm-ups: a Student that restores another's warm-up trains exactly as one that trains its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from experiments.config import load_run_config
from experiments.training.student import train_student
from experiments.training.warmups import SharedWarmups
from tsrl_env import StudentTrainer


def _record(run_dir: Path, tutor: str) -> dict:
    record = json.loads((run_dir / tutor / "run.json").read_text())
    return {key: value for key, value in record.items() if key not in ("wall_time_s", "code", "environment")}


def _student(run_dir: Path, tutor: str) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / tutor / "student.pt", weights_only=True)


@pytest.fixture
def warmup_updates(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The phase of every Student update made during the test."""
    phases = []
    update = StudentTrainer.update

    def counted(self, batch, weights, phase):
        phases.append(phase)
        return update(self, batch, weights, phase)

    monkeypatch.setattr(StudentTrainer, "update", counted)
    return phases


@pytest.mark.parametrize("first, second", [("uniform", "self_paced"), ("uniform", "ppo"), ("sac", "random")])
def test_a_restored_warmup_trains_the_same_student_as_its_own(first, second, tmp_path, warmup_updates, one_torch_thread):
    shared = tmp_path / "warmups"
    train_student(load_run_config("tiny", tutor=first), tmp_path / "first", progress=False, warmups=shared)
    assert len(list(shared.glob("*.pt"))) == 1, "the first Student saves its warm-up"
    trained_warmup = warmup_updates.count("warm-up")
    assert trained_warmup > 0
    warmup_updates.clear()
    train_student(load_run_config("tiny", tutor=second), tmp_path / "shared", progress=False, warmups=shared)
    assert "warm-up" not in warmup_updates, "the second Student restores the warm-up instead of training it"
    train_student(load_run_config("tiny", tutor=second), tmp_path / "own", progress=False)
    assert _record(tmp_path / "shared", second) == _record(tmp_path / "own", second)
    own, restored = _student(tmp_path / "own", second), _student(tmp_path / "shared", second)
    assert own.keys() == restored.keys() and all(torch.equal(own[name], restored[name]) for name in own)


def test_warmups_are_shared_only_between_students_that_start_alike(tmp_path):
    from tsrl_env import DeepfakeCurriculumEnv

    config = load_run_config("tiny")
    env = DeepfakeCurriculumEnv(config.env)
    shared = SharedWarmups(tmp_path)
    key = shared.key(env, seed=0)
    assert key == shared.key(DeepfakeCurriculumEnv(config.env), seed=0)
    assert key != shared.key(env, seed=1)
    assert key != shared.key(DeepfakeCurriculumEnv(config.env.replace(lr=config.env.lr / 2)), seed=0)
    assert key != shared.key(DeepfakeCurriculumEnv(config.env, state_columns=["ema_loss"]), seed=0)


def test_a_damaged_warmup_is_trained_again_and_replaced(tmp_path, warmup_updates, one_torch_thread):
    shared = tmp_path / "warmups"
    train_student(load_run_config("tiny", tutor="uniform"), tmp_path / "first", progress=False, warmups=shared)
    (saved,) = shared.glob("*.pt")
    saved.write_bytes(saved.read_bytes()[:100])  # a file cut short
    warmup_updates.clear()
    train_student(load_run_config("tiny", tutor="random"), tmp_path / "second", progress=False, warmups=shared)
    assert "warm-up" in warmup_updates, "the damaged warm-up is trained again"
    assert SharedWarmups(shared).load(saved.stem) is not None, "and saved whole in its place"
