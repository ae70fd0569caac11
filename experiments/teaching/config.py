"""What a tutor is taught on: the teaching config (:class:`TeachConfig`), read from a teaching YAML and checked whole
before any Student trains (see :mod:`experiments.teaching.teach` for the recipe)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from agents import TUTORS, tutor_spec
from experiments.config import RunConfig, check_pretrain_setting, plain, read_yaml_config
from experiments.preflight import check_run_settings
from experiments.protocol import check_dataset, check_student_seeds, protocol_named
from tsrl_env.config import EnvConfig, reject_unknown_keys
from tsrl_env.data.label_noise import noise_model
from tsrl_env.validation import integer_setting, real_setting, shown

FIRST_TEACHING_SEED = 1000
"""Teaching Students take seeds from here up; evaluation grids use seeds below it."""

IMITATION_DEFAULTS: dict[str, Any] = {"epochs": 10, "batch_size": 512, "learning_rate": 1e-3}
"""The behavioural-cloning settings of each round; an ``imitation`` mapping gives any of them."""


@dataclass(frozen=True)
class TeachConfig:
    """What a tutor is taught on: the Students' env (``env``; its ``state_columns`` are what the tutor observes), the
    label noise of successive Students (cycled), the first teaching seed, the tutor and its keywords, and the
    behavioural-cloning settings (``imitation``: ``epochs``, ``batch_size``, ``learning_rate`` of each round, each
    defaulting to :data:`IMITATION_DEFAULTS`). ``paired`` (true or false) trains a uniform-weight Student at every
    teaching seed too, for the paired gain of the curve. ``noise_models`` (empty: the env's own) are cycled with the
    label noise, every model at one noise level before the next level. ``protocol`` names the evaluation protocol
    the teaching keeps (:mod:`experiments.protocol`): under ``v1`` each Student trains on a dataset of its own, its
    content seed and flip seed both its Student seed, all teaching seeds. ``teacher`` names the tutor whose weights are
    imitated, one that does not learn (default ``oracle``: weight 0 on flipped labels), built with ``teacher_kwargs``
    (e.g. ``l2rw`` with ``{trusted_split: val_unseen}``, the generalisation oracle). ``pretrain`` names the run config
    that builds ``env.pretrained_file`` before the first Student where it is missing. Every setting is checked here: a
    wrong type raises a TypeError, a value out of range a ValueError, each naming the setting."""

    env: EnvConfig = field(default_factory=EnvConfig)
    label_noise: tuple[float, ...] = (0.30, 0.15, 0.45, 0.0)
    first_seed: int = FIRST_TEACHING_SEED
    tutor: str = "ppo"
    tutor_kwargs: dict[str, Any] = field(default_factory=dict)
    imitation: dict[str, Any] = field(default_factory=lambda: dict(IMITATION_DEFAULTS))
    paired: bool = True
    noise_models: tuple[str, ...] = ()
    protocol: str | None = None
    teacher: str = "oracle"
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)
    pretrain: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.env, EnvConfig):
            raise TypeError(f"env must be a mapping of environment settings, got {shown(self.env)}")
        if isinstance(self.label_noise, (str, bytes)) or not isinstance(self.label_noise, (list, tuple)) or not self.label_noise:
            raise TypeError(f"label_noise must list noise levels in [0, 1), e.g. [0.3, 0.0], got {shown(self.label_noise)}")
        noise = tuple(real_setting("label_noise", level) for level in self.label_noise)
        if not all(0.0 <= level < 1.0 for level in noise):
            raise ValueError(f"label_noise must list noise levels in [0, 1), got {list(noise)}")
        object.__setattr__(self, "label_noise", noise)
        object.__setattr__(self, "first_seed", integer_setting("first_seed", self.first_seed, 0))
        if self.first_seed < FIRST_TEACHING_SEED:
            raise ValueError(
                f"teaching seeds must start at {FIRST_TEACHING_SEED} or above, disjoint from the evaluation seeds of the "
                f"benchmark configs, got first_seed {self.first_seed}"
            )
        _check_teachable(self.tutor)
        check_pretrain_setting(self.pretrain, self.env)
        if not isinstance(self.tutor_kwargs, dict):
            raise TypeError(f"tutor_kwargs must be a mapping of the tutor's keyword arguments, got {shown(self.tutor_kwargs)}")
        object.__setattr__(self, "imitation", _imitation_settings(self.imitation))
        if not isinstance(self.paired, bool):
            raise TypeError(f"paired must be true or false, got {shown(self.paired)}")
        if isinstance(self.noise_models, str) or not isinstance(self.noise_models, (list, tuple)):
            example = "[video, class_conditional]"
            raise TypeError(f"noise_models must list label-noise models, e.g. {example}, got {shown(self.noise_models)}")
        for model in self.noise_models:
            noise_model(model)  # an unknown name is refused with a did-you-mean
        object.__setattr__(self, "noise_models", tuple(self.noise_models))
        protocol_named(self.protocol)
        if not isinstance(self.teacher, str) or tutor_spec(self.teacher).learns:
            raise ValueError(
                f"the teacher must name a tutor that does not learn (its weights are the targets), got {shown(self.teacher)}"
            )
        if not isinstance(self.teacher_kwargs, dict):
            raise TypeError(
                f"teacher_kwargs must be a mapping of the teacher's keyword arguments, got {shown(self.teacher_kwargs)}"
            )

    def student_env(self, index: int) -> EnvConfig:
        """The env of the ``index``-th teaching Student (0-based): its seed, label noise and noise model, and under a
        protocol its own dataset."""
        models = self.noise_models or (None,)
        conditions = [(noise, model) for noise in self.label_noise for model in models]
        noise, model = conditions[index % len(conditions)]
        seed = self.first_seed + index
        options = {**self.env.dataset_options, "label_noise": noise}
        if model is not None:
            options["noise_model"] = model
        if self.protocol is not None:
            options |= {"seed": seed, "noise_seed": seed}
        return self.env.replace(seed=seed, dataset_options=options)

    def check_protocol(self, students: int) -> None:
        """Refuse teaching Students whose seeds or data break the protocol (none without one)."""
        protocol = protocol_named(self.protocol)
        if protocol is None:
            return
        seeds = [self.first_seed + index for index in range(students)]
        check_student_seeds(protocol, "teaching", seeds, "the teaching config")
        for index in range(students):
            where = f"the teaching config (Student {index})"
            check_dataset(protocol, "teaching", self.student_env(index), where, self.pretrain)

    def to_dict(self) -> dict[str, Any]:
        settings = plain({**asdict(self), "env": self.env.to_dict()})
        del settings["pretrain"]  # how the weights file is built; the Students are what it holds
        # Left out at their defaults, so that the records of teaching runs from before they existed still match.
        for key, default in (("noise_models", []), ("protocol", None), ("teacher", "oracle"), ("teacher_kwargs", {})):
            if settings[key] == default:
                del settings[key]
        return settings


def _check_teachable(tutor: Any) -> None:
    """Refuse a tutor that imitation cannot teach: only a tutor that learns per sample and has a behavioural-cloning
    step (``pretrain_behaviour_cloning``) can be."""
    if not isinstance(tutor, str):
        raise TypeError(f"tutor must be a tutor name, got {shown(tutor)}")
    teachable = [
        name
        for name, spec in TUTORS.items()
        if spec.learns and not spec.acts_on_batch and callable(getattr(spec.make, "pretrain_behaviour_cloning", None))
    ]
    if tutor not in teachable:
        tutor_spec(tutor)  # an unknown name is refused with a did-you-mean
        raise ValueError(
            f"the tutor {tutor!r} cannot be taught: teaching clones the teacher's weights into a tutor that learns per "
            f"sample through its behavioural-cloning step; tutors that have one: {', '.join(teachable)}"
        )


def _imitation_settings(given: Any) -> dict[str, Any]:
    """The behavioural-cloning settings ``given`` (a mapping of any of :data:`IMITATION_DEFAULTS`' keys), checked and
    completed with the defaults."""
    if not isinstance(given, dict):
        raise TypeError(f"imitation must be a mapping such as {IMITATION_DEFAULTS}, got {shown(given)}")
    reject_unknown_keys(given, list(IMITATION_DEFAULTS), "imitation setting")
    settings = {**IMITATION_DEFAULTS, **given}
    learning_rate = real_setting("imitation learning_rate", settings["learning_rate"])
    if learning_rate <= 0:
        raise ValueError(f"imitation learning_rate must be a positive number, got {learning_rate}")
    return {
        "epochs": integer_setting("imitation epochs", settings["epochs"], 1),
        "batch_size": integer_setting("imitation batch_size", settings["batch_size"], 1),
        "learning_rate": learning_rate,
    }


def load_teach_config(path: str | Path) -> TeachConfig:
    """Read a teaching YAML (a name under ``experiments/configs`` or a path)."""
    return load_teach_config_dict(read_yaml_config(path), str(path))


def load_teach_config_dict(settings: dict[str, Any], source: str = "the teaching config") -> TeachConfig:
    """A :class:`TeachConfig` from its settings (as in a YAML file or ``teaching.json``)."""
    settings = dict(settings)
    reject_unknown_keys(settings, [setting.name for setting in fields(TeachConfig)], f"teaching setting in {source}")
    env = settings.pop("env", None) or {}
    if not isinstance(env, dict):
        raise TypeError(f"the env section of {source} must be a mapping of environment settings, got {shown(env)}")
    return TeachConfig(env=EnvConfig.from_dict(env), **settings)


def check_teach_settings(config: TeachConfig, students: Any) -> None:
    """Refuse, before any file is written, what would otherwise fail once a Student trains: the number of Students,
    and the env settings of the Students (device, backbone and its pretrained weights, batch size; see
    :func:`~experiments.preflight.check_run_settings`). The teaching settings themselves are checked by
    :class:`TeachConfig`; the tutor's keywords when the tutor is built, before the first Student trains."""
    integer_setting("the number of Students to teach (--students)", students, 1)
    config.check_protocol(students)
    check_run_settings(RunConfig(env=config.student_env(0), seed=config.first_seed, pretrain=config.pretrain))
