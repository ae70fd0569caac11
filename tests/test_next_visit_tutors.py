"""Credit assignment of the next_visit reward: PPO trains one rollout late, off-policy tutors replay paid transitions."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

from agents import NextVisitReplayBuffer, TutorPPO, make_tutor, single_episode_view
from experiments.config import RunConfig
from experiments.records.student_run import StudentRun
from experiments.training.checkpoint import CHECKPOINT_NAME
from experiments.training.student import train_student
from tsrl_env import TINY_SETTINGS, DeepfakeCurriculumEnv, EnvConfig, LateCredit

# 240 training samples in batches of 32 leave a ragged last batch of 16 out of every epoch: some rows of the second
# epoch have no earlier action (transition -1) and some actions of the first are not paid in the second.
SETTINGS = {**TINY_SETTINGS, "dataset_options": {**TINY_SETTINGS["dataset_options"], "train_size": 240}}


def _env(reward: str) -> DeepfakeCurriculumEnv:
    return DeepfakeCurriculumEnv(**SETTINGS, reward=reward)


def _one_episode(env: DeepfakeCurriculumEnv) -> int:
    """Timesteps of one whole episode in the per-sample view."""
    return env.config.epochs * env.steps_per_epoch * env.batch_size


class _Recorder(BaseCallback):
    """Keeps every step's batch info, the n_updates at each rollout start, and the pending rollout at each rollout end."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[dict[str, Any]] = []
        self.updates_at_rollout_start: list[int] = []
        self.pending_at_rollout_end: list[tuple[int, np.ndarray, np.ndarray] | None] = []

    def _on_rollout_start(self) -> None:
        self.updates_at_rollout_start.append(self.model._n_updates)

    def _on_step(self) -> bool:
        self.steps.append(self.locals["infos"][0])
        return True

    def _on_rollout_end(self) -> None:
        pending = getattr(self.model, "pending_rollout", None)
        self.pending_at_rollout_end.append(
            None if pending is None else (pending.epoch, pending.rewards.copy(), pending.paid.copy())
        )


def _paid_rewards(steps: list[dict[str, Any]]) -> dict[tuple[int, int, int], float]:
    """Every reward the env paid, by the (epoch, step, slot) of the action it belongs to."""
    paid = {}
    for info in steps:
        credit = info["reward_for"].paid()
        for epoch, step, slot, reward in zip(credit.epoch, credit.step, credit.slot, credit.reward, strict=True):
            paid[(int(epoch), int(step), int(slot))] = float(reward)
    return paid


@pytest.fixture(scope="module")
def next_visit_env() -> DeepfakeCurriculumEnv:
    return _env("next_visit")


