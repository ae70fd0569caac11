import gymnasium as gym
import numpy as np
import pytest

from agents import PerSampleSB3VecEnv
from tsrl_env import TINY_SETTINGS, DeepfakeCurriculumEnv, PerSampleGymnasiumVectorEnv


@pytest.fixture(scope="module")
def env():
    return DeepfakeCurriculumEnv(**TINY_SETTINGS)


def test_gymnasium_vector_view_has_one_sub_env_per_sample(env):
    view = PerSampleGymnasiumVectorEnv(env)
    batch, state_dim = env.observation_space.shape
    assert view.num_envs == batch
    assert view.single_observation_space.shape == (state_dim,)
    assert view.single_action_space.shape == (1,)
    states, _ = view.reset(seed=[3] * batch)
    assert states.shape == (batch, state_dim)
    next_states, rewards, terminations, truncations, infos = view.step(np.full((batch, 1), 0.7, np.float32))
    assert rewards.shape == (batch,) and rewards.dtype == np.float32
    assert terminations.all() and not truncations.any()
    np.testing.assert_array_equal(infos["final_obs"], states)
    np.testing.assert_array_equal(rewards, infos["batch"]["sample_rewards"])
    assert next_states.shape == states.shape


def test_vector_view_starts_a_new_student_when_the_episode_ends(env):
    view = PerSampleGymnasiumVectorEnv(env)
    view.reset(seed=0)
    total = env.config.epochs * env.steps_per_epoch
    for _ in range(total - 1):
        _, _, _, _, infos = view.step(np.ones(view.num_envs, np.float32))
        assert "reset" not in infos
    finished_by = env.student
    _, _, _, _, infos = view.step(np.ones(view.num_envs, np.float32))
    assert "test" in infos["batch"] and "reset" in infos
    assert env.finished_student is finished_by and env.student is not finished_by


def test_sb3_adapter_follows_the_vecenv_contract(env):
    venv = PerSampleSB3VecEnv(env)
    venv.seed(2)
    states = venv.reset()
    assert states.shape == (venv.num_envs, venv.observation_space.shape[0])
    assert venv.reset_infos[0]["warmup"]
    next_states, rewards, dones, infos = venv.step(np.full((venv.num_envs, 1), 0.5, np.float32))
    assert dones.all()
    assert len(infos) == venv.num_envs
    np.testing.assert_array_equal(np.stack([info["terminal_observation"] for info in infos]), states)
    assert infos[0]["epoch"] == 0 and infos[0]["sample_rewards"] is infos[1]["sample_rewards"]
    assert venv.get_attr("steps_per_epoch") == [env.steps_per_epoch] * venv.num_envs
    assert venv.env_is_wrapped(gym.Wrapper) == [False] * venv.num_envs


def test_without_autoreset_the_episode_end_keeps_the_student(env):
    view = PerSampleGymnasiumVectorEnv(env, autoreset=False)
    states, _ = view.reset(seed=0)
    for _ in range(env.config.epochs * env.steps_per_epoch):
        acted = states
        states, _, _, _, infos = view.step(np.ones(view.num_envs, np.float32))
    assert "reset" not in infos and "test" in infos["batch"]
    np.testing.assert_array_equal(states, acted)
    assert env.student is env.finished_student
    with pytest.raises(RuntimeError, match="reset"):
        view.step(np.ones(view.num_envs, np.float32))
