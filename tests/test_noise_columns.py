import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tsrl_env import TINY_SETTINGS, DeepfakeCurriculumEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COLUMNS = ("features", "ema_loss", "counters", "p_fake", "correctness", "area_under_margin", "knn_disagreement", "trusted_probe")


@pytest.fixture(scope="module")
def env() -> DeepfakeCurriculumEnv:
    options = {**TINY_SETTINGS["dataset_options"], "label_noise": 0.3}
    return DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "dataset_options": options, "state_columns": COLUMNS})


def test_knn_disagreement_is_the_share_of_neighbours_with_another_label(env):
    states, _ = env.reset(seed=0)
    for _ in range(3):
        states, *_ = env.step(np.ones(env.batch_size, np.float32))
    column = env.state_builder.columns["knn_disagreement"]
    ids = torch.as_tensor(env.batch_sample_ids)
    labels = env.splits["train"].labels
    # Brute force over the bank the column held when it built these rows (this batch's features are in it already).
    bank, seen = column.bank, column.seen.clone()
    expected = []
    for sample in ids.tolist():
        similarity = F.normalize(bank[sample : sample + 1], dim=1) @ bank.T
        similarity[0, ~seen] = -np.inf
        similarity[0, sample] = -np.inf
        neighbours = similarity[0].topk(column.k).indices
        expected.append(float((labels[neighbours] != labels[sample]).float().mean()))
    np.testing.assert_allclose(env.state_layout.values(states, "knn_disagreement"), expected, atol=1e-6)


def test_area_under_margin_averages_the_label_margin_over_visits(env):
    env.reset(seed=0)
    column = env.state_builder.columns["area_under_margin"]
    for _ in range(env.steps_per_epoch + 2):  # into the second tutored epoch
        states, *_ = env.step(np.ones(env.batch_size, np.float32))
    ids = torch.as_tensor(env.batch_sample_ids)
    assert (column.visits[ids] == 3).all(), "warm-up, first and second tutored epoch"
    np.testing.assert_allclose(
        env.state_layout.values(states, "area_under_margin"), torch.tanh(column.sums[ids] / 3 / 4).numpy(), atol=1e-6
    )
    # The margin of a binary softmax is log(p_label / (1 - p_label)): its mean over visits stays finite and signed.
    assert torch.isfinite(column.sums).all() and (column.sums < 0).any() and (column.sums > 0).any()


def test_noise_columns_restart_with_each_episode_and_checkpoint(env):
    env.reset(seed=0)
    env.step(np.ones(env.batch_size, np.float32))
    state = env.epoch_start_state()
    again = DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "dataset_options": env.config.dataset_options, "state_columns": COLUMNS})
    restored, _ = again.reset(options={"restore": state})
    original, _ = env.reset(options={"restore": state})
    np.testing.assert_array_equal(restored, original)
    env.reset(seed=1)  # a new Student: one warm-up visit of every sample, and the first tutored batch's
    visits = env.state_builder.columns["area_under_margin"].visits
    assert visits.min() == 1 and visits.max() == 2


def test_trusted_probe_is_the_fitted_logistic_regression_of_the_trusted_set(env):
    states, _ = env.reset(seed=0)
    probe = env.state_builder.columns["trusted_probe"]
    batch = env.pending_batch
    # The column is the probe's log-odds of each sample's own label, squashed.
    log_odds_fake = batch.features @ probe.weight + probe.bias
    signed = torch.where(batch.labels == 1, log_odds_fake, -log_odds_fake)
    np.testing.assert_allclose(env.state_layout.values(states, "trusted_probe"), torch.tanh(signed / 4).numpy(), atol=1e-5)
    # Refitted at this epoch's first batch, on the clean validation split: the regularised objective is at its minimum.
    features, labels = probe._trusted_features()
    mean, std = features.mean(dim=0), features.std(dim=0).clamp_min(1e-6)
    weight = (probe.weight * std).requires_grad_()
    bias = (probe.bias + (mean * probe.weight).sum()).requires_grad_()
    objective = (
        F.binary_cross_entropy_with_logits(((features - mean) / std) @ weight + bias, labels)
        + 0.5 * probe.l2 * weight.square().sum()
    )
    gradients = torch.autograd.grad(objective, [weight, bias])
    assert max(float(g.abs().max()) for g in gradients) < 1e-3
    assert env.splits["val"].flipped.sum() == 0, "the trusted set must be clean"


def test_noise_columns_leave_the_students_training_unchanged():
    """Columns only observe: a Student trained with uniform weights ends the same with or without them, so a tutor
    observing other columns is still paired with the uniform Student of its seed."""
    options = {**TINY_SETTINGS["dataset_options"], "label_noise": 0.3}
    finals = []
    for columns in (COLUMNS[:5], COLUMNS):
        env = DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "dataset_options": options, "state_columns": columns})
        env.reset(seed=3)
        terminated = False
        while not terminated:
            _, _, terminated, _, info = env.step(np.ones(env.batch_size, np.float32))
        finals.append((info["test"]["test_seen"]["auc"], [p.detach().clone() for p in env.finished_student.parameters()]))
    assert finals[0][0] == finals[1][0]
    for before, after in zip(finals[0][1], finals[1][1], strict=True):
        assert torch.equal(before, after)
