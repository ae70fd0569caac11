import math

import numpy as np
import pytest
import torch
from helpers import LayoutEnv, SignBandit, rows
from stable_baselines3 import A2C, DDPG, TD3

from agents import RULES, TUTORS, HeuristicTutor, PerSampleSB3VecEnv, load_tutor, make_tutor, tutor_spec
from tsrl_env import TINY_SETTINGS, DeepfakeCurriculumEnv


def heuristic(name: str, **params) -> HeuristicTutor:
    return make_tutor(name, LayoutEnv(), **params)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_env() -> DeepfakeCurriculumEnv:
    return DeepfakeCurriculumEnv(**TINY_SETTINGS)


def test_uniform_and_random_weights():
    states = rows(ema_loss=np.full(5, 0.5))
    assert heuristic("uniform").weights(states, 0.5).tolist() == [1.0] * 5
    first, again, other = (heuristic("random", seed=s).weights(states, 0.0) for s in (3, 3, 4))
    assert first.tolist() == again.tolist() == np.random.default_rng(3).random(5, dtype=np.float32).tolist()
    assert first.tolist() != other.tolist()
    assert ((first >= 0) & (first <= 1)).all()


def test_constant_weight_is_the_same_for_every_sample_and_after_a_warm_up_shrinks_adams_steps():
    states = rows(ema_loss=np.array([0.1, 0.5, 3.0]))
    assert heuristic("constant", weight=0.25).weights(states, 0.7).tolist() == [0.25] * 3
    steps = {}
    for weight in (1.0, 0.1):
        env = DeepfakeCurriculumEnv(**TINY_SETTINGS)  # one warm-up epoch of 8 steps at weight 1
        env.reset(seed=0)
        steps[weight] = []
        for _ in range(env.steps_per_epoch):
            before = [parameter.detach().clone() for parameter in env.student.parameters()]
            env.step(np.full(env.batch_size, weight, np.float32))
            after = env.student.parameters()
            moved = [(parameter.detach() - old).flatten() for parameter, old in zip(after, before, strict=True)]
            steps[weight].append(torch.cat(moved).norm().item())
        env.close()
    # Adam's average of squared gradients still holds the warm-up's: a tenth of the loss takes shorter and shorter
    # steps than the full loss (measured: 0.92 of its length at the first tutored step, 0.63 at the eighth).
    ratio = np.array(steps[0.1]) / np.array(steps[1.0])
    assert ratio[0] < 1.0 and ratio[-1] < 0.7 and (np.diff(ratio) < 0).all()


def test_self_paced_threshold_rises_from_ln2_to_4ln2():
    states = rows(ema_loss=np.array([0.3, 0.69, 0.8, 1.5, 2.5, 2.9]))
    tutor = heuristic("self_paced")
    assert tutor.weights(states, 0.0).tolist() == [1, 1, 0, 0, 0, 0]  # threshold ln 2 = 0.693
    assert tutor.weights(states, 0.5).tolist() == [1, 1, 1, 0, 0, 0]  # 2 ln 2 = 1.386
    assert tutor.weights(states, 0.75).tolist() == [1, 1, 1, 1, 0, 0]  # 2^1.5 ln 2 = 1.96
    assert tutor.weights(states, 1.0).tolist() == [1, 1, 1, 1, 1, 0]  # 4 ln 2 = 2.77
    custom = heuristic("self_paced", start=1.0, end=1.0)
    assert custom.weights(states, 0.9).tolist() == [1, 1, 1, 0, 0, 0]


def test_focal_weights_follow_the_label_probability():
    # label probabilities: 0.9 (right, p_fake 0.9), 0.2 (wrong, p_fake 0.8), 0.7 (right, p_fake 0.3), 0.5
    states = rows(p_fake=np.array([0.9, 0.8, 0.3, 0.5]), correct=[True, False, True, False])
    assert heuristic("focal").weights(states, 0.0) == pytest.approx([0.01, 0.64, 0.09, 0.25], abs=1e-6)
    assert heuristic("focal", gamma=1.0).weights(states, 0.0) == pytest.approx([0.1, 0.8, 0.3, 0.5], abs=1e-6)
    assert heuristic("focal", gamma=0.0).weights(states, 0.0).tolist() == [1.0] * 4


