"""The val_alignment reward: batched head gradients against autograd, its sign on flipped labels, its bounds, and the
environment's trusted-batch pass."""

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from tsrl_env import TINY_SETTINGS, DeepfakeCurriculumEnv, EnvConfig
from tsrl_env.rewards import cross_entropy_errors, head_gradient, val_alignment_reward
from tsrl_env.student import Student


def _autograd_head_gradient(head: nn.Linear, features: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """One sample's cross-entropy gradient on ``head`` by autograd, weight then bias, flattened."""
    head.zero_grad()
    F.cross_entropy(head(features[None]), label[None]).backward()
    parts = [head.weight.grad.flatten()] + ([] if head.bias is None else [head.bias.grad])
    return torch.cat(parts)


@pytest.mark.parametrize("bias", [True, False])
def test_batched_alignment_equals_per_sample_autograd(bias):
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = nn.Linear(6, 3, bias=bias)
    features, trusted_features = torch.randn(10, 6, generator=generator), torch.randn(7, 6, generator=generator)
    labels, trusted_labels = torch.randint(3, (10,), generator=generator), torch.randint(3, (7,), generator=generator)
    weights = torch.rand(10, generator=generator)

    per_sample = torch.stack([_autograd_head_gradient(head, f, y) for f, y in zip(features, labels, strict=True)])
    trusted = torch.stack(
        [_autograd_head_gradient(head, f, y) for f, y in zip(trusted_features, trusted_labels, strict=True)]
    ).mean(0)
    expected_cosines = F.cosine_similarity(per_sample, trusted[None], dim=1)

    with torch.no_grad():
        errors = cross_entropy_errors(head(features).softmax(dim=1), labels)
        trusted_errors = cross_entropy_errors(head(trusted_features).softmax(dim=1), trusted_labels)
    trusted_gradient = head_gradient(trusted_errors, trusted_features, bias=bias)
    # Weight columns then the bias column: the autograd gradient's layout once the bias is moved next to its row.
    columns = 7 if bias else 6
    assert trusted_gradient.shape == (3, columns)
    autograd_matrix = trusted[:18].view(3, 6)
    if bias:
        autograd_matrix = torch.cat([autograd_matrix, trusted[18:, None]], dim=1)
    torch.testing.assert_close(trusted_gradient, autograd_matrix, atol=1e-6, rtol=1e-5)

    cosines = val_alignment_reward(errors, features, trusted_gradient, torch.ones(10))
    torch.testing.assert_close(cosines, expected_cosines, atol=1e-5, rtol=0)
    rewards = val_alignment_reward(errors, features, trusted_gradient, weights)
    torch.testing.assert_close(rewards, weights * expected_cosines, atol=1e-5, rtol=0)


def test_a_flipped_label_earns_less_than_its_clean_twin_on_a_student_that_separates_the_classes():
    # Features are the input of the head: class 1 lies at x > 0, class 0 at x < 0, and the head says so.
    student = Student(nn.Sequential(nn.Flatten(), nn.Linear(2, 2)), classifier_layer="1")
    with torch.no_grad():
        student.classifier.weight.copy_(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]))
        student.classifier.bias.zero_()
    generator = torch.Generator().manual_seed(1)
    trusted_labels = torch.arange(16) % 2
    trusted_inputs = torch.stack([2.0 * trusted_labels - 1.0, 0.3 * torch.randn(16, generator=generator)], dim=1)
    with torch.no_grad():
        logits, features = student(trusted_inputs)
        assert torch.equal(logits.argmax(dim=1), trusted_labels)
        trusted_gradient = head_gradient(cross_entropy_errors(logits.softmax(dim=1), trusted_labels), features)

        # The same fake-looking image, labelled fake (clean) and real (flipped), weighted alike.
        logits, features = student(torch.tensor([[0.8, 0.2], [0.8, 0.2]]))
        errors = cross_entropy_errors(logits.softmax(dim=1), torch.tensor([1, 0]))
    clean, flipped = val_alignment_reward(errors, features, trusted_gradient, torch.tensor([0.7, 0.7])).tolist()
    assert flipped < 0.0 < clean


def test_rewards_lie_in_minus_one_one_and_weight_zero_earns_zero():
    generator = torch.Generator().manual_seed(2)
    probabilities = torch.randn(64, 2, generator=generator).softmax(dim=1)
    errors = cross_entropy_errors(probabilities, torch.randint(2, (64,), generator=generator))
    features = 10.0 * torch.randn(64, 5, generator=generator)
    trusted_gradient = torch.randn(2, 6, generator=generator)
    weights = torch.rand(64, generator=generator)
    weights[::4] = 0.0
    rewards = val_alignment_reward(errors, features, trusted_gradient, weights)
    assert torch.all((rewards >= -1.0) & (rewards <= 1.0))
    assert torch.all(rewards[::4] == 0.0)
    # Each sample aligned with itself: the cosine is 1 up to rounding, and must not pass it.
    for i in range(4):
        own = head_gradient(errors[i : i + 1], features[i : i + 1])
        assert val_alignment_reward(errors[i : i + 1], features[i : i + 1], own, torch.ones(1)).item() == pytest.approx(1.0)
    # A zero gradient, of the sample or of the trusted batch, earns 0 rather than NaN.
    assert val_alignment_reward(torch.zeros(1, 2), features[:1], trusted_gradient, torch.ones(1)).item() == 0.0
    assert val_alignment_reward(errors[:1], features[:1], torch.zeros(2, 6), torch.ones(1)).item() == 0.0