@pytest.fixture(scope="module")
def ppo_run(next_visit_env: DeepfakeCurriculumEnv) -> tuple[TutorPPO, _Recorder]:
    """A PPO tutor that learned for the whole two-epoch episode of the next_visit env, and what it saw."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the one_torch_thread fixture, which is per test
    try:
        model = make_tutor("ppo", single_episode_view("ppo", next_visit_env), seed=0)
        recorder = _Recorder()
        model.learn(_one_episode(next_visit_env), callback=recorder)
    finally:
        torch.set_num_threads(threads)
    return model, recorder


def test_ppo_detects_next_visit_and_first_rollout_trains_nothing(ppo_run):
    model, recorder = ppo_run
    assert model.next_visit
    assert recorder.updates_at_rollout_start == [0, 0], "the first rollout has no paid predecessor to train on"
    assert model._n_updates == model.n_epochs, "the second rollout trains on the first"
    epoch, _, paid = recorder.pending_at_rollout_end[1]
    assert epoch == 0
    # The last epoch's actions are never paid: its rollout still waits when the episode ends.
    assert model.pending_rollout.epoch == 1 and not model.pending_rollout.paid.any()


def test_ppo_trains_on_the_previous_rollout_with_the_rewards_paid_for_it(ppo_run, next_visit_env):
    model, recorder = ppo_run
    steps_per_epoch, batch_size = next_visit_env.steps_per_epoch, next_visit_env.batch_size
    expected = np.zeros((steps_per_epoch, batch_size), np.float32)
    expected_paid = np.zeros((steps_per_epoch, batch_size), bool)
    unpaid_rows, env_rows = 0, batch_size
    for info in recorder.steps[steps_per_epoch:]:  # the second epoch pays the first one's actions
        credit = info["reward_for"].paid()
        unpaid_rows += env_rows - len(credit.epoch)
        assert (credit.epoch == 0).all()
        expected[credit.step, credit.slot] = credit.reward
        expected_paid[credit.step, credit.slot] = True
    assert unpaid_rows > 0 and not expected_paid.all(), "the ragged dataset should exercise unpaid rows and actions"

    assert recorder.pending_at_rollout_end[0] is None
    _, rewards, paid = recorder.pending_at_rollout_end[1]
    np.testing.assert_array_equal(paid, expected_paid)
    np.testing.assert_array_equal(rewards, expected)

    # What PPO trained on: the paid transitions only, rewards standardised over them, advantage = reward - value.
    trained = model.rollout_buffer
    assert model.paid_transitions == trained.n_envs == expected_paid.sum()
    raw = expected[expected_paid]
    np.testing.assert_allclose(trained.rewards.reshape(-1), (raw - raw.mean()) / (raw.std() + 1e-8), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        trained.advantages.reshape(-1), trained.rewards.reshape(-1) - trained.values.reshape(-1), atol=1e-6
    )


def test_ppo_pending_rollout_survives_save_and_load(ppo_run, tmp_path):
    model, _ = ppo_run
    model.save(tmp_path / "tutor.zip")
    loaded = TutorPPO.load(tmp_path / "tutor.zip")
    assert loaded.next_visit
    np.testing.assert_array_equal(loaded.pending_rollout.observations, model.pending_rollout.observations)
    assert loaded.pending_rollout.epoch == model.pending_rollout.epoch


def test_ppo_refuses_a_rollout_that_is_not_one_epoch(next_visit_env):
    with pytest.raises(ValueError, match="one Student epoch"):
        TutorPPO(next_visit_env, n_steps=next_visit_env.steps_per_epoch - 1)


def test_attention_tutor_keeps_per_step_credit(next_visit_env):
    # Its one transition per batch is paid for many earlier batches at once: the per-sample late credit does not apply.
    assert not make_tutor("attention", next_visit_env, seed=0).next_visit


def test_sac_samples_only_paid_transitions_with_their_rewards(next_visit_env, one_torch_thread):
    model = make_tutor("sac", single_episode_view("sac", next_visit_env), seed=0, batch_size=64)
    buffer = model.replay_buffer
    assert isinstance(buffer, NextVisitReplayBuffer)
    assert model.learning_starts == next_visit_env.steps_per_epoch * next_visit_env.batch_size
    sampled = []
    samples_at = buffer.samples_at

    def recording_samples_at(positions: np.ndarray, slots: np.ndarray, env: Any = None) -> Any:
        assert buffer.paid[positions, slots].all(), "an unpaid transition was sampled"
        samples = samples_at(positions, slots, env)
        sampled.append((positions, slots, samples.rewards.cpu().numpy().reshape(-1)))
        return samples

    buffer.samples_at = recording_samples_at
    recorder = _Recorder()
    model.learn(_one_episode(next_visit_env), callback=recorder)

    paid = _paid_rewards(recorder.steps)
    assert sampled and len(paid) < next_visit_env.steps_per_epoch * next_visit_env.batch_size
    for positions, slots, rewards in sampled:
        # Two epochs fit in the buffer unwrapped, so a position is the episode's Student step index.
        epochs, steps = np.divmod(positions, next_visit_env.steps_per_epoch)
        expected = [paid[(epoch, step, slot)] for epoch, step, slot in zip(epochs, steps, slots, strict=True)]
        np.testing.assert_array_equal(rewards, np.array(expected, np.float32))
    # Unpaid transitions hold no reward: the rewards SB3 hands over with a step belong to earlier actions.
    assert not buffer.rewards[: buffer.pos][~buffer.paid[: buffer.pos]].any()


def _replay_buffer(steps: int) -> NextVisitReplayBuffer:
    """A replay buffer of ``steps`` Student steps of two rows each."""
    space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    return NextVisitReplayBuffer(2 * steps, space, space, device="cpu", n_envs=2)


def _add(buffer: NextVisitReplayBuffer, epoch: int, step: int, paid_for: list[tuple[int, int, int]]) -> None:
    """Store Student step (epoch, step), which pays ``10 * e + s + 1`` to each action (e, s, slot) of ``paid_for``."""
    columns = {name: np.full(2, -1) for name in ("epoch", "step", "slot")}
    rewards = np.zeros(2, np.float32)
    for row, (paid_epoch, paid_step, slot) in enumerate(paid_for):
        columns["epoch"][row], columns["step"][row], columns["slot"][row] = paid_epoch, paid_step, slot
        rewards[row] = 10 * paid_epoch + paid_step + 1
    reward_for = LateCredit(**columns, weight=np.full(2, np.nan, np.float32), reward=rewards)
    info = {"epoch": epoch, "step": step, "reward_for": reward_for, "sample_rewards": rewards}
    zeros = np.zeros((2, 1), np.float32)
    buffer.add(zeros, zeros, zeros, np.full(2, -5.0), np.ones(2), [info, info])


def test_replay_buffer_drops_rewards_of_overwritten_transitions():
    buffer = _replay_buffer(steps=2)
    _add(buffer, 0, 0, [])
    _add(buffer, 0, 1, [])
    _add(buffer, 1, 0, [(0, 0, 1), (0, 1, 0)])  # overwrites (0, 0) first: its reward is stale, (0, 1)'s is kept
    assert buffer.stale_rewards == 1
    assert buffer.paid.tolist() == [[False, False], [True, False]]
    assert buffer.rewards.tolist() == [[0.0, 0.0], [2.0, 0.0]], "a step's own rewards are not stored with it"
    with pytest.raises(RuntimeError, match="no paid transition"):
        _replay_buffer(steps=2).sample(3)


def test_replay_buffer_pays_the_newest_transition_of_a_reused_step():
    buffer = _replay_buffer(steps=3)
    _add(buffer, 0, 0, [])
    _add(buffer, 0, 1, [])
    _add(buffer, 0, 0, [])  # a new episode: (0, 0) is now at position 2
    _add(buffer, 0, 1, [])  # overwrites the old (0, 0) at position 0, which must not forget the new one
    _add(buffer, 1, 0, [(0, 0, 1)])
    assert buffer.stale_rewards == 0
    assert buffer.paid.tolist() == [[False, False], [False, False], [False, True]]
    assert buffer.rewards[2, 1] == 1.0


def _records(run: StudentRun) -> str:
    return json.dumps({"epochs": [asdict(record) for record in run.epochs], "test": run.test})


@pytest.mark.parametrize("tutor", ["ppo", "sac"])
def test_next_visit_runs_learn_and_resume_exactly_through_train_student(
    tutor, tmp_path, monkeypatch, written_checkpoints, one_torch_thread
):
    # Three epochs: the third pays some actions of the first (stale for PPO), and a checkpoint at an epoch start holds
    # PPO's rollout still awaiting its rewards.
    config = RunConfig(env=EnvConfig(**{**SETTINGS, "epochs": 3}, reward="next_visit"), tutor=tutor)
    whole = train_student(config, tmp_path / "whole", progress=False)
    monkeypatch.undo()
    copies = {payload["env"]["epoch"]: data for payload, data in written_checkpoints}
    assert sum(record.phase == "tutored" for record in whole.epochs) == 3
    for epoch in (1, 2):
        run_dir = tmp_path / f"from_{epoch}"
        (run_dir / tutor).mkdir(parents=True)
        (run_dir / tutor / CHECKPOINT_NAME).write_bytes(copies[epoch])
        resumed = train_student(config, run_dir, progress=False, resume=True)
        # Compared as JSON, where the warm-up epochs' NaN rewards are equal.
        assert _records(resumed) == _records(whole), f"resumed at tutored epoch {epoch}"
        ours, theirs = (torch.load(d / tutor / "student.pt", weights_only=True) for d in (run_dir, tmp_path / "whole"))
        assert all(torch.equal(ours[name], theirs[name]) for name in theirs), f"resumed at tutored epoch {epoch}"


class _StockTutorPPO(TutorPPO):
    """TutorPPO with SB3's own learning, rollout and training methods: what TutorPPO was before late credit."""

    _setup_model = PPO._setup_model
    learn = PPO.learn
    collect_rollouts = PPO.collect_rollouts
    train = PPO.train


def test_ppo_is_unchanged_under_other_rewards(one_torch_thread):
    parameters = []
    for cls in (TutorPPO, _StockTutorPPO):
        env = _env("tsrl")
        model = cls(single_episode_view("ppo", env), seed=0)
        assert not model.next_visit
        model.learn(_one_episode(env))
        assert model.pending_rollout is None and model._n_updates == 2 * model.n_epochs
        parameters.append([p.detach().clone() for p in model.policy.parameters()])
    for ours, stock in zip(*parameters, strict=True):
        torch.testing.assert_close(ours, stock, rtol=0, atol=0)
