"""Property tests: the per-sample history and the rewards on generated inputs, and a fuzz of the env's actions."""

from __future__ import annotations

import gc
import math
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tsrl_env import TINY_SETTINGS, DeepfakeCurriculumEnv
from tsrl_env.rewards import NextVisitLedger, next_visit_reward, tsrl_reference_reward, tsrl_reward
from tsrl_env.state import SampleHistory

PROPERTY_SETTINGS = settings(max_examples=30, deadline=None)

probabilities = st.floats(0.0, 1.0, width=32)


@st.composite
def visit_sequences(draw: st.DrawFn) -> tuple[int, float, list[tuple[list[int], list[float], list[bool]]]]:
    """A history size, an EMA alpha and visits: distinct ids per batch, with a loss and a correctness per id."""
    num_samples = draw(st.integers(1, 8))
    alpha = draw(st.floats(0.01, 1.0))
    visits = []
    for _ in range(draw(st.integers(1, 12))):
        ids = draw(st.lists(st.integers(0, num_samples - 1), min_size=1, max_size=num_samples, unique=True))
        losses = draw(st.lists(st.floats(0.0, 20.0, width=32), min_size=len(ids), max_size=len(ids)))
        correct = draw(st.lists(st.booleans(), min_size=len(ids), max_size=len(ids)))
        visits.append((ids, losses, correct))
    return num_samples, alpha, visits


@PROPERTY_SETTINGS
@given(visit_sequences())
def test_history_counters_never_decrease_and_the_ema_stays_within_the_losses_seen(case):
    num_samples, alpha, visits = case
    history = SampleHistory(num_samples, ema_alpha=alpha)
    low = [math.log(2.0)] * num_samples  # the EMA starts at ln 2, so it is bounded by ln 2 and the losses seen
    high = list(low)
    last_correct: dict[int, bool] = {}
    learned, forgotten = [0] * num_samples, [0] * num_samples
    for ids, losses, correct in visits:
        before = history.state_dict()
        history.observe(torch.tensor(ids), torch.tensor(losses), torch.tensor(correct))
        for name in ("learned", "forgotten", "visits"):
            assert torch.all(getattr(history, name) >= before[name]), f"{name} decreased"
        visited = torch.zeros(num_samples, dtype=torch.int32)
        visited[ids] = 1
        assert torch.equal(history.visits, before["visits"] + visited)
        for sample, loss, now in zip(ids, losses, correct, strict=True):
            low[sample], high[sample] = min(low[sample], loss), max(high[sample], loss)
            if sample in last_correct:
                learned[sample] += not last_correct[sample] and now
                forgotten[sample] += last_correct[sample] and not now
            last_correct[sample] = now
        ema = history.ema_loss.tolist()
        for sample in range(num_samples):
            slack = 1e-5 * (1.0 + high[sample])
            assert low[sample] - slack <= ema[sample] <= high[sample] + slack
    assert history.learned.tolist() == learned and history.forgotten.tolist() == forgotten
    assert all(abs(a - b) <= 1 for a, b in zip(learned, forgotten, strict=True)), "learning and forgetting alternate"


@PROPERTY_SETTINGS
@given(
    num_samples=st.integers(1, 8),
    ids=st.lists(st.integers(-20, 20), min_size=1, max_size=6),
)
def test_history_refuses_ids_outside_the_dataset_and_changes_nothing(num_samples, ids):
    assume(not all(0 <= sample < num_samples for sample in ids))
    history = SampleHistory(num_samples)
    history.observe(torch.arange(num_samples), torch.ones(num_samples), torch.ones(num_samples, dtype=torch.bool))
    before = history.state_dict()
    batch = (torch.tensor(ids), torch.zeros(len(ids)), torch.zeros(len(ids), dtype=torch.bool))
    with pytest.raises(IndexError, match=rf"sample ids must lie in \[0, {num_samples}\), got range \[{min(ids)}, {max(ids)}\]"):
        history.observe(*batch)
    after = history.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


@st.composite
def reward_batches(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    size = draw(st.integers(1, 16))
    columns = [
        draw(st.lists(probabilities, min_size=size, max_size=size)),
        draw(st.lists(probabilities, min_size=size, max_size=size)),
        draw(st.lists(st.booleans(), min_size=size, max_size=size)),
        draw(st.lists(st.booleans(), min_size=size, max_size=size)),
    ]
    return tuple(torch.tensor(column) for column in columns)


@PROPERTY_SETTINGS
@given(reward_batches())
def test_rewards_are_bounded_and_each_transition_has_its_sign(batch):
    p_before, p_after, correct_before, correct_after = batch
    progress = 0.5 * (p_after - p_before)
    learned = ~correct_before & correct_after
    forgot = correct_before & ~correct_after
    stayed_right = correct_before & correct_after
    stayed_wrong = ~correct_before & ~correct_after
    functions = {"tsrl": tsrl_reward, "tsrl_reference": tsrl_reference_reward, "next_visit": next_visit_reward}
    for name, reward_function in functions.items():
        reward = reward_function(p_before, p_after, correct_before, correct_after)
        assert reward.shape == p_before.shape
        assert torch.all((reward >= -1.0) & (reward <= 1.0)), name
        assert torch.all(reward[learned] == 1.0) and torch.all(reward[forgot] == -1.0)
        assert torch.equal(reward[stayed_right], progress[stayed_right]), "right→right pays the change of p(y)"
        still_wrong_sign = -1.0 if name == "tsrl_reference" else 1.0
        assert torch.equal(reward[stayed_wrong], still_wrong_sign * progress[stayed_wrong])
        assert torch.all(reward[stayed_right | stayed_wrong].abs() <= 0.5)


@PROPERTY_SETTINGS
@given(
    num_samples=st.integers(1, 6),
    visits=st.lists(st.tuples(st.integers(0, 5), probabilities, st.booleans()), min_size=1, max_size=20),
)
def test_next_visit_ledger_pays_nothing_first_and_stays_bounded(num_samples, visits):
    ledger = NextVisitLedger(num_samples)
    seen = set()
    for index, (sample, p_true, correct) in enumerate(visits):
        sample %= num_samples
        reward, paid, paid_weight = ledger.visit(
            torch.tensor([sample]), torch.tensor([p_true]), torch.tensor([correct]), torch.tensor([0.5]), torch.tensor([index])
        )
        if sample in seen:
            assert -1.0 <= reward.item() <= 1.0 and paid.item() >= 0 and paid_weight.item() == 0.5
        else:
            assert reward.item() == 0.0 and paid.item() == NextVisitLedger.NO_TRANSITION and math.isnan(paid_weight.item())
        seen.add(sample)


# The env under random valid and invalid actions: no crash, no leak, and a refused action takes no step.

FUZZ_EPISODES = 5


@pytest.fixture(scope="module")
def fuzz_env() -> DeepfakeCurriculumEnv:
    return DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "warmup_epochs": 0, "epochs": 3})