def test_a_trusted_gradient_of_the_wrong_width_is_refused():
    message = r"trusted_gradient must have 6 columns .* or 5 \(no bias\) for 5 features, got shape \(2, 4\)"
    with pytest.raises(ValueError, match=message):
        val_alignment_reward(torch.zeros(3, 2), torch.zeros(3, 5), torch.zeros(2, 4), torch.ones(3))


def test_student_classifier_is_the_final_linear_layer_or_a_clear_error():
    timm_student = Student.from_timm("test_resnet")
    assert timm_student.classifier is timm_student.model.get_classifier()
    headless = Student(timm.create_model("test_resnet", num_classes=0))
    with pytest.raises(TypeError, match=r"the classifier of ResNet \(Identity\) is not an nn.Linear; pick a backbone"):
        headless.classifier  # noqa: B018 -- the property raises


@pytest.mark.parametrize(
    "value, error, message",
    [
        (0, ValueError, r"trusted_batch_size must be a positive integer, got 0"),
        ("32", TypeError, r"trusted_batch_size must be a positive integer, got '32' \(str\)"),
        (True, TypeError, r"trusted_batch_size must be a positive integer, got True \(bool\)"),
    ],
)
def test_a_bad_trusted_batch_size_is_refused(value, error, message):
    with pytest.raises(error, match=message):
        EnvConfig(reward="val_alignment", trusted_batch_size=value)


def test_a_trusted_batch_larger_than_the_validation_split_is_refused():
    val_size = TINY_SETTINGS["dataset_options"]["val_size"]
    message = rf"trusted_batch_size 65 exceeds the {val_size} validation samples of 'embedded'; set it to at most {val_size}"
    with pytest.raises(ValueError, match=message):
        DeepfakeCurriculumEnv(**TINY_SETTINGS, reward="val_alignment", trusted_batch_size=val_size + 1)


TRUSTED = 16  # not the batch size, so that the trusted forward is told apart from the training forward


@pytest.fixture(scope="module")
def alignment_env():
    return DeepfakeCurriculumEnv(**TINY_SETTINGS, reward="val_alignment", trusted_batch_size=TRUSTED)


def _passes_of_one_step(env: DeepfakeCurriculumEnv, action: np.ndarray) -> tuple[list, dict]:
    """The Student forwards (gradients on?, batch size) and the optimiser step of one step, in order, and its info."""
    passes: list = []
    forward = env.student.register_forward_hook(lambda module, args, out: passes.append((out[0].requires_grad, len(args[0]))))
    update = env.trainer.optimizer.register_step_post_hook(lambda optimizer, args, kwargs: passes.append("update"))
    try:
        info = env.step(action)[4]
    finally:
        forward.remove()
        update.remove()
    return passes, info


def test_val_alignment_step_forwards_the_trusted_batch_before_the_update_and_nothing_after(alignment_env):
    env = alignment_env
    env.reset(seed=0)
    action = np.linspace(0.0, 1.0, env.batch_size, dtype=np.float32)
    passes, info = _passes_of_one_step(env, action)
    # The trusted batch (no grad) before the update, then only the next batch's training forward.
    assert passes == [(False, TRUSTED), "update", (True, env.batch_size)]
    rewards = info["sample_rewards"]
    assert rewards.shape == (env.batch_size,) and np.all(np.isfinite(rewards))
    assert np.all(np.abs(rewards) <= 1.0) and rewards[0] == 0.0  # the first sample had weight 0
    assert np.any(rewards != 0.0)


def test_val_alignment_same_seed_same_rewards(alignment_env):
    env = alignment_env
    rng = np.random.default_rng(0)
    actions = [rng.uniform(size=env.batch_size).astype(np.float32) for _ in range(3)]

    def rewards(seed):
        env.reset(seed=seed)
        return [env.step(action)[4]["sample_rewards"] for action in actions]

    first, second, other = rewards(7), rewards(7), rewards(8)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_val_alignment_draws_its_trusted_batch_from_frame_files(tmp_path: Path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 40), ("test", 8)):
        for label in ("real", "fake"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    env = DeepfakeCurriculumEnv(
        dataset="folder",
        dataset_options={"root": str(tmp_path), "image_size": 32, "fake_type_folders": False, "val_fraction": 0.2},
        backbone="test_resnet",
        batch_size=16,
        epochs=1,
        warmup_epochs=0,
        num_workers=0,
        reward="val_alignment",
        trusted_batch_size=8,
    )
    assert not env.splits["val"].in_memory
    env.reset(seed=0)
    passes, info = _passes_of_one_step(env, np.ones(env.batch_size, np.float32))
    assert passes == [(False, 8), "update", (True, env.batch_size)]
    assert np.all(np.isfinite(info["sample_rewards"])) and np.all(np.abs(info["sample_rewards"]) <= 1.0)


def test_reward_breakdown_groups_every_paid_reward_by_epoch_label_and_noise(one_torch_thread):
    from experiments.studies.reward_breakdown import reward_breakdown

    options = {**TINY_SETTINGS["dataset_options"], "label_noise": 0.3}
    env = DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "dataset_options": options, "reward": "val_alignment"})
    rows = reward_breakdown(env, seed=0)
    assert [row[:3] for row in rows[:4]] == [
        ["0", "real", "clean"],
        ["0", "real", "flipped"],
        ["0", "fake", "clean"],
        ["0", "fake", "flipped"],
    ]
    assert sum(int(row[3]) for row in rows) == env.config.epochs * env.steps_per_epoch * env.batch_size
    assert all(-1.0 <= float(row[4]) <= 1.0 for row in rows if row[4] != "-")
