"""Learning to Reweight and Meta-Weight-Net as tutors: their meta-gradients against autograd through a literal
virtual step of the Student, of its head or of its last stage, and their weights, checkpoints and pairing."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp

from agents import make_tutor
from agents.meta_reweight import (
    head_step_alignment,
    last_stage_parameters,
    last_stage_step_alignment,
    student_step_alignment,
)
from tsrl_env import TINY_SETTINGS, DeepfakeCurriculumEnv
from tsrl_env.influence import per_sample_losses, trusted_alignment
from tsrl_env.student import Student

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def env() -> DeepfakeCurriculumEnv:
    options = {**TINY_SETTINGS["dataset_options"], "label_noise": 0.3}
    return DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "dataset_options": options})


def _trusted(env, size=16):
    return env.trainer.images_of("val", torch.arange(size)), env.splits["val"].labels[:size]


def _brute_force_alignment(student, parameters, batch, trusted_images, trusted_labels) -> torch.Tensor:
    """Each sample's loss gradient with respect to ``parameters`` alone, dotted with the mean trusted loss's, by
    autograd through the Student's own forward, one sample at a time."""
    with student.frozen_batch_statistics():
        trusted = torch.autograd.grad(F.cross_entropy(student(trusted_images)[0], trusted_labels), parameters)
        losses = F.cross_entropy(student(batch.images)[0], batch.labels, reduction="none")
        return torch.stack(
            [
                sum((a * b).sum() for a, b in zip(torch.autograd.grad(loss, parameters, retain_graph=True), trusted, strict=True))
                for loss in losses
            ]
        )


def _pending_batch(env, head_bias):
    """The batch awaiting weights of a new Student; without ``head_bias``, of that Student with its head's bias removed
    (the batch's forward done again, so that its probabilities and head inputs are those of the bias-free head)."""
    env.reset(seed=0)
    batch, student = env.pending_batch, env.student
    if head_bias:
        return batch
    student.classifier.register_parameter("bias", None)
    with torch.no_grad(), student.frozen_batch_statistics():
        logits, features = student(batch.images)
    return dataclasses.replace(batch, probabilities=logits.softmax(dim=1), features=features)


def _head_parameters(student):
    head = student.classifier
    return [p for p in (head.weight, head.bias) if p is not None]


