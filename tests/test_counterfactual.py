"""The counterfactual reward (a sample's weight times its gradient's alignment with a trusted batch's over the whole
Student) and the fine-tune that learns from it: the reward against the alignment computed apart, the Student it leaves,
and a fine-tune that continues where it stopped."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

import agents
from experiments.teaching import finetune as finetune_module
from experiments.teaching.config import load_teach_config_dict
from experiments.teaching.files import STAGED_TUTOR
from experiments.teaching.files import TUTOR as TUTOR_ZIP
from experiments.teaching.finetune import RECORD, finetune
from tsrl_env import TINY_SETTINGS, DeepfakeCurriculumEnv, EnvConfig
from tsrl_env.influence import trusted_alignment
from tsrl_env.rewards import CounterfactualReward

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRUSTED = 16
NOISY = {**TINY_SETTINGS, "dataset_options": {**TINY_SETTINGS["dataset_options"], "label_noise": 0.3}}
TUTOR = "noise_mentor_v1_pretrained"


@pytest.mark.parametrize("frozen_backbone", [False, True])
def test_the_reward_is_each_weight_times_the_alignment_at_the_network_the_weights_apply_to(frozen_backbone):
    env = DeepfakeCurriculumEnv(**NOISY, reward="counterfactual", trusted_batch_size=TRUSTED, frozen_backbone=frozen_backbone)
    env.reset(seed=0)
    # Over the parameters that train: with a frozen backbone, the head's alone.
    moved = ["model.fc.weight", "model.fc.bias"] if frozen_backbone else None  # test_resnet's head
    for step in range(2):
        batch = env.pending_batch
        generator = torch.Generator()
        generator.set_state(env.reward.generator.get_state())
        ids = torch.randperm(len(env.splits["val"]), generator=generator)[:TRUSTED]
        trusted = env.trainer.images_of("val", ids), env.splits["val"].labels[ids]
        expected = trusted_alignment(env.student, batch.images, batch.labels, *trusted, moved=moved).numpy()
        action = np.linspace(0.0, 1.0, env.batch_size, dtype=np.float32)[:: 1 if step == 0 else -1].copy()
        info = env.step(action)[4]
        np.testing.assert_allclose(info["sample_rewards"], action * expected, rtol=1e-5, atol=1e-8)
        assert np.any(expected > 0) and np.any(expected < 0)


def test_the_reward_leaves_the_student_as_the_papers_reward_does():
    actions = np.random.default_rng(0).uniform(size=(3, NOISY["batch_size"])).astype(np.float32)

    def student_after(reward: str) -> dict[str, torch.Tensor]:
        env = DeepfakeCurriculumEnv(**NOISY, reward=reward, trusted_batch_size=TRUSTED)
        env.reset(seed=3)
        for action in actions:
            env.step(action)
        return {name: value.clone() for name, value in env.student.state_dict().items()}

    counterfactual, paper = student_after("counterfactual"), student_after("tsrl")
    assert counterfactual.keys() == paper.keys()
    for name, value in paper.items():
        torch.testing.assert_close(counterfactual[name], value, rtol=0, atol=0, msg=name)


def test_a_process_group_is_refused():
    trainer = SimpleNamespace(splits={"val": range(100)}, group=SimpleNamespace(world_size=2))
    with pytest.raises(ValueError, match="takes every sample's gradient in one process"):
        CounterfactualReward(EnvConfig(reward="counterfactual"), trainer)


def _teach_config():
    env = {**NOISY, "state_columns": list(agents.tutor_spec(TUTOR).env_settings["state_columns"])}
    env["state_counters"] = list(agents.tutor_spec(TUTOR).env_settings["state_counters"])
    return load_teach_config_dict({"env": env, "label_noise": [0.3, 0.0], "first_seed": 1000, "tutor": "ppo"})


def test_a_finetune_builds_its_missing_pretrained_student_before_its_first(tmp_path, monkeypatch):
    recipe = tmp_path / "pretrain.yaml"
    recipe.write_text(yaml.safe_dump({"tutor": "uniform", "env": {**TINY_SETTINGS, "epochs": 1}}))
    weights = tmp_path / "weights" / "student.pt"
    settings = {**_teach_config().to_dict(), "pretrain": str(recipe)}
    settings["env"] = {**settings["env"], "pretrained_file": str(weights)}
    config = load_teach_config_dict(settings)

    def first_student(*args):
        raise RuntimeError("the first Student")

    monkeypatch.setattr(finetune_module, "finetune_student", first_student)
    with pytest.raises(RuntimeError, match="the first Student"):
        finetune(config, TUTOR, [0], "counterfactual", TRUSTED, tmp_path / "out")
    assert weights.is_file() and (weights.parent / "config.yaml").is_file()


def _actor(path) -> dict[str, torch.Tensor]:
    return {name: value for name, value in agents.load_tutor("ppo", path).policy.state_dict().items() if "value" not in name}


def test_a_finetune_learns_from_the_start_and_continues_after_the_last_student_recorded(tmp_path, monkeypatch):
    config = _teach_config()
    first = finetune(config, TUTOR, [0], "counterfactual", TRUSTED, tmp_path)
    model = tmp_path / TUTOR_ZIP
    assert [record["seed"] for record in first] == [1000] and model.exists() and not (tmp_path / STAGED_TUTOR).exists()
    start, tuned = _actor(agents.tutor_spec(TUTOR).files[0]), _actor(model)
    assert any(not torch.equal(start[name], tuned[name]) for name in start)
    record = first[0]
    assert 0.0 <= record["weight_flipped"] <= 1.0 and 0.0 <= record["weight_clean"] <= 1.0
    assert np.isfinite([record["trusted_auc"], record["test_seen_auc"], record["reward_clean"]]).all()

    # Stopped after the record named the new tutor and before it was moved into place: the rerun moves it.
    model.rename(tmp_path / STAGED_TUTOR)
    trained = []
    real = finetune_module.finetune_student
    monkeypatch.setattr(finetune_module, "finetune_student", lambda *args: trained.append(args[1:4]) or real(*args))
    both = finetune(config, TUTOR, [0, 1], "counterfactual", TRUSTED, tmp_path)
    assert [r["seed"] for r in both] == [1000, 1001] and both[0] == record
    assert trained == [(1, TUTOR, model)]  # only the new Student, from the tutor the first one left
    assert json.loads((tmp_path / RECORD).read_text())["students"] == both
    assert both[1]["label_noise"] == 0.0 and both[1]["weight_flipped"] is None  # a clean Student has no flipped group
    assert agents.TUTORS.register_saved("finetuned_for_test", model).algorithm == "ppo"
    del agents.TUTORS["finetuned_for_test"]

    with pytest.raises(SystemExit, match="other reward"):
        finetune(config, TUTOR, [0, 1], "val_alignment", TRUSTED, tmp_path)
    with pytest.raises(SystemExit, match="trained Students 1000, 1001, not the first of 1, 0"):
        finetune(config, TUTOR, [1, 0], "counterfactual", TRUSTED, tmp_path)
    model.write_bytes(b"not the recorded tutor")
    with pytest.raises(ValueError, match="is not the one .* records"):
        finetune(config, TUTOR, [0, 1, 0], "counterfactual", TRUSTED, tmp_path)
    with pytest.raises(ValueError, match="pays each action a Student epoch late"):
        finetune(config, TUTOR, [0], "next_visit", TRUSTED, tmp_path / "late")
