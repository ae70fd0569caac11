import numpy as np
import pytest
import torch
from helpers import SignBandit
from stable_baselines3 import SAC

from agents import TutorPPO, loss_rank_targets, make_tutor
from tsrl_env import TINY_SETTINGS, DeepfakeCurriculumEnv


def _weights(model, states: np.ndarray) -> np.ndarray:
    return model.predict(states, deterministic=True)[0].reshape(-1)


def test_tutor_ppo_learns_a_known_curriculum():
    model = TutorPPO(SignBandit(), learning_rate=1e-3, critic_learning_rate=1e-3, seed=0)
    states = np.zeros((64, 4), np.float32)
    states[:32, 0], states[32:, 0] = 0.5, -0.5
    before = _weights(model, states)
    model.learn(total_timesteps=16 * 8 * 40)
    after = _weights(model, states)
    assert abs(before[:32].mean() - before[32:].mean()) < 0.1
    assert after[:32].mean() - after[32:].mean() > 0.4
    assert after.min() >= 0.0 and after.max() <= 1.0


def test_tutor_ppo_uses_reference_settings_on_the_curriculum_env():
    env = DeepfakeCurriculumEnv(**TINY_SETTINGS)
    model = make_tutor("ppo", env, seed=0)
    assert isinstance(model, TutorPPO)
    assert model.n_steps == env.steps_per_epoch
    assert model.n_envs == env.batch_size
    assert model.n_epochs == 8 and model.ent_coef == 0.01 and model.vf_coef == 0.5
    initial = {name: p.detach().clone() for name, p in model.policy.named_parameters()}
    model.learn(total_timesteps=2 * env.steps_per_epoch * env.batch_size)
    assert model.num_timesteps == 2 * env.steps_per_epoch * env.batch_size
    changed = [name for name, p in model.policy.named_parameters() if not torch.equal(p, initial[name])]
    assert "action_net.weight" in changed and "value_net.weight" in changed
    assert "log_std" not in changed, "the Gaussian's standard deviation is fixed"
    learning_rates = [group["lr"] for group in model.policy.optimizer.param_groups]
    assert learning_rates == pytest.approx([1e-4, 3e-4])


def test_sac_swaps_in_on_the_same_env():
    env = DeepfakeCurriculumEnv(**TINY_SETTINGS)
    model = make_tutor("sac", env, seed=0, batch_size=64)
    assert isinstance(model, SAC)
    initial = [p.detach().clone() for p in model.actor.parameters()]
    model.learn(total_timesteps=10 * env.batch_size)
    assert model.num_timesteps == 10 * env.batch_size
    assert any(not torch.equal(p, q) for p, q in zip(model.actor.parameters(), initial, strict=False))
    weights = model.predict(np.zeros((3, env.observation_space.shape[1]), np.float32), deterministic=True)[0]
    assert weights.shape == (3, 1) and (weights >= 0).all() and (weights <= 1).all()


def test_behaviour_cloning_fits_targets_inside_the_unit_interval():
    model = TutorPPO(SignBandit(), seed=0)
    rng = np.random.default_rng(0)
    states = rng.uniform(-1, 1, (1024, 4)).astype(np.float32)
    targets = loss_rank_targets(states[:, 0])
    losses = model.pretrain_behaviour_cloning(states, targets, epochs=60)
    assert losses[-1] < 0.25 * losses[0]
    weights = _weights(model, states)
    assert weights[targets == 0.9].mean() - weights[targets == 0.3].mean() > 0.4
    with pytest.raises(ValueError, match=r"inside|lie in \[0, 1\]"):
        model.pretrain_behaviour_cloning(states, targets * 2.0)


def test_loss_rank_targets_follow_the_mean():
    assert loss_rank_targets(np.array([0.1, 0.2, 0.9])).tolist() == pytest.approx([0.3, 0.3, 0.9])


def test_unknown_tutor_names_the_accepted_ones():
    with pytest.raises(ValueError, match="unknown tutor 'dqn'; accepted: ppo, sac"):
        make_tutor("dqn", SignBandit())
