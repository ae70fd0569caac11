"""Tests of a Student's first weights from a local file (timm's key names or DeepfakeBench's Xception), of the message
when timm's weights cannot be downloaded, and of the learning-rate schedule, DeepfakeBench's augmentations and bf16
autocast across a checkpoint."""

from __future__ import annotations

import io

import numpy as np
import pytest
import timm
import torch

from tsrl_env import TINY_SETTINGS, DeepfakeCurriculumEnv
from tsrl_env.augment import DEEPFAKEBENCH, augmented, deepfakebench_transform
from tsrl_env.config import EnvConfig
from tsrl_env.student import Student


def test_pretrained_file_round_trip_leaves_the_classifier_new(tmp_path):
    source = timm.create_model("test_resnet", num_classes=1000)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    student = Student.from_timm("test_resnet", EnvConfig(backbone="test_resnet", pretrained_file=str(path)).pretrained_weights)
    loaded = student.model.state_dict()
    for name, value in source.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(loaded[name], value), name
    assert loaded["fc.weight"].shape == (2, source.num_features)


def test_a_students_saved_weights_start_a_new_student_with_a_new_classifier(tmp_path):
    trained = Student.from_timm("test_resnet")
    torch.nn.init.constant_(trained.model.fc.weight, 0.5)
    path = tmp_path / "student.pt"
    torch.save(trained.state_dict(), path)  # as tsrl train saves it: the timm model under "model."
    loaded = Student.from_timm("test_resnet", str(path)).model.state_dict()
    for name, value in trained.model.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(loaded[name], value), name
    assert not torch.equal(loaded["fc.weight"], trained.model.fc.weight.detach()), "the classifier starts new"


def deepfakebench_xception(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's legacy_xception state dict as a DeepfakeBench detector saves it: ``backbone.`` keys, the head named
    ``last_linear``, pointwise convolutions stored as matrices."""
    renamed = {}
    for name, value in state.items():
        if name.startswith("fc."):
            name = "last_linear." + name.removeprefix("fc.")
        renamed[f"backbone.{name}"] = value.flatten(1) if "pointwise" in name else value
    return renamed


def test_deepfakebench_xception_key_names_are_mapped_to_timms(tmp_path):
    source = timm.create_model("legacy_xception", num_classes=2)
    path = tmp_path / "ckpt_best.pth"
    torch.save(deepfakebench_xception(source.state_dict()), path)
    loaded = Student.from_timm("legacy_xception", str(path)).model.state_dict()
    for name, value in source.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(loaded[name], value), name


def test_a_file_of_another_backbone_is_refused_naming_the_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(timm.create_model("resnet10t", num_classes=2).state_dict(), path)
    with pytest.raises(ValueError, match=r"do not fit the backbone ResNet: keys \d+ missing .* of another shape"):
        Student.from_timm("test_resnet", str(path))
    with pytest.raises(ValueError, match="pretrained .* and pretrained_file .* are both set; keep one"):
        EnvConfig(pretrained=True, pretrained_file=str(path))


def test_a_failed_download_says_how_to_use_a_local_file(monkeypatch):
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="cannot download timm's pretrained weights of 'test_resnet' .* pretrained_file: PATH"):
        Student.from_timm("test_resnet", True)


def test_the_lr_schedule_steps_over_every_epoch_and_resumes_from_a_checkpoint():
    settings = {**TINY_SETTINGS, "batch_size": 64, "lr": 0.01, "lr_schedule": {"step_epochs": 1, "gamma": 0.5}}

    def lr(env: DeepfakeCurriculumEnv) -> float:
        return env.trainer.optimizer.param_groups[0]["lr"]

    def finish_epoch(env: DeepfakeCurriculumEnv) -> dict:
        weights = np.full(env.batch_size, 0.5, np.float32)
        for _ in range(env.steps_per_epoch):
            _, _, _, _, info = env.step(weights)
        return info

    env = DeepfakeCurriculumEnv(**settings)
    env.reset(seed=0)
    state = torch.load(io.BytesIO(_saved(env.epoch_start_state())), weights_only=False)
    assert lr(env) == 0.005  # the Student's second epoch: one warm-up epoch came before
    finish_epoch(env)
    assert lr(env) == 0.0025
    expected = finish_epoch(env)["test"]

    resumed = DeepfakeCurriculumEnv(**settings)
    resumed.reset(options={"restore": state})
    assert lr(resumed) == 0.005
    finish_epoch(resumed)
    assert lr(resumed) == 0.0025 and finish_epoch(resumed)["test"] == expected


def _saved(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_deepfakebench_augmentations_are_fixed_by_the_seed_and_resume_exactly():
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    transform = deepfakebench_transform()
    assert torch.equal(augmented(image, 7, transform), augmented(image, 7, transform))
    assert len({augmented(image, seed, transform).sum().item() for seed in range(8)}) > 1

    settings = {**TINY_SETTINGS, "batch_size": 64, "augment": DEEPFAKEBENCH}
    env = DeepfakeCurriculumEnv(**settings)
    env.reset(seed=0)
    state = torch.load(io.BytesIO(_saved(env.epoch_start_state())), weights_only=False)
    weights = np.full(env.batch_size, 0.5, np.float32)
    first = [env.step(weights)[0] for _ in range(env.steps_per_epoch)]
    resumed = DeepfakeCurriculumEnv(**settings)
    observation, _ = resumed.reset(options={"restore": state})
    again = [resumed.step(weights)[0] for _ in range(resumed.steps_per_epoch)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    flips_only = DeepfakeCurriculumEnv(**{**settings, "augment": True})
    flips_only.reset(seed=0)
    assert not np.array_equal(flips_only.step(weights)[0], first[0])


def test_bf16_autocast_trains_and_resumes_and_auto_is_fp32_on_the_cpu():
    settings = {**TINY_SETTINGS, "batch_size": 64, "epochs": 1}
    weights = np.full(64, 0.5, np.float32)
    runs, states = {}, {}
    for precision in (None, "auto", "bf16"):
        env = DeepfakeCurriculumEnv(**settings, precision=precision)
        observation, _ = env.reset(seed=0)
        states[precision] = torch.load(io.BytesIO(_saved(env.epoch_start_state())), weights_only=False)
        runs[precision] = [observation, *(env.step(weights)[0] for _ in range(env.steps_per_epoch))]
    assert all(np.array_equal(a, b) for a, b in zip(runs[None], runs["auto"], strict=True))
    assert runs["bf16"][0].dtype == np.float32 and np.isfinite(runs["bf16"][-1]).all()
    assert not np.array_equal(runs["bf16"][-1], runs[None][-1])
    resumed = DeepfakeCurriculumEnv(**settings, precision="bf16")
    again = [resumed.reset(options={"restore": states["bf16"]})[0]]
    again += [resumed.step(weights)[0] for _ in range(resumed.steps_per_epoch)]
    assert all(np.array_equal(a, b) for a, b in zip(runs["bf16"], again, strict=True))
    with pytest.raises(ValueError, match="precision fp16 needs a CUDA device, and the device is cpu"):
        DeepfakeCurriculumEnv(**settings, precision="fp16", device="cpu")
