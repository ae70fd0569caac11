"""A benchmark grid's spec: every tutor × seed × variant (× evaluation dataset) of one experiment, read from a
benchmark YAML and checked whole before any work.

Each cell is one Student taught by one tutor (:meth:`BenchmarkConfig.run_config`); the cells of a seed share their
data, initialisation, warm-up and batch order, so tutors are compared pair by pair (:mod:`experiments.analysis`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agents import TUTORS
from experiments.analysis.summary import ORACLE, REFERENCE
from experiments.config import (
    BENCHMARK_ONLY,
    TRAIN_ONLY,
    RunConfig,
    check_pretrain_setting,
    plain,
    read_yaml_config,
    split_tutor_entry,
)
from experiments.grid.plan import planned
from experiments.protocol import check_grid, protocol_named
from tsrl_env.config import EnvConfig, reject_unknown_keys
from tsrl_env.data import data_source
from tsrl_env.rewards import REWARD_NAMES
from tsrl_env.validation import did_you_mean


@dataclass(frozen=True)
class BenchmarkConfig:
    """One experiment: a base environment, the tutors and seeds to compare, the variants of the environment and,
    optionally, the datasets each variant is measured on.

    ``variants`` maps a name to environment overrides (``dataset_options`` is merged key by key), e.g.
    ``{"noise_0": {"dataset_options": {"label_noise": 0.0}}}``; ``datasets`` maps a dataset name to dataset options
    (its content ``seed`` and flip ``noise_seed``) applied after the variant's, so that every variant is measured on
    every dataset and Students pair by variant, dataset and seed; ``tutor_kwargs`` maps a tutor name to its
    constructor keywords; a variant may also carry ``tutor_kwargs`` of its own, merged over those (a tuning grid's
    settings). ``protocol`` names the evaluation protocol the grid keeps (:mod:`experiments.protocol`), ``role`` what
    the grid is for under it: ``evaluation`` (evaluation data and seeds) or ``tuning`` (a search of a baseline's
    settings, on teaching data and seeds only, so that no setting is chosen on evaluation data). ``pretrain`` names the
    run config that builds ``env.pretrained_file`` when it is missing, before any cell runs (as ``tsrl train`` does).
    """

    env: EnvConfig = field(default_factory=EnvConfig)
    tutors: tuple[str, ...] = ("ppo", "uniform", "random")
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {"default": {}})
    tutor_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocol: str | None = None
    role: str = "evaluation"
    pretrain: str | None = None
    plan: dict[str, Any] | None = field(default=None, compare=False)
    """What the config file fixed (:func:`experiments.grid.plan.planned`); None: this config's own lists."""
    whole: dict[str, Any] | None = field(default=None, compare=False)
    """The whole grid where ``tutors``, ``seeds`` or ``variants`` select a part of it (:meth:`to_dict` of the config
    file's lists joined with those given), set by :func:`load_benchmark_config`; None: this config's own."""

    def to_dict(self) -> dict[str, Any]:
        settings = asdict(self)
        del settings["whole"]
        if self.pretrain is None:
            del settings["pretrain"]  # as the grids recorded before the setting existed
        return plain({**settings, "env": self.env.to_dict(), "plan": None})

    def recorded(self) -> dict[str, Any]:
        """What the grid directory's ``config.yaml`` keeps: the whole grid, whatever part of it a run selects."""
        return self.whole or self.to_dict()

    def whole_grid(self) -> BenchmarkConfig:
        """The whole grid as a config (its tables and Holm families cover every tutor, seed and variant of it), where
        this one selects a part."""
        if self.whole is None:
            return self
        return dataclasses.replace(
            self,
            tutors=tuple(self.whole["tutors"]),
            seeds=tuple(self.whole["seeds"]),
            variants=dict(self.whole["variants"]),
            whole=None,
        )

    def planned(self) -> dict[str, Any]:
        """The plan a grid directory keeps for this config: the config file's lists, or this config's own."""
        return self.plan or planned(self.protocol, self.seeds, list(self.datasets), self.tutors, list(self.variants))

    @property
    def cell_variants(self) -> tuple[str, ...]:
        """The variant part of every cell: each variant, or ``variant/dataset`` for each dataset when there are any."""
        if not self.datasets:
            return tuple(self.variants)
        return tuple(f"{variant}/{dataset}" for variant in self.variants for dataset in self.datasets)

    @property
    def records_rewards(self) -> bool:
        """Whether every cell computes and records its tutor's rewards: in a grid that names rewards (``tutor@reward``
        entries, a study of the rewards themselves); elsewhere only the learning tutors, which read them, compute them."""
        return any(split_tutor_entry(entry)[1] is not None for entry in self.tutors)

    def cells(self) -> Iterator[tuple[str, str, int]]:
        """(variant, tutor, seed) of every run, seed-major so that an interrupted grid has whole seeds; the variant is
        ``variant/dataset`` where the grid has datasets."""
        for seed in self.seeds:
            for variant in self.cell_variants:
                for tutor in self.tutors:
                    yield variant, tutor, seed

    def run_config(self, variant: str, entry: str, seed: int) -> RunConfig:
        """The run of one cell; ``entry`` is a tutor name, or ``tutor@reward`` for a tutor learning from that reward."""
        tutor, reward = split_tutor_entry(entry)
        variant, dataset = split_cell_variant(variant)
        overrides = dict(self.variants[variant])
        options = {
            **self.env.dataset_options,
            **overrides.pop("dataset_options", {}),
            **(self.datasets[dataset] if dataset else {}),
        }
        if reward is not None:
            overrides["reward"] = reward
        variant_kwargs = overrides.pop("tutor_kwargs", {})
        env = self.env.replace(dataset_options=options, **overrides)
        kwargs = {
            **self.tutor_kwargs.get(entry, self.tutor_kwargs.get(tutor, {})),
            **variant_kwargs.get(entry, variant_kwargs.get(tutor, {})),
        }
        return RunConfig(env=env, tutor=tutor, tutor_kwargs=kwargs, seed=seed)


