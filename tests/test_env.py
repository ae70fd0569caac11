import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import tsrl_env
from experiments.config import load_run_config
from tsrl_env import TINY_SETTINGS, DeepfakeCurriculumEnv, EnvConfig
from tsrl_env.rewards import tsrl_reward


@pytest.fixture(scope="module")
def tiny_env():
    return DeepfakeCurriculumEnv(**TINY_SETTINGS)


# The demo-sized id skips its warm-up here: check_env resets several times, and the warm-up itself is
# exercised by the tiny id.
@pytest.mark.parametrize(
    "env_id, settings",
    [("DeepfakeCurriculumTiny-v0", {}), pytest.param("DeepfakeCurriculum-v0", {"warmup_epochs": 0}, marks=pytest.mark.slow)],
)
def test_check_env_passes(env_id, settings):
    env = gym.make(env_id, **settings)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.observation_space.shape[0] == env.action_space.shape[0] == env.unwrapped.batch_size


def test_full_tiny_episode(tiny_env):
    obs, info = tiny_env.reset(seed=1)
    assert obs.shape == tiny_env.observation_space.shape and obs.dtype == np.float32
    assert [record["epoch"] for record in info["warmup"]] == [0]
    steps, epoch_ends, terminated = 0, 0, False
    while not terminated:
        obs, reward, terminated, truncated, info = tiny_env.step(np.full(tiny_env.batch_size, 0.5, np.float32))
        steps += 1
        epoch_ends += "val" in info
        assert not truncated
        assert info["sample_rewards"].shape == (tiny_env.batch_size,)
        assert reward == pytest.approx(float(info["sample_rewards"].mean()))
        assert np.all(np.abs(info["sample_rewards"]) <= 1.0)
    assert steps == tiny_env.config.epochs * tiny_env.steps_per_epoch
    assert epoch_ends == tiny_env.config.epochs
    assert set(info["test"]) == {"test_seen", "test_unseen"}
    assert 0.0 <= info["test"]["test_unseen"]["auc"] <= 1.0
    assert "video_auc" in info["test"]["test_seen"]
    assert tiny_env.finished_student is not None
    with pytest.raises(RuntimeError, match="reset"):
        tiny_env.step(np.ones(tiny_env.batch_size, np.float32))


def test_same_seed_same_trajectory_different_seed_different(tiny_env):
    def trajectory(seed):
        obs, _ = tiny_env.reset(seed=seed)
        rewards = [tiny_env.step(np.ones(tiny_env.batch_size, np.float32))[1] for _ in range(3)]
        return obs, rewards

    obs_a, rewards_a = trajectory(4)
    obs_b, rewards_b = trajectory(4)
    obs_c, _ = trajectory(5)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert rewards_a == rewards_b
    assert not np.array_equal(obs_a, obs_c)


def _forward_passes_of_one_step(env) -> list[bool]:
    """Whether each Student forward run by one step after reset had gradients on, in order."""
    env.reset(seed=0)
    passes = []
    hook = env.student.register_forward_hook(lambda module, args, out: passes.append(out[0].requires_grad))
    try:
        env.step(np.ones(env.batch_size, np.float32))
    finally:
        hook.remove()
    return passes


def test_step_is_one_training_forward_and_one_no_grad_forward(tiny_env):
    # The after-update pass (no grad) and the next batch's training forward (with grad); nothing else.
    assert _forward_passes_of_one_step(tiny_env) == [False, True]


def test_without_rewards_a_step_is_the_training_forward_alone_and_trains_the_same_student():
    weights = np.random.default_rng(0).uniform(size=(64, TINY_SETTINGS["batch_size"])).astype(np.float32)

    def episode(compute_rewards):
        env = DeepfakeCurriculumEnv(compute_rewards=compute_rewards, **TINY_SETTINGS)
        observations = [env.reset(seed=2)[0]]
        rewards = []
        for action in weights[: env.steps_per_epoch * env.config.epochs]:
            observation, reward, terminated, _, info = env.step(action)
            observations.append(observation)
            rewards.append(info["sample_rewards"])
            if terminated:
                return env, observations, rewards, info["test"]
        raise AssertionError("the episode did not end within the weights given")

    with_rewards, observations, rewards, test = episode(True)
    without, skipped_observations, nan_rewards, skipped_test = episode(False)
    assert _forward_passes_of_one_step(without) == [True]
    for a, b in zip(observations, skipped_observations, strict=True):
        np.testing.assert_array_equal(a, b)
    assert test == skipped_test
    for name, value in with_rewards.finished_student.state_dict().items():
        torch.testing.assert_close(without.finished_student.state_dict()[name], value, rtol=0, atol=0)
    assert np.isnan(np.concatenate(nan_rewards)).all() and not np.isnan(np.concatenate(rewards)).any()


