"""Run configuration: the environment's settings plus the tutor's, read from YAML and command-line overrides."""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agents import tutor_spec
from experiments.records.provenance import files_read
from tsrl_env.config import EnvConfig, integer_setting, reject_unknown_keys, shown
from tsrl_env.data import data_source, dataset_identity, sources_that_know_their_flips
from tsrl_env.files import write_atomically
from tsrl_env.validation import did_you_mean, setting_differences

CONFIG_DIR = Path(__file__).parent / "configs"
BENCHMARK_ONLY = ("tutors", "seeds", "variants", "datasets", "protocol", "role")
"""Top-level keys of a benchmark config that a run config (``tsrl train``) does not take."""
TRAIN_ONLY = ("tutor", "seed", "tutor_checkpoint")
"""Top-level keys of a run config that a benchmark config does not take (it lists ``tutors`` and ``seeds``)."""


@dataclass(frozen=True)
class RunConfig:
    """One experiment: the curriculum environment, the tutor that teaches in it, and the seed of the Student.

    ``tutor_checkpoint`` names a saved tutor (a ``tutor.zip``) that teaches without learning, instead of a new one.
    ``pretrain`` names the run config (a name or a path) whose uniform Student becomes ``env.pretrained_file`` when
    that file is missing (see :func:`experiments.training.pretrain.build_missing_pretrained_file`); the file's
    SHA-256, not this name, is what the run's fingerprint records.
    """

    env: EnvConfig = field(default_factory=EnvConfig)
    tutor: str = "ppo"
    tutor_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    tutor_checkpoint: str | None = None
    pretrain: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.tutor, str):
            raise TypeError(f"tutor must be a tutor name, got {shown(self.tutor)}")
        spec = tutor_spec(self.tutor)  # an unknown name raises a ValueError with a did-you-mean
        if not isinstance(self.tutor_kwargs, dict):
            raise TypeError(f"tutor_kwargs must be a mapping of keyword arguments, got {shown(self.tutor_kwargs)}")
        if spec.reads_label_noise(self.tutor_kwargs) and not data_source(self.env.dataset).knows_flipped_labels():
            raise ValueError(
                f"the {self.tutor!r} tutor with keywords {self.tutor_kwargs} reads which training labels are wrong, or "
                f"how many are, and data source {self.env.dataset!r} cannot know them (only a source that flips labels "
                f"itself can: {', '.join(sources_that_know_their_flips())}); drop it from the tutors for this dataset, "
                "or give it keywords that do not read them (see its docstring)"
            )
        object.__setattr__(self, "seed", integer_setting("seed", self.seed, 0))
        if self.tutor_checkpoint is not None and not isinstance(self.tutor_checkpoint, str):
            raise TypeError(f"tutor_checkpoint must be the path of a saved tutor (tutor.zip), got {shown(self.tutor_checkpoint)}")
        check_pretrain_setting(self.pretrain, self.env)

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env.to_dict(),
            "tutor": self.tutor,
            "tutor_kwargs": dict(self.tutor_kwargs),
            "seed": self.seed,
            "tutor_checkpoint": self.tutor_checkpoint,
            **({"pretrain": self.pretrain} if self.pretrain is not None else {}),
        }

    def save(self, path: Path) -> None:
        write_atomically(path, yaml.safe_dump(plain(self.to_dict()), sort_keys=False))

    def for_student(self, tutor: str, tutor_checkpoint: str | None = None) -> RunConfig:
        """The settings of the one Student that ``tutor`` teaches in this run: ``tutor_kwargs`` belong to the run's own
        tutor only (the uniform baseline of a ``tsrl train`` run takes none), ``tutor_checkpoint`` to the Student it
        teaches."""
        kwargs = self.tutor_kwargs if tutor == self.tutor and tutor_checkpoint is None else {}
        return dataclasses.replace(self, tutor=tutor, tutor_kwargs=dict(kwargs), tutor_checkpoint=tutor_checkpoint)


RESULT_NEUTRAL = ("env.device", "env.num_workers")
"""Settings of a fingerprint that choose where a Student trains, not what it learns: results are compared across them."""


class SettingsChanged(ValueError):
    """A result on disk was computed under other settings than those given now."""


def fingerprint(config: RunConfig) -> dict[str, Any]:
    """What decides one Student's result: its resolved settings, the identity of its data (the embedded
    benchmark's cache key, which also changes with its generator's version) and, where it reads any, the SHA-256 of
    each file beyond the dataset (``files``: pretrained weights, a saved tutor), so that a file changed at the same
    path is a changed setting, and the env settings the tutor imposes on its Student (``tutor_env_settings``: a taught
    tutor's state columns, a baseline's trusted data). Stored with every finished Student."""
    identity = dataset_identity(config.env.dataset, config.env.dataset_options)
    files = files_read(config.env.to_dict(), config.tutor, config.tutor_checkpoint)
    tutor_env = plain(dict(tutor_spec(config.tutor).env_settings))
    settings = plain(config.to_dict())
    settings.pop("pretrain", None)  # how the weights file was built; its hash under "files" is what decides
    return {
        **settings,
        "dataset_identity": identity,
        **({"files": files} if files else {}),
        **({"tutor_env_settings": tutor_env} if tutor_env else {}),
    }