GRID_ROLES = ("evaluation", "tuning")
"""What a grid is for under a protocol: measuring tutors on evaluation data, or searching settings on teaching data."""


def split_cell_variant(cell_variant: str) -> tuple[str, str | None]:
    """A cell's variant as (variant, dataset): ``"video_0.30/d1"`` is variant ``video_0.30`` on dataset ``d1``."""
    variant, _, dataset = cell_variant.partition("/")
    return variant, dataset or None


def _name_list(settings: dict[str, Any], key: str, source: str) -> list[Any]:
    value = settings.get(key, list(getattr(BenchmarkConfig, key)))
    if not isinstance(value, list) or not value:
        example = "[uniform, oracle, self_paced]" if key == "tutors" else "[0, 1, 2]"
        raise ValueError(f"{key} {source} must be a non-empty list, e.g. {key}: {example}; got {value!r}")
    repeated = sorted({str(item) for item in value if value.count(item) > 1})
    if repeated:
        raise ValueError(f"{key} {source} lists {', '.join(repeated)} more than once; list each once (a repeat counts twice)")
    return value


def _check_grid_settings(settings: dict[str, Any], source: str) -> None:
    """Refuse, before any work, the grid settings that would otherwise be read silently wrong."""
    tutors = _name_list(settings, "tutors", source)
    if not all(isinstance(tutor, str) for tutor in tutors):
        raise ValueError(f"tutors {source} must be tutor names, got {tutors!r}")
    seeds = _name_list(settings, "seeds", source)
    if not all(isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 for seed in seeds):
        raise ValueError(f"seeds {source} must be integers >= 0, got {seeds!r}")
    kwargs = settings.get("tutor_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"tutor_kwargs {source} must map a tutor name to its keywords, got {kwargs!r}")
    unused = [name for name in kwargs if name not in tutors and split_tutor_entry(name)[0] not in tutors]
    if unused:
        raise ValueError(f"tutor_kwargs {source} name {unused}, which its tutors do not list; drop them or list those tutors")
    for key in ("variants", "datasets"):
        value = settings.get(key)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(isinstance(entry, dict) for entry in value.values()):
            raise ValueError(f"{key} {source} must map a name to its settings, e.g. {key}: {{name: {{...}}}}; got {value!r}")
        if any("/" in str(name) for name in value):
            raise ValueError(f"{key} {source}: a name may not contain '/' (it separates variant and dataset in cell folders)")


def load_benchmark_config(
    path: str | Path, tutors: list[str] | None = None, seeds: list[int] | None = None, variants: list[str] | None = None
) -> BenchmarkConfig:
    """Read a benchmark YAML (a name under ``experiments/configs`` or a path); ``tutors``/``seeds`` override it and
    ``variants`` selects some of its variants (a part of the grid, run now; the plan keeps them all).

    Every setting is checked before any work: tutors and rewards by name, each tutor and seed listed once,
    ``tutor_kwargs`` only for listed tutors, and the rules of the ``protocol`` the config names.
    """
    settings = read_yaml_config(path)
    elsewhere = {
        **EnvConfig.placed_under_env(),
        **dict.fromkeys(
            TRAIN_ONLY,
            "it is a tsrl train setting; a benchmark config lists tutors: [...] and seeds: [...] (tsrl benchmark alone "
            "lists the benchmark configs)",
        ),
    }
    reject_unknown_keys(settings, ["env", *BENCHMARK_ONLY, "tutor_kwargs", "pretrain"], f"benchmark setting in {path}", elsewhere)
    source = f"in {path}"
    _check_grid_settings(settings, source)
    file_tutors = list(settings.get("tutors", BenchmarkConfig.tutors))
    file_seeds = list(settings.get("seeds", BenchmarkConfig.seeds))
    if tutors:
        source = "in the tutors given (--tutors)"
        settings["tutors"] = _name_list({"tutors": tutors}, "tutors", source)
    if seeds:
        settings["seeds"] = seeds
    settings.setdefault("tutors", file_tutors)
    for tutor, reward in (split_tutor_entry(entry) for entry in settings["tutors"]):
        if tutor not in TUTORS:
            raise ValueError(f"unknown tutor {tutor!r} {source}{did_you_mean(tutor, TUTORS)}; accepted: {', '.join(TUTORS)}")
        if reward is not None and reward not in REWARD_NAMES:
            raise ValueError(
                f"unknown reward {reward!r} {source} (tutor@reward){did_you_mean(reward, REWARD_NAMES)}; accepted: "
                f"{', '.join(REWARD_NAMES)}"
            )
    all_variants = dict(settings.get("variants") or {"default": {}})
    unknown = [name for name in variants or [] if name not in all_variants]
    if unknown:
        hint, names = did_you_mean(unknown[0], all_variants), ", ".join(all_variants)
        raise ValueError(f"unknown variant(s) {unknown} in --variants{hint}; the config has: {names}")
    config = BenchmarkConfig(
        env=EnvConfig.from_dict(settings.get("env") or {}),
        tutors=tuple(settings["tutors"]),
        seeds=tuple(settings.get("seeds", BenchmarkConfig.seeds)),
        variants={name: all_variants[name] for name in variants} if variants else all_variants,
        tutor_kwargs=dict(settings.get("tutor_kwargs") or {}),
        datasets=dict(settings.get("datasets") or {}),
        protocol=settings.get("protocol"),
        role=settings.get("role", "evaluation"),
        pretrain=settings.get("pretrain"),
    )
    check_pretrain_setting(config.pretrain, config.env)
    for variant in config.cell_variants:
        for tutor in config.tutors:
            config.run_config(variant, tutor, config.seeds[0])  # rejects a bad override or pairing before any work
    if config.role not in GRID_ROLES:
        raise ValueError(f"role {source} must be one of {', '.join(GRID_ROLES)}, got {config.role!r}")
    protocol = protocol_named(config.protocol)
    if protocol is not None:
        envs = {variant: config.run_config(variant, config.tutors[0], config.seeds[0]).env for variant in config.cell_variants}
        role = "teaching" if config.role == "tuning" else "evaluation"
        check_grid(protocol, role, envs, max(1, len(config.datasets)), config.seeds, str(path), config.pretrain)
    whole = dataclasses.replace(
        config,
        tutors=tuple(dict.fromkeys([*file_tutors, *config.tutors])),
        seeds=tuple(dict.fromkeys([*file_seeds, *config.seeds])),
        variants=all_variants,
    )
    config = with_reference_tutors(config)
    references = [tutor for tutor in (REFERENCE, ORACLE, "random") if tutor in config.tutors]
    tutors_planned = list(dict.fromkeys([*references, *file_tutors]))
    plan = planned(config.protocol, file_seeds, list(config.datasets), tutors_planned, list(all_variants))
    return dataclasses.replace(config, plan=plan, whole=with_reference_tutors(whole).to_dict())


def with_reference_tutors(config: BenchmarkConfig) -> BenchmarkConfig:
    """The grid with the rows every comparison needs, first in each seed: ``uniform``, which differences are taken
    against, always; ``oracle`` (the ceiling of noise removal) and ``random`` (the floor) when a variant flips labels."""
    references = [REFERENCE]
    if any(_flips_labels(config.run_config(variant, config.tutors[0], config.seeds[0]).env) for variant in config.cell_variants):
        references += [ORACLE, "random"]
    missing = tuple(tutor for tutor in references if tutor not in config.tutors)
    return dataclasses.replace(config, tutors=missing + config.tutors) if missing else config


def _flips_labels(env: EnvConfig) -> bool:
    return data_source(env.dataset).flips_labels(env.dataset_options)