def test_out_of_range_weights_are_clipped_and_counted(tiny_env):
    tiny_env.reset(seed=0)
    action = np.full(tiny_env.batch_size, 0.5, np.float32)
    action[:3] = [-1.0, 2.0, 1.5]
    _, _, _, _, info = tiny_env.step(action)
    assert info["clipped_actions"] == 3
    assert info["mean_weight"] == pytest.approx((0.5 * (tiny_env.batch_size - 3) + 0.0 + 1.0 + 1.0) / tiny_env.batch_size)


@pytest.mark.parametrize(
    "action, error, message",
    [
        (np.ones(5, np.float32), ValueError, r"shape \(32,\)"),
        (np.ones((32, 1), np.float32), ValueError, r"shape \(32,\)"),
        (np.full(32, np.nan, np.float32), ValueError, "NaN or infinite"),
        (np.array(["a"] * 32), TypeError, "real numbers"),
    ],
)
def test_bad_actions_are_refused_clearly(tiny_env, action, error, message):
    tiny_env.reset(seed=0)
    with pytest.raises(error, match=message):
        tiny_env.step(action)


def test_bad_settings_name_the_problem_and_accepted_values():
    with pytest.raises(TypeError, match=r"unknown environment setting 'batchsize' \(did you mean 'batch_size'\?\)"):
        gym.make("DeepfakeCurriculumTiny-v0", batchsize=8)
    with pytest.raises(ValueError, match="unknown backbone 'resnet10'.*did you mean"):
        DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "backbone": "resnet10"})
    with pytest.raises(ValueError, match="unknown dataset 'ffpp'; accepted: embedded"):
        DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "dataset": "ffpp"})
    with pytest.raises(ValueError, match="unknown reward 'flips'; accepted: tsrl, tsrl_reference"):
        DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "reward": "flips"})
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "batch_size": 0})


def test_state_feature_dim_fixes_the_observation_width():
    env = DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "state_feature_dim": 8, "state_counters": ("learned", "forgotten")})
    assert env.observation_space.shape == (TINY_SETTINGS["batch_size"], 8 + 6)
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape


def test_registration_happens_on_import():
    assert "DeepfakeCurriculum-v0" in gym.registry and "DeepfakeCurriculumTiny-v0" in gym.registry
    assert tsrl_env.DeepfakeCurriculumEnv is DeepfakeCurriculumEnv


@pytest.fixture(scope="module")
def next_visit_env():
    return DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "reward": "next_visit"})


def test_next_visit_step_runs_no_forward_after_the_update(next_visit_env):
    # Only the next batch's training forward.
    assert _forward_passes_of_one_step(next_visit_env) == [True]


def test_next_visit_pays_each_action_at_its_sample_next_visit(next_visit_env):
    env = next_visit_env
    layout = env.state_layout
    states, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    given = {}  # sample id -> (epoch, step, slot, weight, p_label, correct) of its last tutored visit
    paid = 0
    terminated = False
    while not terminated:
        weights = rng.uniform(size=env.batch_size).astype(np.float32)
        next_states, reward, terminated, _, info = env.step(weights)
        ids, rewards, reward_for = info["sample_ids"], info["sample_rewards"], info["reward_for"]
        p_label, correct = layout.p_label_of(states), layout.correct_of(states)
        assert reward == pytest.approx(float(rewards.mean()))
        for slot, sample in enumerate(ids):
            if sample not in given:
                assert rewards[slot] == 0.0 and reward_for.epoch[slot] == reward_for.step[slot] == reward_for.slot[slot] == -1
                assert np.isnan(reward_for.weight[slot])
            else:
                epoch, step, old_slot, weight, p_before, correct_before = given[sample]
                assert (reward_for.epoch[slot], reward_for.step[slot], reward_for.slot[slot]) == (epoch, step, old_slot)
                assert reward_for.weight[slot] == pytest.approx(weight) and reward_for.reward[slot] == rewards[slot]
                expected = tsrl_reward(
                    torch.tensor([p_before]),
                    torch.tensor([p_label[slot]]),
                    torch.tensor([correct_before]),
                    torch.tensor([correct[slot]]),
                )
                assert rewards[slot] == pytest.approx(expected.item(), abs=1e-5)
                paid += 1
            given[sample] = (info["epoch"], info["step"], slot, weights[slot], p_label[slot], correct[slot])
        states = next_states
    # The first tutored epoch pays nothing; every later visit pays the previous one's action.
    assert paid == (env.config.epochs - 1) * env.steps_per_epoch * env.batch_size


def test_the_tiny_config_and_the_tiny_registered_env_are_one_setting():
    """``tsrl train --config tiny`` and ``gym.make("DeepfakeCurriculumTiny-v0")`` (``TINY_SETTINGS``) are said to be the
    same tiny Student; the YAML file and the dict are written apart, so this keeps them equal."""
    assert load_run_config("tiny").env == EnvConfig(**TINY_SETTINGS)
