"""Hand-written curricula: fixed weighting rules from the literature, the baselines a learned tutor must beat.

Each rule reads state rows through the environment's :class:`tsrl_env.state.StateLayout` (EMA loss, the
probability of the training label, correctness) and may depend on ``progress``, the tutored epoch index over
the number of tutored epochs (0 in the first tutored epoch, ``(epochs - 1) / epochs`` in the last).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from sklearn.mixture import GaussianMixture
from stable_baselines3.common.vec_env import VecEnv

from tsrl_env.data import sources_that_know_their_flips
from tsrl_env.state import StateLayout
from tsrl_env.validation import did_you_mean

LN2 = math.log(2.0)
"""Cross-entropy of a binary classifier at chance (p = 0.5), and every sample's EMA loss before its first visit."""

MAX_NOISE_ESTIMATE = 0.5
"""The largest label-noise rate :func:`estimated_noise_rate` gives: past it a binary label is more often wrong than
right, which no loss can tell from the two classes swapped."""


class HeuristicTutor:
    """A fixed curriculum behind the tutor interface of Stable-Baselines3 models, so that baselines and learned
    tutors are built, run, saved and reloaded the same way (:func:`agents.make_tutor`, :func:`agents.load_tutor`).

    A subclass sets ``name`` and ``defaults`` (its parameters and their default values: numbers, or strings naming a
    choice) and implements :meth:`weights`; it may check its parameters in :meth:`_check_params`. ``predict`` reads the
    training progress from the environment the tutor was built on, a :class:`tsrl_env.DeepfakeCurriculumEnv` or an SB3
    ``VecEnv`` view of one. ``learn`` does nothing, since there is nothing to learn: the caller steps the
    environment with ``predict``'s weights. ``save`` writes the name, seed and parameters as JSON.
    """

    name: ClassVar[str]
    kind: ClassVar[str] = "heuristic"
    env_settings: ClassVar[dict[str, Any]] = {}
    defaults: ClassVar[dict[str, float | str]] = {}

    @classmethod
    def reads_label_noise(cls, params: Mapping[str, Any]) -> bool:
        """Whether this rule, with ``params``, reads which training labels are wrong or how many are: then only a
        dataset that knows them (``Dataset.knows_label_noise``) can run it."""
        return False

    def __init__(self, env: gym.Env | VecEnv, seed: int | None = None, **params: float | str) -> None:
        for key in params:
            if key not in self.defaults:
                hint = did_you_mean(key, self.defaults)
                accepted = ", ".join(self.defaults) or "none"
                raise TypeError(f"unknown parameter {key!r} of the {self.name!r} tutor{hint}; accepted: {accepted}")
        self.env = env
        self.layout: StateLayout = _env_attr(env, "state_layout")
        self.seed = seed
        self.params: dict[str, float | str] = {**self.defaults, **params}
        self.rng = np.random.default_rng(seed)
        self._check_params()

    def weights(self, states: np.ndarray, progress: float) -> np.ndarray:
        """One weight in [0, 1] per state row, at ``progress`` through the tutored epochs."""
        raise NotImplementedError

    def _check_params(self) -> None:
        """Raise a ValueError naming any parameter outside its range."""

    @property
    def progress(self) -> float:
        """The environment's tutored epoch index over its number of tutored epochs."""
        return _env_attr(self.env, "epoch") / _env_attr(self.env, "config").epochs

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """Weights for a batch of state rows, shape ``(B, 1)`` like an SB3 per-sample tutor's; ``state`` passes through."""
        states = np.asarray(observation, dtype=np.float32)
        width = self.layout.width
        if states.ndim != 2 or states.shape[1] != width:
            raise ValueError(f"observation must be a batch of state rows, shape (B, {width}), got {states.shape}")
        return self.weights(states, self.progress).astype(np.float32).reshape(-1, 1), state

    def learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int = 1,
        tb_log_name: str = "",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> HeuristicTutor:
        """Nothing to learn: returns the tutor unchanged."""
        return self

    def rng_state(self) -> dict[str, Any]:
        """The state of the tutor's random generator (only ``random`` draws from it), for a run checkpoint."""
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state

    def save(self, path: str | Path) -> None:
        """Write the tutor's name, seed and parameters to ``path`` as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"name": self.name, "seed": self.seed, "params": self.params}, indent=2))

    @classmethod
    def load(cls, path: str | Path, env: gym.Env | VecEnv | None = None) -> HeuristicTutor:
        """The tutor saved at ``path``, acting on ``env`` (required: the rules read state rows and epochs through it)."""
        if env is None:
            raise ValueError(f"the {cls.name!r} tutor reads state rows and epochs through its environment; pass env= to load it")
        saved = json.loads(Path(path).read_text())
        if saved.get("name") != cls.name:
            raise ValueError(f"{path} holds a {saved.get('name')!r} tutor, not {cls.name!r}; load it under that name")
        return cls(env, seed=saved["seed"], **saved["params"])


RULES: dict[str, type[HeuristicTutor]] = {}
"""Every tutor that weighs by a fixed rule (it learns nothing), by name: the classes :func:`register_rule` decorates
here, in :mod:`agents.meta_reweight`, :mod:`agents.noise_baselines` and :mod:`agents.generalisation`. ``agents``
makes each a tutor (:class:`agents.TutorSpec`) of its ``kind``, built with its ``env_settings``."""


def register_rule(cls: type[HeuristicTutor]) -> type[HeuristicTutor]:
    """Class decorator: register the :class:`HeuristicTutor` subclass ``cls`` under its ``name`` (as timm's
    ``register_model``); a second class of the same name is refused."""
    if cls.name in RULES:
        raise ValueError(f"a tutor rule named {cls.name!r} is registered already ({RULES[cls.name].__qualname__})")
    RULES[cls.name] = cls
    return cls


@register_rule
class Uniform(HeuristicTutor):
    """Weight 1 for every sample: plain training, as without a tutor."""

    name = "uniform"

    def weights(self, states: np.ndarray, progress: float) -> np.ndarray:
        return np.ones(len(states), np.float32)


@register_rule
class Constant(HeuristicTutor):
    """The same weight, ``weight``, for every sample: the control for a tutor's mean weight.

    The Student trains with Adam, which divides each step by a running average of squared gradients (beta2 = 0.999:
    a memory of about a thousand steps). After a warm-up at weight 1 that average still holds the warm-up's gradients,
    so a weight below 1 shrinks the steps of the tutored epochs more and more, a smaller learning rate in effect. A
    tutor whose weights average ``weight`` earns credit for the samples it picks only where it beats this row.
    """

    name = "constant"
    defaults = {"weight": 0.5}

    def _check_params(self) -> None:
        _check_fraction("constant weight", self.params["weight"])

    def weights(self, states: np.ndarray, progress: float) -> np.ndarray:
        return np.full(len(states), self.params["weight"], np.float32)


@register_rule
class RandomWeights(HeuristicTutor):
    """Weights drawn uniformly from [0, 1] with the tutor's seed: the control any learned tutor must beat.

    ``deterministic`` changes nothing: the draws are the policy.
    """

    name = "random"

    def weights(self, states: np.ndarray, progress: float) -> np.ndarray:
        return self.rng.random(len(states), dtype=np.float32)


@register_rule
class SelfPaced(HeuristicTutor):
    """Self-paced learning (Kumar, Packer & Koller, NeurIPS 2010): weight 1 where the EMA loss is below a
    threshold, else 0, the threshold rising over the tutored epochs so that harder samples join gradually.

    The threshold grows geometrically from ``start`` to ``end`` over the tutored epochs,
    ``start * (end / start) ** progress``, as SPL multiplies its threshold by a constant factor each iteration.
    ``start`` = ln 2 admits, in the first tutored epoch, the samples the Student fits better than chance (every
    EMA starts at ln 2, the cross-entropy at p = 0.5). ``end`` = 4 ln 2 makes the factor per epoch
    ``4 ** (1 / epochs)``, 1.26 for six epochs, close to SPL's 1.3; in the last epoch only samples whose EMA loss
    is near or above 4 ln 2 ≈ 2.8 (a label probability of about 0.06, most likely mislabelled) are still left out.
    """

    name = "self_paced"
    defaults = {"start": LN2, "end": 4 * LN2}

    def _check_params(self) -> None:
        start, end = self.params["start"], self.params["end"]
        if not 0 < start <= end:
            raise ValueError(
                f"self_paced needs EMA-loss thresholds 0 < start <= end (ln 2 = {LN2:.3f} is chance), got {start}, {end}"
            )

    def weights(self, states: np.ndarray, progress: float) -> np.ndarray:
        start, end = self.params["start"], self.params["end"]
        return (self.layout.ema_loss_of(states) < start * (end / start) ** progress).astype(np.float32)


@register_rule
class Focal(HeuristicTutor):
    """Focal weighting (Lin et al., ICCV 2017): ``(1 - p_y) ** gamma``, with ``p_y`` the Student's probability for
    the sample's training label, so well-fitted samples count little. ``gamma`` = 2 is the paper's choice."""

    name = "focal"
    defaults = {"gamma": 2.0}

    def _check_params(self) -> None:
        if self.params["gamma"] < 0:
            raise ValueError(f"focal gamma must be >= 0 (0 gives uniform weights, 2 is Lin et al.'s), got {self.params['gamma']}")

    def weights(self, states: np.ndarray, progress: float) -> np.ndarray:
        return (1.0 - self.layout.p_label_of(states)) ** self.params["gamma"]


@register_rule
class HardMining(HeuristicTutor):
    """Hard-example mining, as in OHEM (Shrivastava et al., CVPR 2016): weight 1 for the ``fraction`` of the
    batch with the highest EMA losses (rounded up), else 0. 0.5 keeps half the batch."""

    name = "hard_mining"
    defaults = {"fraction": 0.5}

    def _check_params(self) -> None:
        _check_fraction("hard_mining fraction", self.params["fraction"])

    def weights(self, states: np.ndarray, progress: float) -> np.ndarray:
        return _highest(self.layout.ema_loss_of(states), self.params["fraction"]).astype(np.float32)


@register_rule
class AntiNoise(HeuristicTutor):
    """Small-loss selection against label noise, in the spirit of Co-teaching (Han et al., NeurIPS 2018): weight 0
    for the batch's highest-EMA-loss fraction (rounded up, as Co-teaching keeps ``int((1 - rate) * B)``), else 1.

    The dropped fraction ramps linearly from 0 to ``forget_rate`` as ``progress`` goes from 0 to ``ramp``, then
    stays there, Co-teaching's schedule. ``forget_rate`` = 0.15 is the embedded benchmark's default label noise,
    Co-teaching's setting of the rate to the noise level. Co-teaching ramps over 10 of 200 epochs; here the
    Student has already trained its warm-up epochs uniformly and episodes are a few epochs long, so the ramp spans
    the first quarter of the tutored epochs (``ramp`` = 0.25).
    """

    name = "anti_noise"
    defaults = {"forget_rate": 0.15, "ramp": 0.25}

    def _check_params(self) -> None:
        _check_fraction("anti_noise forget_rate", self.params["forget_rate"])
        _check_fraction("anti_noise ramp", self.params["ramp"])

    def weights(self, states: np.ndarray, progress: float) -> np.ndarray:
        dropped = self.params["forget_rate"] * min(1.0, progress / self.params["ramp"])
        return 1.0 - _highest(self.layout.ema_loss_of(states), dropped).astype(np.float32)


@register_rule
class SmallLoss(HeuristicTutor):
    """Small-loss selection (Co-teaching, Han et al., NeurIPS 2018, with one network): weight 1 for the batch's
    ``1 - rate`` share of smallest losses (Co-teaching keeps ``int((1 - rate) * B)``), else 0.

    The loss is the cross-entropy of the forward that built the state, ``-log p_y``, Co-teaching's criterion
    (``anti_noise`` ranks the EMA loss instead). ``noise_rate`` is the rate: ``"known"`` (the default), the share of
    flipped training labels of a dataset that knows it, as Co-teaching takes the rate as given; a number in [0, 1); or
    ``"estimated"``, for data whose noise is unknown: :func:`estimated_noise_rate` of the EMA losses of every training
    sample visited, once, at the first tutored batch, so from the uniform warm-up (estimated again later, it would count
    the samples it drops, whose losses then grow, as noisy); a heavy tail of hard clean samples makes it overestimate.
    ``ramp_epochs`` > 0 is Co-teaching's schedule: the dropped share grows linearly from 0 in the first tutored epoch to
    the rate at tutored epoch ``ramp_epochs`` (their ``T_k``); 0, the default, drops the whole rate from the first
    tutored epoch, after the uniform warm-up.
    """

    name = "small_loss"
    defaults = {"noise_rate": "known", "ramp_epochs": 0.0}

    @classmethod
    def reads_label_noise(cls, params: Mapping[str, Any]) -> bool:
        return {**cls.defaults, **params}["noise_rate"] == "known"

    def __init__(self, env: gym.Env | VecEnv, seed: int | None = None, **params: float | str) -> None:
        super().__init__(env, seed, **params)
        self._estimated: float | None = None
        if self.params["noise_rate"] == "known":
            dataset = _env_attr(env, "dataset")
            if not dataset.knows_label_noise:
                raise ValueError(
                    f"small_loss noise_rate 'known' needs a dataset that knows its wrong labels, and {dataset.name!r} does "
                    "not; give the rate as a number or use 'estimated'"
                )
            self._known_rate = float(dataset.splits["train"].flipped.float().mean())

    def _check_params(self) -> None:
        rate, ramp = self.params["noise_rate"], self.params["ramp_epochs"]
        if rate not in ("known", "estimated") and not (_is_real(rate) and 0.0 <= rate < 1.0):
            raise ValueError(f"small_loss noise_rate must be a number in [0, 1), 'known' or 'estimated', got {rate!r}")
        if not (_is_real(ramp) and ramp >= 0 and ramp == int(ramp)):
            raise ValueError(f"small_loss ramp_epochs must be a whole number of tutored epochs >= 0 (0: no ramp), got {ramp!r}")

    @property
    def noise_rate(self) -> float:
        """The label-noise rate: given, known, or estimated at the first call (the first tutored batch)."""
        rate = self.params["noise_rate"]
        if rate == "known":
            return self._known_rate
        if rate != "estimated":
            return float(rate)
        if self._estimated is None:
            history = _env_attr(self.env, "history")
            self._estimated = estimated_noise_rate(history.ema_loss[history.visits > 0].cpu().numpy())
        return self._estimated

    def rng_state(self) -> dict[str, Any]:
        return {"generator": super().rng_state(), "estimated": self._estimated}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        super().set_rng_state(state["generator"])
        self._estimated = state["estimated"]

    def weights(self, states: np.ndarray, progress: float) -> np.ndarray:
        dropped = self.noise_rate
        ramp = self.params["ramp_epochs"]
        if ramp:
            dropped *= min(1.0, round(progress * _env_attr(self.env, "config").epochs) / ramp)
        losses = -np.log(np.clip(self.layout.p_label_of(states), 1e-12, 1.0))
        return 1.0 - _highest(losses, dropped).astype(np.float32)


@register_rule
class LabelNoiseOracle(HeuristicTutor):
    """Weight 0 on samples whose training label was flipped, 1 elsewhere: the ceiling of any curriculum that
    removes label noise, a reference row for every grid with label noise, never a tutor to deploy.

    It reads the truth from the training split (``Split.flipped``) and the ids of the batch awaiting weights from
    the environment (``batch_sample_ids``), never from an observation; no other tutor reads which labels are wrong
    (``small_loss`` at ``noise_rate: known`` reads how many are, ``aum_filter`` which rows are its threshold samples).
    A dataset that does not know which of its labels are wrong (the ``folder`` source's, ``Dataset.knows_label_noise``
    False) refuses it.
    """

    name = "oracle"

    @classmethod
    def reads_label_noise(cls, params: Mapping[str, Any]) -> bool:
        return True

    def __init__(self, env: gym.Env | VecEnv, seed: int | None = None, **params: float) -> None:
        super().__init__(env, seed, **params)
        dataset = _env_attr(env, "dataset")
        if not dataset.knows_label_noise:
            raise ValueError(
                f"the 'oracle' tutor needs to know which training labels are wrong, and dataset {dataset.name!r} "
                f"does not (only a source that flips labels itself does: {', '.join(sources_that_know_their_flips())}); "
                "drop 'oracle' from the tutors for this dataset"
            )
        self._flipped = dataset.splits["train"].flipped.numpy()

    def weights(self, states: np.ndarray, progress: float) -> np.ndarray:
        ids = _env_attr(self.env, "batch_sample_ids")
        if len(ids) != len(states):
            raise ValueError(f"the oracle weights the whole batch awaiting weights ({len(ids)} rows), got {len(states)} rows")
        return (~self._flipped[ids]).astype(np.float32)


def estimated_noise_rate(losses: np.ndarray) -> float:
    """The share of wrong labels among samples with these (EMA) losses: the weight of the higher-mean component of a
    two-component Gaussian mixture fitted to them, as DivideMix (Li, Socher & Hoi, ICLR 2020) models per-sample losses
    (scikit-learn, seeded), at most :data:`MAX_NOISE_ESTIMATE`; 0 when they do not differ."""
    if len(np.unique(losses)) < 2:
        return 0.0
    mixture = GaussianMixture(n_components=2, random_state=0).fit(np.asarray(losses, np.float64).reshape(-1, 1))
    return min(MAX_NOISE_ESTIMATE, float(mixture.weights_[np.argmax(mixture.means_[:, 0])]))


def _highest(values: np.ndarray, fraction: float) -> np.ndarray:
    """Mask of the ``ceil(fraction * len(values))`` largest values; ties go to the earlier rows."""
    count = math.ceil(fraction * len(values) - 1e-9)
    mask = np.zeros(len(values), dtype=bool)
    mask[np.argsort(-values, kind="stable")[:count]] = True
    return mask


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_fraction(what: str, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{what} must be a fraction in (0, 1], got {value}")


def _env_attr(env: gym.Env | VecEnv, name: str) -> Any:
    try:
        return env.get_attr(name)[0] if isinstance(env, VecEnv) else getattr(env.unwrapped, name)
    except AttributeError:
        raise TypeError(
            f"heuristic tutors read {name!r} from a DeepfakeCurriculumEnv or its per-sample VecEnv view, got {env}"
        ) from None