def fingerprint_differences(
    saved: dict[str, Any] | None, config: RunConfig, ignore: tuple[str, ...] = RESULT_NEUTRAL
) -> list[str]:
    """``"setting: saved -> now"`` for each setting where the fingerprint ``saved`` and ``config`` differ.

    A result written before fingerprints existed (``saved`` None) is taken as matching: nothing says otherwise. An env
    setting added since ``saved`` was written is taken at its default, since a new setting's default keeps the results
    it had before the setting existed (``python -m experiments.studies.fingerprint compare`` checks that); so are the file
    hashes and tutor env settings of a record written before fingerprints carried them.
    """
    if saved is None:
        return []
    now = fingerprint(config)
    for added in ("files", "tutor_env_settings"):
        if added not in saved:
            now.pop(added, None)  # recorded before it was: nothing says it changed
    defaults = plain(EnvConfig().to_dict())
    env = {**{key: defaults[key] for key in now["env"] if key in defaults}, **saved.get("env", {})}
    return setting_differences({**saved, "env": env}, now, ignore=ignore)


def check_pretrain_setting(pretrain: Any, env: EnvConfig) -> None:
    """Refuse a ``pretrain`` setting (of a run or a grid) that is not a config name, or that has no file to build."""
    if pretrain is not None and not isinstance(pretrain, str):
        raise TypeError(f"pretrain must name the run config that builds env.pretrained_file, got {shown(pretrain)}")
    if pretrain is not None and env.pretrained_file is None:
        raise ValueError(
            f"pretrain ({pretrain!r}) builds the file of env.pretrained_file, which is not set; set "
            "pretrained_file: PATH under env (where the weights go), or drop pretrain"
        )
    if pretrain is not None:
        read_yaml_config(pretrain)  # a misspelt name is refused now, with a did-you-mean, not when the file is missing


def split_tutor_entry(entry: str) -> tuple[str, str | None]:
    """A benchmark's tutor entry as (tutor, reward): ``"ppo@val_alignment"`` is the PPO tutor learning from the
    ``val_alignment`` reward, ``"ppo"`` the PPO tutor under the environment's reward (``None``)."""
    tutor, _, reward = entry.partition("@")
    return tutor, reward or None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the safe loader refuses it below, in its own words
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice; keep one", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def config_names(kind: str) -> list[str]:
    """The configs under ``experiments/configs`` of one kind, by name: ``"run"`` (``tsrl train`` and ``evaluate``),
    ``"benchmark"`` (they list ``tutors``) or ``"teach"`` (they list the ``label_noise`` of the teaching Students)."""

    def kind_of(path: Path) -> str:
        keys = yaml.safe_load(path.read_text()) or {}
        return "benchmark" if "tutors" in keys else "teach" if "label_noise" in keys else "run"

    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml") if kind_of(path) == kind)


def config_file(path: str | Path) -> Path:
    """The file of a config given as a path or as a name under ``experiments/configs``."""
    config_path = Path(path)
    if not config_path.exists() and (CONFIG_DIR / f"{path}.yaml").exists():
        config_path = CONFIG_DIR / f"{path}.yaml"
    if not config_path.exists():
        names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise FileNotFoundError(
            f"no config file {str(path)!r}{did_you_mean(str(path), names)}; give a path or one of: {', '.join(names)}"
        )
    return config_path


def read_yaml_config(path: str | Path) -> dict[str, Any]:
    """The settings in a YAML config given as a path or as a name under ``experiments/configs``."""
    config_path = config_file(path)
    try:
        settings = yaml.load(config_path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise ValueError(f"config file {str(config_path)!r} is not valid YAML: {error}") from None
    if settings is None:
        raise ValueError(
            f"config file {str(config_path)!r} holds no settings (it is empty or all comments); write its settings, "
            f"e.g. as in {CONFIG_DIR / 'tiny.yaml'}"
        )
    if not isinstance(settings, dict):
        raise TypeError(f"config file {str(config_path)!r} must hold key: value settings, got {shown(settings)}")
    return settings


def run_config_from_dict(settings: dict[str, Any]) -> RunConfig:
    """The inverse of :meth:`RunConfig.to_dict`."""
    settings = dict(settings)
    return RunConfig(env=EnvConfig.from_dict(settings.pop("env", {}) or {}), **settings)


def load_run_config(path: str | Path | None = None, **overrides: Any) -> RunConfig:
    """Read a YAML run config (a name under ``experiments/configs`` or a path) and apply overrides.

    Overrides named after a run field (``tutor``, ``seed``, ...) replace it; any other name is an
    environment setting (``epochs``, ``backbone``, ...). Unknown names are rejected with a did-you-mean.
    """
    settings: dict[str, Any] = {}
    if path is not None:
        settings = read_yaml_config(path)
    run_fields = [f.name for f in dataclasses.fields(RunConfig)]
    elsewhere = {
        **EnvConfig.placed_under_env(),
        **dict.fromkeys(BENCHMARK_ONLY, "it is a benchmark setting: run this file with tsrl benchmark --config"),
    }
    reject_unknown_keys(settings, run_fields, f"run setting in {path}", elsewhere)
    env_settings = settings.pop("env", None) or {}
    if not isinstance(env_settings, dict):
        raise TypeError(f"the env section of {path} must be a mapping of environment settings, got {shown(env_settings)}")
    env_settings = dict(env_settings)
    for key, value in overrides.items():
        if value is None:
            continue
        if key in run_fields:
            settings[key] = value
        else:
            env_settings[key] = value
    return RunConfig(env=EnvConfig.from_dict(env_settings), **settings)


def plain(value: Any) -> Any:
    """Tuples to lists, recursively, so the YAML is plain."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value