def _valid_action(rng: np.random.Generator, size: int) -> tuple[object, int]:
    """A random action the env accepts, and how many of its weights it must clip."""
    kind = rng.integers(6)
    if kind == 0:
        return rng.uniform(0.0, 1.0, size).astype(np.float32), 0
    if kind == 1:
        action = rng.uniform(-0.5, 1.5, size).astype(np.float32)
        return action, int(((action < 0) | (action > 1)).sum())
    if kind == 2:
        action = rng.choice([-1e30, 0.0, 0.3, 1.0, 1e30], size)
        return action, int((np.abs(action) == 1e30).sum())
    if kind == 3:
        action = rng.integers(-1, 3, size)
        return action, int(((action < 0) | (action > 1)).sum())
    if kind == 4:
        return rng.integers(0, 2, size).astype(bool), 0
    return rng.uniform(0.0, 1.0, size).tolist(), 0


def _invalid_action(rng: np.random.Generator, size: int) -> tuple[object, type[Exception]]:
    """A random action the env refuses, and the error it must raise."""
    kind = rng.integers(9)
    if kind in (0, 1):
        action = rng.uniform(0.0, 1.0, size)
        action[rng.integers(size)] = [np.nan, np.inf, -np.inf][rng.integers(3)]
        return action, ValueError
    if kind == 2:
        return rng.uniform(0.0, 1.0, size + int(rng.choice([-size, -1, 1, size]))), ValueError
    if kind == 3:
        return rng.uniform(0.0, 1.0, (size, 1)), ValueError
    if kind == 4:
        return float(rng.uniform()), ValueError
    if kind == 5:
        return [[0.5]] * (size - 1) + [[0.5, 0.5]], ValueError
    if kind == 6:
        return rng.uniform(0.0, 1.0, size) + 1j, TypeError
    if kind == 7:
        return np.array(["0.5"] * size), TypeError
    return np.array([None] * size), TypeError


def _live_tensors() -> int:
    return sum(1 for item in gc.get_objects() if issubclass(type(item), torch.Tensor))


@pytest.mark.slow
def test_env_survives_random_valid_and_invalid_actions_without_leaking(fuzz_env):
    env = fuzz_env
    rng = np.random.default_rng(0)
    size, steps_per_episode = env.batch_size, env.config.epochs * env.steps_per_epoch
    # Memory traced where the env allocates it: torch's and Python's own caches and free lists stay out of the count.
    where = [tracemalloc.Filter(True, "*/tsrl_env/*"), tracemalloc.Filter(True, __file__)]
    footprints = []
    tracemalloc.start()
    try:
        for episode in range(FUZZ_EPISODES):
            observation, _ = env.reset(seed=episode)
            gc.collect()
            footprints.append((_live_tensors(), sum(s.size for s in tracemalloc.take_snapshot().filter_traces(where).traces)))
            for step in range(steps_per_episode):
                while rng.uniform() < 0.5:
                    action, error = _invalid_action(rng, size)
                    with pytest.raises(error):
                        env.step(action)
                action, clipped = _valid_action(rng, size)
                next_observation, reward, terminated, truncated, info = env.step(action)
                assert (info["epoch"], info["step"]) == divmod(step, env.steps_per_epoch), "a refused action took no step"
                assert info["clipped_actions"] == clipped
                assert np.all((info["weights"] >= 0.0) & (info["weights"] <= 1.0))
                assert -1.0 <= reward <= 1.0 and np.all(np.abs(info["sample_rewards"]) <= 1.0)
                assert next_observation.shape == observation.shape and next_observation.dtype == np.float32
                assert np.all(np.isfinite(next_observation)) and not truncated
                assert terminated == (step == steps_per_episode - 1)
                observation = next_observation
            with pytest.raises(RuntimeError, match="call reset"):
                env.step(np.ones(size, np.float32))
    finally:
        tracemalloc.stop()
    # The first episode builds what every later one reuses; from the second on, nothing may accumulate.
    tensors, traced = zip(*footprints[1:], strict=True)
    assert len(set(tensors)) == 1, f"live tensors at episode starts: {tensors}"
    assert max(traced) - traced[0] < 4096, f"bytes the env holds at episode starts: {traced}"
