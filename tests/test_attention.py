import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

import tsrl_env  # noqa: F401  (registers DeepfakeCurriculumTiny-v0)
from agents.attention import AttentionPPO, SetAttentionPolicy, load_attention_tutor, make_attention_tutor
from agents.vec_env import BatchSB3VecEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class SignBatchEnv(gym.Env):
    """A batch environment with a known best curriculum: a row earns 1 when its weight is above 0.5 exactly when
    its first state value is positive, else 0; the step's reward is the batch mean."""

    steps_per_epoch = 64

    def __init__(self, batch_size: int = 8, state_dim: int = 4, episode_steps: int | None = None) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (batch_size, state_dim), np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, (batch_size,), np.float32)
        self.episode_steps = episode_steps
        self.resets = 0

    def _states(self) -> np.ndarray:
        self._obs = self.np_random.uniform(-1, 1, self.observation_space.shape).astype(np.float32)
        return self._obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.resets += 1
        self._step = 0
        return self._states(), {"resets": self.resets}

    def step(self, action):
        rewards = sign_rewards(self._obs, np.asarray(action))
        self._step += 1
        terminated = self.episode_steps is not None and self._step == self.episode_steps
        return self._states(), float(rewards.mean()), terminated, False, {"sample_rewards": rewards, "step": self._step}


def sign_rewards(states: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return ((weights > 0.5) == (states[..., 0] > 0)).astype(np.float32)


class InfoRecorder(BaseCallback):
    """Keeps the info SB3 hands to callbacks at each step."""

    def __init__(self) -> None:
        super().__init__()
        self.infos: list[dict] = []

    def _on_step(self) -> bool:
        self.infos.append(self.locals["infos"][0])
        return True


def _mean_reward(model: AttentionPPO, batches: np.ndarray) -> float:
    weights = np.stack([model.predict(states, deterministic=True)[0] for states in batches])
    return float(sign_rewards(batches, weights).mean())


def test_actor_is_permutation_equivariant_critic_invariant_and_rows_interact():
    policy = make_attention_tutor(SignBatchEnv(), seed=0).policy
    # Random parameters everywhere, so that the weights spread over [0, 1] and equality is not trivial.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
    states = torch.randn(3, 8, 4, generator=generator)
    order = torch.randperm(8, generator=generator)
    with torch.no_grad():
        weights = policy.mean_weight(states)
        assert weights.shape == (3, 8) and weights.std() > 0.05
        torch.testing.assert_close(policy.mean_weight(states[:, order]), weights[:, order], rtol=0, atol=1e-5)
        torch.testing.assert_close(policy.predict_values(states[:, order]), policy.predict_values(states), rtol=0, atol=1e-5)
        changed = states.clone()
        changed[:, 0] += 1.0
        assert (policy.mean_weight(changed)[:, 1:] - weights[:, 1:]).abs().max() > 1e-3, "a row's weight must see the batch"


def test_weights_one_per_sample_and_infos_reach_callbacks_on_the_tiny_env():
    env = gym.make("DeepfakeCurriculumTiny-v0")
    model = make_attention_tutor(env, seed=0)
    steps_per_epoch = env.unwrapped.steps_per_epoch
    batch_size, _ = env.observation_space.shape
    assert isinstance(model.policy, SetAttentionPolicy) and isinstance(model.get_env(), BatchSB3VecEnv)
    assert model.n_steps == steps_per_epoch and model.batch_size <= model.n_steps and model.gamma == 0.0

    recorder = InfoRecorder()
    episode = env.unwrapped.config.epochs * steps_per_epoch
    model.learn(total_timesteps=episode, callback=recorder)
    infos = recorder.infos
    assert len(infos) == episode and model.num_timesteps == episode
    assert all(info["sample_rewards"].shape == (batch_size,) and info["weights"].shape == (batch_size,) for info in infos)
    assert "val" in infos[steps_per_epoch - 1] and "test" in infos[-1]
    assert "terminal_observation" in infos[-1] and "terminal_observation" not in infos[-2]
    assert env.unwrapped.student is env.unwrapped.finished_student, "the view must not build a new Student at the end"

    states, _ = env.reset(seed=1)
    for deterministic in (True, False):
        weights, _ = model.predict(states, deterministic=deterministic)
        assert weights.shape == (batch_size,) and weights.min() >= 0.0 and weights.max() <= 1.0


def test_save_and_load_give_the_same_deterministic_weights(tmp_path):
    model = make_attention_tutor(SignBatchEnv(), seed=0)
    model.learn(total_timesteps=SignBatchEnv.steps_per_epoch)
    model.save(tmp_path / "tutor.zip")
    states = np.random.default_rng(0).uniform(-1, 1, (8, 4)).astype(np.float32)
    expected = model.predict(states, deterministic=True)[0]
    for env in (None, SignBatchEnv()):
        loaded = load_attention_tutor(tmp_path / "tutor.zip", env=env)
        assert isinstance(loaded, AttentionPPO) and isinstance(loaded.policy, SetAttentionPolicy)
        np.testing.assert_array_equal(loaded.predict(states, deterministic=True)[0], expected)
    assert isinstance(loaded.get_env(), BatchSB3VecEnv)


def test_batch_view_does_not_reset_when_the_episode_terminates():
    env = SignBatchEnv(episode_steps=3)
    venv = BatchSB3VecEnv(env)
    venv.seed(5)
    observation = venv.reset()
    assert observation.shape == (1, 8, 4) and venv.reset_infos == [{"resets": 1}]
    for step in range(1, 4):
        observation, rewards, dones, infos = venv.step(np.full((1, 8), 0.7, np.float32))
        assert rewards.shape == (1,) and infos[0]["step"] == step and infos[0]["sample_rewards"].shape == (8,)
        assert dones[0] == (step == 3)
    assert env.resets == 1
    np.testing.assert_array_equal(infos[0]["terminal_observation"], observation[0])
    assert infos[0]["TimeLimit.truncated"] is False
    with pytest.raises(RuntimeError, match=r"call reset\(\)"):
        venv.step(np.full((1, 8), 0.7, np.float32))
    venv.reset()
    assert env.resets == 2
    venv.step(np.full((1, 8), 0.7, np.float32))


@pytest.mark.slow
def test_learns_a_known_batch_curriculum():
    model = make_attention_tutor(SignBatchEnv(), seed=0)
    held_out = np.random.default_rng(1).uniform(-1, 1, (64, 8, 4)).astype(np.float32)
    before = _mean_reward(model, held_out)
    model.learn(total_timesteps=2048)
    after = _mean_reward(model, held_out)
    assert before < 0.65 and after > 0.9, (before, after)


def test_behaviour_cloning_takes_batches_of_states_and_weights():
    model = make_attention_tutor(SignBatchEnv(), seed=0)
    batches = np.random.default_rng(0).uniform(-1, 1, (256, 8, 4)).astype(np.float32)
    targets = np.where(batches[..., 0] > 0, 0.9, 0.3).astype(np.float32)
    losses = model.pretrain_behaviour_cloning(batches, targets, epochs=20, batch_size=32)
    assert losses[-1] < 0.25 * losses[0]
    assert _mean_reward(model, batches) > 0.9


def test_rejects_the_per_sample_view_with_a_hint():
    per_sample = SignBatchEnv()
    per_sample.observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    with pytest.raises(TypeError, match=r"2-D \(batch, state\) Box.*not its per-sample view"):
        make_attention_tutor(per_sample)