def test_hard_mining_keeps_the_highest_losses():
    states = rows(ema_loss=np.array([0.2, 0.9, 0.5, 1.4, 0.7, 0.1]))
    assert heuristic("hard_mining").weights(states, 0.0).tolist() == [0, 1, 0, 1, 1, 0]
    assert heuristic("hard_mining", fraction=0.25).weights(states, 0.9).tolist() == [0, 1, 0, 1, 0, 0]  # ceil(1.5)
    assert heuristic("hard_mining", fraction=1.0).weights(states, 0.0).tolist() == [1] * 6
    ties = rows(ema_loss=np.array([0.5, 0.5, 0.5, 0.5]))
    assert heuristic("hard_mining").weights(ties, 0.0).tolist() == [1, 1, 0, 0]


def test_anti_noise_drops_a_ramping_fraction_of_the_highest_losses():
    ema = np.linspace(0.1, 2.0, 20)[::-1].copy()  # row i has the (i + 1)-th highest loss
    states = rows(ema_loss=ema)
    tutor = heuristic("anti_noise")  # forget rate 0.15, reached at progress 0.25

    def dropped(progress: float) -> list[int]:
        return np.flatnonzero(tutor.weights(states, progress) == 0).tolist()

    assert dropped(0.0) == []
    assert dropped(0.125) == [0, 1]  # 0.075 * 20 = 1.5, rounded up
    assert dropped(0.25) == [0, 1, 2]  # 0.15 * 20 = 3
    assert dropped(0.9) == [0, 1, 2]
    assert heuristic("anti_noise", forget_rate=0.5, ramp=1.0).weights(states, 0.5).sum() == 15


def test_predict_reads_progress_from_the_env_and_its_vec_view():
    states = rows(ema_loss=np.array([0.5, 1.0, 1.5, 2.0, 2.5, 3.0]))
    for epoch, expected in [(0, [1, 0, 0, 0, 0, 0]), (2, [1, 1, 0, 0, 0, 0]), (3, [1, 1, 1, 0, 0, 0])]:
        env = LayoutEnv(epoch=epoch, epochs=4)  # thresholds ln 2 * 4 ** (epoch / 4): 0.69, 1.39, 1.96
        for view in (env, PerSampleSB3VecEnv(env)):
            weights, state = make_tutor("self_paced", view).predict(states, state="kept")
            assert weights.dtype == np.float32 and weights.shape == (6, 1) and state == "kept"
            assert weights.reshape(-1).tolist() == expected
    with pytest.raises(ValueError, match=r"shape \(B, 9\)"):
        heuristic("uniform").predict(states[0])


def test_heuristic_parameter_errors_say_what_to_do():
    with pytest.raises(
        TypeError, match="unknown parameter 'gama' of the 'focal' tutor \\(did you mean 'gamma'\\?\\); accepted: gamma"
    ):
        heuristic("focal", gama=1.0)
    with pytest.raises(TypeError, match="accepted: none"):
        heuristic("uniform", gamma=1.0)
    with pytest.raises(ValueError, match=r"focal gamma must be >= 0"):
        heuristic("focal", gamma=-1.0)
    fractions = [("hard_mining", "fraction"), ("anti_noise", "forget_rate"), ("anti_noise", "ramp"), ("constant", "weight")]
    for name, param in fractions:
        for value in (0.0, 1.5):
            with pytest.raises(ValueError, match=rf"{param} must be a fraction in \(0, 1\], got {value}"):
                heuristic(name, **{param: value})
    with pytest.raises(ValueError, match="0 < start <= end"):
        heuristic("self_paced", start=1.0, end=0.5)
    with pytest.raises(TypeError, match="'state_layout' from a DeepfakeCurriculumEnv"):
        make_tutor("focal", SignBandit())