def test_trusted_alignment_is_each_samples_gradient_dotted_with_the_trusted_gradient(env):
    env.reset(seed=0)
    batch, student = env.pending_batch, env.student
    trusted_images, trusted_labels = _trusted(env)
    alignment = trusted_alignment(student, batch.images, batch.labels, trusted_images, trusted_labels)
    params = dict(student.named_parameters())
    with student.frozen_batch_statistics():
        trusted = torch.autograd.grad(
            per_sample_losses(student, params, trusted_images, trusted_labels).mean(), list(params.values())
        )
        losses = per_sample_losses(student, params, batch.images, batch.labels)
        for i in range(4):
            own = torch.autograd.grad(losses[i], list(params.values()), retain_graph=True)
            expected = sum((a * b).sum() for a, b in zip(own, trusted, strict=True))
            assert float(alignment[i]) == pytest.approx(float(expected), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("head_bias", [True, False])
def test_head_alignment_is_each_samples_head_gradient_dotted_with_the_trusted_head_gradient(env, head_bias):
    batch = _pending_batch(env, head_bias)
    student = env.student
    trusted_images, trusted_labels = _trusted(env)
    alignment = head_step_alignment(env.trainer, batch, (trusted_images, trusted_labels))
    # Brute force: autograd through the whole Student's forward, each sample's gradient of the head's parameters alone.
    expected = _brute_force_alignment(student, _head_parameters(student), batch, trusted_images, trusted_labels)
    assert alignment.shape == (env.batch_size,) and (alignment > 0).any() and (alignment < 0).any()
    torch.testing.assert_close(alignment, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_the_last_stage_is_timms_last_feature_stage_and_everything_after_it(env):
    env.reset(seed=0)
    names = [name for name, _ in env.student.named_parameters()]
    moved = last_stage_parameters(env.student)
    assert env.student.model.feature_info[-1]["module"] == "layer4"
    assert moved == names[names.index("model.layer4.0.conv1.weight") :], "the stage's parameters and all after them"
    assert moved[-2:] == ["model.fc.weight", "model.fc.bias"] and 0 < len(moved) < len(names)


def test_last_stage_alignment_is_each_samples_last_stage_gradient_dotted_with_the_trusted_one(env):
    env.reset(seed=0)
    batch, student = env.pending_batch, env.student
    trusted_images, trusted_labels = _trusted(env)
    alignment = last_stage_step_alignment(env.trainer, batch, (trusted_images, trusted_labels))
    # Brute force: autograd through the Student's own forward, each sample's gradient of the last stage's parameters.
    moved = [p for name, p in student.named_parameters() if name in last_stage_parameters(student)]
    expected = _brute_force_alignment(student, moved, batch, trusted_images, trusted_labels)
    whole = trusted_alignment(student, batch.images, batch.labels, trusted_images, trusted_labels)
    assert not torch.allclose(alignment, whole, rtol=1e-3), "the backbone before the last stage is left out"
    torch.testing.assert_close(alignment, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_meta_weight_net_gradient_is_that_of_the_trusted_loss_after_a_virtual_step_of_the_last_stage(env):
    env.reset(seed=0)
    batch, student = env.pending_batch, env.student
    tutor = make_tutor("meta_weight_net", env, seed=0, virtual_step="last_stage")
    trusted_images, trusted_labels = _trusted(env, env.batch_size)
    # The meta-loss L(θ'(φ)) through a literal SGD step of the last stage's parameters, the others held, with autograd.
    network = dict(tutor.network.named_parameters())
    weights = functional_call(tutor.network, network, (batch.losses.detach().unsqueeze(1),)).squeeze(1)
    names = last_stage_parameters(student)
    moved = {name: p.detach().requires_grad_() for name, p in student.named_parameters() if name in names}
    held = {name: p.detach() for name, p in student.named_parameters() if name not in names}
    with student.frozen_batch_statistics():
        losses = per_sample_losses(student, moved, batch.images, batch.labels, held)
        step = torch.autograd.grad((weights * losses).mean(), list(moved.values()), create_graph=True)
        stepped = {name: p - env.config.lr * g for (name, p), g in zip(moved.items(), step, strict=True)}
        meta_loss = per_sample_losses(student, stepped, trusted_images, trusted_labels, held).mean()
    expected = torch.autograd.grad(meta_loss, list(network.values()))
    tutor.batch_weights(batch, (trusted_images, trusted_labels))
    for (name, p), g in zip(network.items(), expected, strict=True):
        assert g.abs().max() > 0, name
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-5 * float(g.abs().max()), msg=name)


def test_the_last_stage_needs_a_backbone_that_names_its_stages(env, monkeypatch):
    wrapped = Student(nn.Sequential(nn.Flatten(), nn.Linear(2, 2)), classifier_layer="1")
    with pytest.raises(ValueError, match="needs a timm backbone whose feature_info .* use virtual_step 'head' or 'student'"):
        last_stage_parameters(wrapped)
    monkeypatch.setattr(env.trainer, "student", wrapped)
    with pytest.raises(ValueError, match="feature_info"):
        make_tutor("meta_weight_net", env, virtual_step="last_stage")  # when the tutor is built, before any training


@pytest.mark.parametrize("weighted", [False, True])
def test_the_whole_student_virtual_step_is_bit_identical_to_the_plain_computation(env, weighted):
    env.reset(seed=0)
    batch, student = env.pending_batch, env.student
    trusted_images, trusted_labels = _trusted(env)
    step_weights = torch.rand(env.batch_size, generator=torch.Generator().manual_seed(0)) if weighted else None
    # The whole-Student computation written out: torch.func over every parameter, none held.
    params = {name: p.detach() for name, p in student.named_parameters()}
    buffers = dict(student.named_buffers())

    def losses(p, images, labels):
        return F.cross_entropy(functional_call(student, (p, buffers), (images,))[0], labels, reduction="none")

    with student.frozen_batch_statistics():
        trusted_at = params
        if weighted:
            step = grad(lambda p: (step_weights * losses(p, batch.images, batch.labels)).mean())(params)
            trusted_at = {name: p - env.config.lr * step[name] for name, p in params.items()}
        trusted = grad(lambda p: losses(p, trusted_images, trusted_labels).mean())(trusted_at)
        _, expected = jvp(lambda p: losses(p, batch.images, batch.labels), (params,), (trusted,))
    alignment = student_step_alignment(env.trainer, batch, (trusted_images, trusted_labels), step_weights)
    assert torch.equal(alignment, expected)


def test_the_whole_student_virtual_step_gives_the_exact_weights_of_before(env):
    env.reset(seed=0)
    batch = env.pending_batch
    trusted = _trusted(env)
    kept = trusted_alignment(env.student, batch.images, batch.labels, *trusted).clamp_min(0.0)
    weights = make_tutor("l2rw", env, seed=0, virtual_step="student").batch_weights(batch, trusted)
    assert torch.equal(weights, kept / kept.max())
    head = make_tutor("l2rw", env, seed=0, virtual_step="head").batch_weights(batch, trusted)
    assert not torch.equal(head, weights), "the head's step is another computation"


def test_l2rw_keeps_the_aligned_samples_scaled_to_at_most_one(env):
    tutor = make_tutor("l2rw", env, seed=0)
    states, _ = env.reset(seed=0)
    weights, _ = tutor.predict(states, deterministic=True)
    weights = weights.ravel()
    assert weights.shape == (env.batch_size,) and weights.min() >= 0 and weights.max() == pytest.approx(1.0)
    assert (weights == 0).any() and (weights > 0).sum() > 1, "samples whose step would raise the trusted loss get 0"


def test_meta_weight_net_steps_along_the_gradient_through_a_literal_virtual_step(env):
    tutor = make_tutor("meta_weight_net", env, seed=0, meta_lr=1e-2, virtual_step="student")
    env.reset(seed=0)
    batch, student = env.pending_batch, env.student
    trusted_images, trusted_labels = _trusted(env, env.batch_size)
    step_size = env.config.lr
    inputs = batch.losses.detach().float().unsqueeze(1)
    # The meta-loss L(θ'(φ)) differentiated through the virtual step with autograd, second order included.
    network_params = dict(tutor.network.named_parameters())
    params = {name: p.detach().requires_grad_() for name, p in student.named_parameters()}
    with student.frozen_batch_statistics():
        weights = functional_call(tutor.network, network_params, (inputs,)).squeeze(1)
        step = torch.autograd.grad(
            (weights * per_sample_losses(student, params, batch.images, batch.labels)).mean(),
            list(params.values()),
            create_graph=True,
        )
        virtual = {name: p - step_size * g for (name, p), g in zip(params.items(), step, strict=True)}
        meta_loss = per_sample_losses(student, virtual, trusted_images, trusted_labels).mean()
    expected = torch.autograd.grad(meta_loss, list(network_params.values()))
    before = {name: p.detach().clone() for name, p in network_params.items()}
    tutor._next_trusted_batch = lambda: (trusted_images, trusted_labels)
    tutor.batch_weights(batch, (trusted_images, trusted_labels))
    # Adam's first step moves each parameter by -lr * sign(gradient) (where the gradient is not negligible).
    for (name, p), g in zip(network_params.items(), expected, strict=True):
        moved = before[name] - p.detach()
        large = g.abs() > 1e-3 * g.abs().max()
        assert torch.equal(torch.sign(moved[large]), torch.sign(g[large])), name


@pytest.mark.parametrize("head_bias", [True, False])
def test_meta_weight_net_gradient_is_that_of_the_trusted_loss_after_a_virtual_step_of_the_head(env, head_bias):
    batch = _pending_batch(env, head_bias)
    student = env.student
    tutor = make_tutor("meta_weight_net", env, seed=0, virtual_step="head")
    trusted_images, trusted_labels = _trusted(env, env.batch_size)
    # The meta-loss L(W'(φ)) differentiated through a literal SGD step of the head with autograd.
    network = dict(tutor.network.named_parameters())
    weights = functional_call(tutor.network, network, (batch.losses.detach().unsqueeze(1),)).squeeze(1)
    head = [p.detach().requires_grad_() for p in _head_parameters(student)]
    losses = F.cross_entropy(F.linear(batch.features, *head), batch.labels, reduction="none")
    step = torch.autograd.grad((weights * losses).mean(), head, create_graph=True)
    stepped = [p - env.config.lr * g for p, g in zip(head, step, strict=True)]
    with torch.no_grad(), student.frozen_batch_statistics():
        _, trusted_features = student(trusted_images)
    meta_loss = F.cross_entropy(F.linear(trusted_features, *stepped), trusted_labels)
    expected = torch.autograd.grad(meta_loss, list(network.values()))
    tutor.batch_weights(batch, (trusted_images, trusted_labels))
    for (name, p), g in zip(network.items(), expected, strict=True):
        assert g.abs().max() > 0, name
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-5 * float(g.abs().max()), msg=name)


def test_meta_weight_net_resumes_exactly_from_its_checkpointed_state(env):
    tutor = make_tutor("meta_weight_net", env, seed=0)
    states, _ = env.reset(seed=0)
    for _ in range(2):
        states, *_ = env.step(tutor.predict(states)[0].ravel())
    resumed = make_tutor("meta_weight_net", env, seed=5)
    resumed.set_rng_state(tutor.rng_state())
    # The same trusted batch, the same meta step, the same weights.
    np.testing.assert_array_equal(resumed.predict(states)[0], tutor.predict(states)[0])


def test_meta_weight_net_takes_its_exact_meta_step_once_every_meta_interval_steps(env):
    env.reset(seed=0)
    batch, trusted = env.pending_batch, _trusted(env, env.batch_size)
    every_step = make_tutor("meta_weight_net", env, seed=0, meta_lr=1e-2)
    every_third = make_tutor("meta_weight_net", env, seed=0, meta_lr=1e-2, meta_interval=3)

    def network(tutor):
        return torch.cat([p.detach().flatten().clone() for p in tutor.network.parameters()])

    start = network(every_third)
    weights = [every_third.batch_weights(batch, trusted) for _ in range(6)]
    first = every_step.batch_weights(batch, trusted)
    # Step 0 is a meta step, the paper's: the same network after it, the same weights.
    torch.testing.assert_close(weights[0], first, rtol=0, atol=0)
    moved = [not torch.equal(a, b) for a, b in zip(weights, weights[1:], strict=False)]
    assert moved == [False, False, True, False, False], "the network moves at steps 0 and 3 only (0-based)"
    assert not torch.equal(network(every_third), start)
    resumed = make_tutor("meta_weight_net", env, seed=5, meta_lr=1e-2, meta_interval=3)
    resumed.set_rng_state(every_third.rng_state())
    torch.testing.assert_close(resumed.batch_weights(batch, trusted), every_third.batch_weights(batch, trusted), rtol=0, atol=0)
    assert resumed.steps_weighed == every_third.steps_weighed == 7
    with pytest.raises(ValueError, match="meta_interval a whole number >= 1"):
        make_tutor("meta_weight_net", env, meta_interval=0)


@pytest.mark.parametrize("name", ["l2rw", "meta_weight_net"])
def test_the_trusted_batch_size_is_a_setting(env, name):
    env.reset(seed=0)
    assert len(make_tutor(name, env, seed=0)._next_trusted_batch()[1]) == env.batch_size, "0, the default: the batch size"
    assert len(make_tutor(name, env, seed=0, trusted_batch=5)._next_trusted_batch()[1]) == 5
    everything = len(env.splits["val"])
    assert len(make_tutor(name, env, seed=0, trusted_batch=10 * everything)._next_trusted_batch()[1]) == everything
    with pytest.raises(ValueError, match="trusted_batch a whole number"):
        make_tutor(name, env, trusted_batch=2.5)


@pytest.mark.parametrize("name", ["l2rw", "meta_weight_net"])
def test_the_virtual_step_is_the_head_the_last_stage_or_the_whole_student(env, name):
    env.reset(seed=0)
    measured = {"l2rw": "head", "meta_weight_net": "student"}  # the defaults experiments.performance.meta_step chose
    assert make_tutor(name, env).params["virtual_step"] == measured[name]
    with pytest.raises(ValueError, match="virtual_step 'head' .*, 'last_stage' .* or 'student' .*, got 'backbone'"):
        make_tutor(name, env, virtual_step="backbone")


def test_the_trusted_batches_come_from_the_named_split_which_must_exist_and_not_be_a_test():
    options = {**TINY_SETTINGS["dataset_options"], "val_unseen_size": 32, "tiles": "fixed"}
    env = DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "dataset_options": options, "warmup_epochs": 0})
    tutor = make_tutor("l2rw", env, seed=3, trusted_split="val_unseen", trusted_batch=8)
    env.reset(seed=0)
    images, labels = tutor._next_trusted_batch()
    expected = torch.randperm(32, generator=torch.Generator().manual_seed(3))[:8]
    assert torch.equal(labels, env.splits["val_unseen"].labels[expected])
    assert torch.equal(images, env.trainer.images_of("val_unseen", expected))
    with pytest.raises(ValueError, match="val_unseen_size"):
        make_tutor("l2rw", DeepfakeCurriculumEnv(**TINY_SETTINGS), trusted_split="val_unseen")
    with pytest.raises(ValueError, match="no test uses"):
        make_tutor("l2rw", env, trusted_split="test_unseen")
