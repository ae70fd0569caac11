"""Tutors: agents that choose the Student's per-sample loss weights.

Every tutor, learned or not, has Stable-Baselines3's interface: ``predict(observation, state=None,
episode_start=None, deterministic=False) -> (actions, state)`` on a batch of state rows ``(B, D)``, giving
``B`` weights in [0, 1] (shape ``(B, 1)``); ``learn(total_timesteps, callback=None, ...) -> self``; ``save(path)``.

``make_tutor(name, env, **kwargs)`` builds one by name and ``load_tutor(name, path, env)`` reloads a saved one;
``env`` is a :class:`tsrl_env.DeepfakeCurriculumEnv` or an SB3 ``VecEnv`` view of one. Learned tutors are SB3
algorithms acting through the per-sample view (:mod:`agents.zoo`, :mod:`agents.ppo`), or on whole batches
(:mod:`agents.attention`); heuristic curricula follow fixed rules (:mod:`agents.heuristics`). Under the ``next_visit``
reward (any reward that pays late), PPO and the off-policy tutors credit each reward to the earlier action it pays
(:mod:`agents.next_visit`). Saved tutors, taught by ``tsrl teach``, act frozen under their own names, those shipped in
``experiments/tutors`` included (:mod:`agents.saved`); ``make_env_for(name)`` builds an environment a tutor can act on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3 import A2C, DDPG, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents import generalisation, noise_baselines  # noqa: F401  (their rules register on import)
from agents.attention import AttentionPPO, load_attention_tutor, make_attention_tutor
from agents.heuristics import RULES, HeuristicTutor
from agents.meta_reweight import LearningToReweight, MetaWeightNet
from agents.next_visit import NextVisitReplayBuffer
from agents.ppo import SigmoidGaussianPolicy, TutorPPO, loss_rank_targets
from agents.saved import SavedTutor, TutorRegistry, shipped_tutors_directory
from agents.vec_env import BatchSB3VecEnv, PerSampleSB3VecEnv, as_per_sample_vec_env
from agents.zoo import make_a2c, make_ddpg, make_sac, make_td3
from tsrl_env import DeepfakeCurriculumEnv, EnvConfig
from tsrl_env.validation import registered


@dataclass(frozen=True)
class TutorSpec:
    """How to build and reload one kind of tutor.

    ``make(env, **kwargs)`` builds a tutor; ``load(path, env=None)`` reloads a saved one, ready to predict (and
    to learn further, if it learns); ``learns`` is False for fixed curricula. ``acts_on_batch`` is True for a
    tutor that learns from whole-batch observations instead of the per-sample view. ``env_settings`` are env
    settings the tutor needs (a taught tutor's state columns): the Student it teaches is trained under them. ``kind``
    says what it is in tables: ``learned``, ``learned, whole batch``, ``heuristic``, ``meta-gradient``, ``trusted data``
    or ``taught``.
    ``files`` are the files a saved tutor is read from (its ``.zip`` and ``.json``; none for a tutor defined in code):
    what a fingerprint hashes, so that a swapped file is a changed setting. ``reads_label_noise(tutor_kwargs)`` is True
    where the tutor, built with those keywords, reads which training labels are wrong or how many are (``oracle``;
    ``small_loss`` at ``noise_rate: known``): only a data source that knows them can run it.
    """

    make: Callable[..., Any]
    load: Callable[..., Any]
    learns: bool
    acts_on_batch: bool = False
    env_settings: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "learned"
    files: tuple[Path, ...] = ()
    reads_label_noise: Callable[[Mapping[str, Any]], bool] = lambda tutor_kwargs: False


def _load_sb3(algorithm: type[BaseAlgorithm], path: str | Path, env: gym.Env | VecEnv | None = None) -> BaseAlgorithm:
    return algorithm.load(path, env=as_per_sample_vec_env(env))


def _sb3(make: Callable[..., BaseAlgorithm], algorithm: type[BaseAlgorithm]) -> TutorSpec:
    return TutorSpec(make=make, load=partial(_load_sb3, algorithm), learns=True)


_BUILT_IN: dict[str, TutorSpec] = {
    "ppo": _sb3(TutorPPO, TutorPPO),
    "sac": _sb3(make_sac, SAC),
    "td3": _sb3(make_td3, TD3),
    "ddpg": _sb3(make_ddpg, DDPG),
    "a2c": _sb3(make_a2c, A2C),
    "attention": TutorSpec(
        make=make_attention_tutor, load=load_attention_tutor, learns=True, acts_on_batch=True, kind="learned, whole batch"
    ),
    **{
        name: TutorSpec(
            make=cls,
            load=cls.load,
            learns=False,
            env_settings=cls.env_settings,
            kind=cls.kind,
            reads_label_noise=cls.reads_label_noise,
        )
        for name, cls in RULES.items()
    },
}
TUTORS: TutorRegistry = TutorRegistry(_BUILT_IN)
"""Every tutor by name: those above, and the saved tutors shipped in ``experiments/tutors``, read at the first lookup
or listing (:mod:`agents.saved`)."""


def tutor_spec(name: str) -> TutorSpec:
    """The :class:`TutorSpec` registered as ``name``; an unknown name raises a ValueError listing the accepted ones."""
    return registered(TUTORS, name, "tutor")


def make_tutor(name: str, env: gym.Env | VecEnv, **kwargs: Any) -> Any:
    """The tutor registered as ``name``, acting on ``env``; keywords go to its constructor."""
    return tutor_spec(name).make(env, **kwargs)


def single_episode_view(name: str, env: gym.Env) -> gym.Env | VecEnv:
    """What the ``name`` tutor should learn on when the run is exactly one episode of the batch env ``env``.

    The view does not reset the environment when the episode ends: a reset would build and warm up a new
    Student that nobody trains. Batch tutors build such a view themselves; per-sample tutors get one here.
    """
    if tutor_spec(name).acts_on_batch:
        return env
    return PerSampleSB3VecEnv(env, autoreset=False)


def register_saved_tutor(name: str, path: str | Path) -> SavedTutor:
    """Register the tutor saved at ``path`` (a ``.zip``, with the ``.json`` that ``tsrl teach`` writes beside it) as
    ``name``: a tutor that acts frozen, on the state columns it was taught on (its one keyword, ``decision``, in
    :data:`agents.saved.DECISIONS`). The pair is checked first (see :func:`agents.saved.read_saved_tutor`); the name of
    a built-in tutor is refused."""
    return TUTORS.register_saved(name, path)


def load_saved_tutors(directory: str | Path) -> list[str]:
    """Register every saved tutor of ``directory`` (``NAME.zip`` with ``NAME.json``) as ``NAME``; returns their names.
    The tutors shipped in ``experiments/tutors`` are registered so without being asked, at the first lookup."""
    return TUTORS.load_saved(directory)


def saved_tutor_paths(name: str) -> tuple[Path, Path]:
    """The files of the saved tutor ``name``, its model (``.zip``) and its settings (``.json``): what decides how it
    weighs. A ValueError for a tutor that is not saved, or a broken one (naming its file)."""
    return TUTORS.saved(name).paths


def make_env_for(name: str, config: EnvConfig | None = None, **settings: Any) -> DeepfakeCurriculumEnv:
    """A curriculum environment the ``name`` tutor can act on: ``config`` (default settings when None) with ``settings``
    and the env settings the tutor needs (a saved tutor's state columns), e.g.
    ``make_tutor("noise_mentor", make_env_for("noise_mentor", **TINY_SETTINGS))``. A setting given that contradicts
    the tutor's is refused."""
    needed = tutor_spec(name).env_settings
    clashes = [key for key, value in settings.items() if key in needed and json.dumps(value) != json.dumps(needed[key])]
    if clashes:
        raise ValueError(
            f"the tutor {name!r} reads the state of the env settings {dict(needed)}; {', '.join(clashes)} cannot be "
            "given otherwise: leave them out"
        )
    return DeepfakeCurriculumEnv(config, **{**settings, **needed})


def load_tutor(name: str, path: str | Path, env: gym.Env | VecEnv | None = None) -> Any:
    """The ``name`` tutor saved at ``path``, acting on ``env`` (heuristic tutors need it, SB3 ones can predict without)."""
    return tutor_spec(name).load(path, env=env)


__all__ = [
    "RULES",
    "AttentionPPO",
    "BatchSB3VecEnv",
    "TUTORS",
    "HeuristicTutor",
    "LearningToReweight",
    "MetaWeightNet",
    "NextVisitReplayBuffer",
    "PerSampleSB3VecEnv",
    "SavedTutor",
    "SigmoidGaussianPolicy",
    "TutorPPO",
    "TutorRegistry",
    "TutorSpec",
    "load_saved_tutors",
    "load_tutor",
    "loss_rank_targets",
    "make_a2c",
    "make_attention_tutor",
    "make_ddpg",
    "make_sac",
    "make_env_for",
    "make_td3",
    "make_tutor",
    "register_saved_tutor",
    "saved_tutor_paths",
    "shipped_tutors_directory",
    "single_episode_view",
    "tutor_spec",
]