def test_every_tutor_acts_on_the_tiny_env_and_survives_save_and_load(tiny_env, tmp_path):
    assert set(RULES) <= set(TUTORS) and {"ppo", "sac", "td3", "ddpg", "a2c", "attention"} <= set(TUTORS)
    tiny_env.reset(seed=0)  # the oracle weights the batch the env has waiting
    states = np.random.default_rng(0).uniform(0, 1, tiny_env.observation_space.shape).astype(np.float32)
    for name, spec in TUTORS.items():
        if spec.env_settings:
            continue  # a taught tutor needs its own state columns: tests/test_teach.py
        tutor = make_tutor(name, tiny_env, seed=0)
        tutor.save(tmp_path / name)  # before predicting, so that the random tutor's draws start alike
        weights = tutor.predict(states, deterministic=True)[0]
        assert weights.size == tiny_env.batch_size, name
        assert (weights >= 0).all() and (weights <= 1).all(), name
        loaded = load_tutor(name, tmp_path / name, env=tiny_env)
        assert type(loaded) is type(tutor) and spec.learns == (name not in RULES)
        np.testing.assert_array_equal(loaded.predict(states, deterministic=True)[0], weights, err_msg=name)
        if spec.learns:
            assert loaded.get_env() is not None, f"a loaded {name} tutor can learn further"
        else:
            assert loaded.learn(total_timesteps=100) is loaded
    with pytest.raises(ValueError, match="pass env= to load it"):
        load_tutor("focal", tmp_path / "focal")
    with pytest.raises(ValueError, match="holds a 'focal' tutor, not 'uniform'"):
        load_tutor("uniform", tmp_path / "focal", env=tiny_env)


def test_unknown_tutor_names_the_accepted_ones():
    with pytest.raises(
        ValueError, match=r"unknown tutor 'td4' \(did you mean 'td3'\?\); accepted: ppo, sac, td3, ddpg, a2c, attention, uniform"
    ):
        make_tutor("td4", SignBandit())
    with pytest.raises(ValueError, match="unknown tutor 'dqn'; accepted: .*anti_noise"):
        load_tutor("dqn", "nowhere.zip")
    assert tutor_spec("ppo").learns and not tutor_spec("self_paced").learns
    with pytest.raises(ValueError, match="unknown tutor 'PPO' \\(did you mean 'ppo'\\?\\)"):
        tutor_spec("PPO")


@pytest.mark.parametrize("name, algorithm", [("td3", TD3), ("ddpg", DDPG), ("a2c", A2C)])
def test_sb3_tutor_learns_a_known_curriculum(name, algorithm):
    model = make_tutor(name, SignBandit(), seed=0)
    assert isinstance(model, algorithm)
    states = np.zeros((64, 4), np.float32)
    states[:32, 0], states[32:, 0] = 0.5, -0.5
    before = model.predict(states, deterministic=True)[0].reshape(-1)
    model.learn(total_timesteps=16 * 100)
    after = model.predict(states, deterministic=True)[0].reshape(-1)
    assert abs(before[:32].mean() - before[32:].mean()) < 0.1
    assert after[:32].mean() - after[32:].mean() > 0.5
    assert after.min() >= 0.0 and after.max() <= 1.0


def test_sb3_defaults_for_the_per_sample_setting():
    bandit = SignBandit()  # 16 samples per step, 8 steps per epoch
    td3 = make_tutor("td3", bandit)
    assert td3.learning_starts == 8 * 16 and td3.buffer_size == 4 * 8 * 16
    assert td3.action_noise._sigma.tolist() == [0.4]  # 0.2 weight units, on SB3's [-1, 1] action scale
    assert make_tutor("ddpg", bandit, action_std=0.1).action_noise._sigma.tolist() == [0.2]
    a2c = make_tutor("a2c", bandit)
    assert a2c.n_steps == 1 and a2c.normalize_advantage
    assert math.exp(a2c.policy.log_std.item()) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="action_std must be positive"):
        make_tutor("td3", bandit, action_std=0.0)
