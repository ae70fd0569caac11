"""The tutor benchmark: every tutor × seed × variant of one experiment, run in parallel, resumable.

Each cell (one Student taught by one tutor) writes its own ``record.json`` atomically when it finishes; a cell
whose record exists is never rerun, so an interrupted grid continues where it stopped. Each record carries its
Student's fingerprint (:func:`~experiments.config.fingerprint`): a grid whose settings changed since refuses to mix
the cells they change with new ones, unless told to recompute them. A running grid locks its output directory, and
its worker processes exit when it dies. The summary files (``results.csv``, ``results.md``, plots) are rebuilt from
all records at the end of every invocation.

Cells run in local processes (the default) or as Ray tasks on a local Ray instance or a cluster
(:mod:`experiments.ray_backend`); both run the same per-cell function and write the same records.

A cell's result is exactly reproducible for the same seed and the same number of torch threads per cell (CPU
cores / workers, or the ``cpus_per_cell`` given; recorded in each cell); another thread count changes the order of
floating-point sums in the Student's convolutions, hence its weights in the last bits and, over an episode, its
metrics.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from agents import TUTORS
from experiments.checkpoint import CHECKPOINT_NAME, checkpoint_settings, write_atomically
from experiments.config import (
    BENCHMARK_ONLY,
    CONFIG_DIR,
    RESULT_NEUTRAL,
    TRAIN_ONLY,
    RunConfig,
    SettingsChanged,
    fingerprint,
    fingerprint_differences,
    plain,
    read_yaml_config,
    run_config_from_dict,
    split_tutor_entry,
)
from experiments.grid_plan import check_plan, plan_report, planned
from experiments.plots import plot_paired_differences, plot_validation_curves, plot_weight_distributions, plot_weighting
from experiments.protocol import check_grid, protocol_named
from experiments.provenance import code_version
from experiments.record import StudentRun
from experiments.reproducibility import numeric_environment
from experiments.summary import (
    ORACLE,
    REFERENCE,
    benchmark_splits,
    learns,
    markdown_tables,
    paired_summary,
    power_table,
    result_rows,
    state_column_rows,
    state_column_table,
    write_csv,
)
from experiments.train import check_run_settings, read_student_run, train_student
from tsrl_env.config import EnvConfig, reject_unknown_keys
from tsrl_env.data import EmbeddedConfig, make_dataset
from tsrl_env.files import directory_lock
from tsrl_env.rewards import REWARD_NAMES
from tsrl_env.validation import did_you_mean, setting_differences


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
    settings, on teaching data and seeds only, so that no setting is chosen on evaluation data).
    """

    env: EnvConfig = field(default_factory=EnvConfig)
    tutors: tuple[str, ...] = ("ppo", "uniform", "random")
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {"default": {}})
    tutor_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocol: str | None = None
    role: str = "evaluation"
    plan: dict[str, Any] | None = field(default=None, compare=False)
    """What the config file fixed (:func:`experiments.grid_plan.planned`); None: this config's own lists."""

    def to_dict(self) -> dict[str, Any]:
        return plain({**asdict(self), "env": self.env.to_dict(), "plan": None})

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
    reject_unknown_keys(settings, ["env", *BENCHMARK_ONLY, "tutor_kwargs"], f"benchmark setting in {path}", elsewhere)
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
    )
    for variant in config.cell_variants:
        config.run_config(variant, config.tutors[0], config.seeds[0])  # rejects bad overrides before any work
    if config.role not in GRID_ROLES:
        raise ValueError(f"role {source} must be one of {', '.join(GRID_ROLES)}, got {config.role!r}")
    protocol = protocol_named(config.protocol)
    if protocol is not None:
        envs = {variant: config.run_config(variant, config.tutors[0], config.seeds[0]).env for variant in config.cell_variants}
        role = "teaching" if config.role == "tuning" else "evaluation"
        check_grid(protocol, role, envs, max(1, len(config.datasets)), config.seeds, str(path))
    config = with_reference_tutors(config)
    references = [tutor for tutor in (REFERENCE, ORACLE, "random") if tutor in config.tutors]
    tutors_planned = list(dict.fromkeys([*references, *file_tutors]))
    plan = planned(config.protocol, file_seeds, list(config.datasets), tutors_planned, list(all_variants))
    return dataclasses.replace(config, plan=plan)


def with_reference_tutors(config: BenchmarkConfig) -> BenchmarkConfig:
    """The grid with the rows every comparison needs, first in each seed: ``uniform``, which differences are taken
    against, always; ``oracle`` (the ceiling of noise removal) and ``random`` (the floor) when a variant flips labels."""
    references = [REFERENCE]
    if any(_flips_labels(config.run_config(variant, config.tutors[0], config.seeds[0]).env) for variant in config.cell_variants):
        references += [ORACLE, "random"]
    missing = tuple(tutor for tutor in references if tutor not in config.tutors)
    return dataclasses.replace(config, tutors=missing + config.tutors) if missing else config


def _flips_labels(env: EnvConfig) -> bool:
    # Only the embedded source flips labels itself (and so knows which are wrong); files carry one label each.
    return env.dataset == "embedded" and {**dataclasses.asdict(EmbeddedConfig()), **env.dataset_options}["label_noise"] > 0


# Seconds of one core per training image and epoch, everything a cell does included (forwards, weighted updates,
# evaluations), at the image size given: the median cell of a grid run on the 2-core build machine with one torch
# thread per cell (benchmark_noise's 108 cells, 61.6 s each for 3,000 images x 6 epochs; smoke's 6 cells, 2.0 s
# for 256 x 3). Other machines, backbones or datasets: no estimate.
MEASURED_COST_PER_IMAGE_EPOCH = {"regnetx_002": (64, 61.6 / (3000 * 6)), "test_resnet": (32, 2.0 / (256 * 3))}


def estimated_wall_time_s(config: BenchmarkConfig, workers: int) -> float:
    """The grid's wall time on the 2-core build machine with ``workers`` cells at once; NaN where not measured."""
    total = 0.0
    for variant, tutor, seed in config.cells():
        env = config.run_config(variant, tutor, seed).env
        if env.dataset != "embedded" or env.backbone not in MEASURED_COST_PER_IMAGE_EPOCH:
            return float("nan")
        measured_size, cost = MEASURED_COST_PER_IMAGE_EPOCH[env.backbone]
        options = {**dataclasses.asdict(EmbeddedConfig()), **env.dataset_options}
        size = env.image_size or options["image_size"]
        total += cost * options["train_size"] * (env.warmup_epochs + env.epochs) * (size / measured_size) ** 2
    return total / workers


def available_benchmarks(workers: int = 2) -> list[tuple[str, BenchmarkConfig, float]]:
    """Every benchmark config under ``experiments/configs`` (those listing ``tutors``) with its estimated wall time."""
    found = []
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        if "tutors" in (read_yaml_config(path) or {}):
            config = load_benchmark_config(path)
            found.append((path.stem, config, estimated_wall_time_s(config, workers)))
    return sorted(found, key=lambda item: (math.isnan(item[2]), item[2]))


def cell_dir(out: Path, variant: str, tutor: str, seed: int) -> Path:
    return out / "cells" / variant / tutor / f"seed{seed}"


def _run_cell(
    run_config: dict[str, Any], directory: str, threads: int, record_rewards: bool = False, warmups: str | None = None
) -> str:
    """Worker: train one Student and write its record atomically. Returns the record's path.

    A cell interrupted earlier continues from its Student's last epoch checkpoint. ``record_rewards`` and ``warmups``
    (the grid's shared warm-ups): see :func:`~experiments.train.train_student`.
    """
    torch.set_num_threads(threads)
    config = run_config_from_dict(run_config)
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    config.save(path / "config.yaml")
    resume_command = "the same tsrl benchmark command (finished cells are kept, this one continues)"
    run = train_student(
        config,
        path,
        progress=False,
        save_student=False,
        resume=True,
        resume_command=resume_command,
        record_rewards=record_rewards,
        warmups=Path(warmups) if warmups else None,
    )
    record = {
        "tutor": config.tutor,
        "seed": config.seed,
        "torch_threads": threads,
        "environment": numeric_environment(),
        "code": code_version(),
        "fingerprint": fingerprint(config),
        "run": asdict(run),
    }
    write_atomically(path / "record.json", json.dumps(record))
    return str(path / "record.json")


# How often a pool worker looks for its parent, and how long a cell it trains may take to stop once the parent is gone.
_PARENT_POLL_S = 1.0
_STOP_GRACE_S = 10.0


def _exit_with_parent(parent: int) -> None:
    """Pool initializer: the worker stops when the process that started it (``parent``) is gone, even killed by
    SIGKILL, rather than train the remaining cells unsupervised and then idle forever."""
    threading.Thread(target=_watch_parent, args=(parent,), name="watch-parent", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_S)
    # SIGTERM first, so that a cell in training stops as on a stop signal (its last checkpoint kept); the exit then
    # ends a worker that would wait for the dead parent's next task forever.
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(_STOP_GRACE_S)
    os._exit(1)


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` fresh processes (spawned: no state copied from this one) that exit when this process dies."""
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_exit_with_parent, initargs=(os.getpid(),))


BACKENDS = ("local", "ray")
WARMUPS = "warmups"
"""The folder of a grid's shared warm-ups (:mod:`experiments.warmups`): the Students of a cell's tutors start alike."""


def run_benchmark(
    config: BenchmarkConfig,
    out: Path,
    workers: int = 1,
    progress: bool = True,
    backend: str = "local",
    address: str | None = None,
    cpus_per_cell: int | None = None,
    rerun_changed: bool = False,
    extend: bool = False,
) -> list[dict[str, Any]]:
    """Run every cell whose record is missing, ``workers`` at a time, and return all records.

    The directory's plan (:mod:`experiments.grid_plan`) is written on its first run; seeds or datasets beyond it are
    refused once cells have finished, unless ``extend`` (which the summary then reports).

    Cells finished under other settings than ``config`` gives them (see :func:`changed_cells`) raise
    :class:`~experiments.config.SettingsChanged` before any work, or with ``rerun_changed`` are deleted and computed
    again. The run holds the lock of ``out`` (:func:`~tsrl_env.files.directory_lock`): a second grid there is refused.

    ``backend="local"`` runs the cells in ``workers`` local processes; ``backend="ray"`` submits each as a Ray task
    (:mod:`experiments.ray_backend`) to a local Ray instance sized for ``workers`` cells at once, or to the cluster
    at ``address``. Each cell uses ``cpus_per_cell`` torch threads (default: this machine's cores / ``workers``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown benchmark backend {backend!r}; accepted: {', '.join(BACKENDS)}")
    if address is not None and backend != "ray":
        raise ValueError(f"a cluster address ({address!r}) is for the Ray backend; add --backend ray or drop --address")
    if cpus_per_cell is not None and cpus_per_cell < 1:
        raise ValueError(f"cpus per cell must be at least 1, got {cpus_per_cell}")
    run_on_ray = None
    if backend == "ray":
        # Here, before any work, so that a missing Ray is reported at once.
        from experiments.ray_backend import run_cells_on_ray as run_on_ray
    threads = cpus_per_cell or max(1, (os.cpu_count() or 1) // workers)
    out.mkdir(parents=True, exist_ok=True)
    with directory_lock(out, "tsrl benchmark"):
        check_plan(out, config.planned(), any((out / "cells").glob("**/record.json")), extend)
        _forget_changed_cells(config, out, rerun_changed)
        for variant in config.cell_variants:
            check_run_settings(config.run_config(variant, config.tutors[0], config.seeds[0]))
        _run_missing_cells(config, out, workers, threads, progress, run_on_ray, address)
        # Kept while cells are missing (an interrupted grid reuses them); a finished grid needs none (32 MB each).
        shutil.rmtree(out / WARMUPS, ignore_errors=True)
    return load_records(config, out)


def _run_missing_cells(
    config: BenchmarkConfig,
    out: Path,
    workers: int,
    threads: int,
    progress: bool,
    run_on_ray: Callable[..., Iterator[str]] | None,
    address: str | None,
) -> None:
    (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    todo = [cell for cell in config.cells() if not (cell_dir(out, *cell) / "record.json").exists()]
    # Build (and cache) each variant's dataset here, once, so no cell's wall time includes generating it.
    for variant in {variant for variant, _, _ in todo}:
        env = config.run_config(variant, config.tutors[0], config.seeds[0]).env
        make_dataset(env.dataset, **env.dataset_options)
    total = len(list(config.cells()))
    bar = tqdm(total=total, initial=total - len(todo), desc="benchmark", disable=not progress)
    cells = [(config.run_config(*cell).to_dict(), cell_dir(out, *cell)) for cell in todo]
    run_cell = partial(_run_cell, record_rewards=config.records_rewards, warmups=str((out / WARMUPS).resolve()))
    with ExitStack() as stack:
        if run_on_ray is not None:
            finished = run_on_ray(run_cell, cells, threads, local_cells=workers, address=address)
        else:
            pool = stack.enter_context(worker_pool(workers))
            futures = [pool.submit(run_cell, run_config, str(directory), threads) for run_config, directory in cells]
            finished = (future.result() for future in as_completed(futures))
        for record in finished:
            bar.set_postfix_str(Path(record).parent.relative_to(out / "cells").as_posix())
            bar.update()
    bar.close()


def read_record(path: Path) -> tuple[StudentRun, dict[str, Any] | None]:
    """A cell's ``record.json``: its Student's run and fingerprint (None in a record written before fingerprints)."""
    try:
        data = json.loads(path.read_text())
        return StudentRun.from_dict(data["run"]), data.get("fingerprint")
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as error:
        student = next(path.parent.glob("*/run.json"), None)
        rebuilt = (
            f"the next tsrl benchmark on this directory rebuilds it from its Student's {student} without retraining"
            if student
            else "the next tsrl benchmark on this directory trains this cell again"
        )
        raise ValueError(
            f"the benchmark record {str(path)!r} cannot be read ({type(error).__name__}: {error}); delete it: {rebuilt}"
        ) from error


def changed_cells(config: BenchmarkConfig, out: Path) -> dict[tuple[str, str, int], list[str]]:
    """The cells under ``out`` whose Student was computed or begun with other settings than ``config`` gives that
    cell now, with the settings that differ: see :func:`_cell_differences`.

    Each cell is compared on its own Student's settings only, so adding a tutor or a seed to a grid changes no
    finished cell; records written before fingerprints existed are taken as matching.
    """
    changed = {}
    for cell in config.cells():
        differences = _cell_differences(cell_dir(out, *cell), config.run_config(*cell))
        if differences:
            changed[cell] = differences
    return changed


def _cell_differences(directory: Path, config: RunConfig) -> list[str]:
    """How ``config`` differs from the settings of the cell's finished Student (its ``record.json``, or the
    ``run.json`` a record is rebuilt from) or of its unfinished one (the checkpoint it would continue from)."""
    record = directory / "record.json"
    student = directory / config.tutor / "run.json"
    checkpoint = directory / config.tutor / CHECKPOINT_NAME
    if record.is_file():
        return fingerprint_differences(read_record(record)[1], config)
    if student.is_file():
        return fingerprint_differences(read_student_run(student)[1], config)
    saved = checkpoint_settings(checkpoint) if checkpoint.is_file() else None
    return [] if saved is None else setting_differences(saved, config.to_dict(), ignore=RESULT_NEUTRAL)


# How many changed cells a refusal lists.
_LISTED_CELLS = 5


def _forget_changed_cells(config: BenchmarkConfig, out: Path, rerun_changed: bool) -> None:
    """Delete the cells computed with other settings (``rerun_changed``), or refuse to go on while they exist."""
    changed = changed_cells(config, out)
    if changed and not rerun_changed:
        raise SettingsChanged(
            f"{_changed_report(out, changed)}\nGive another --out to keep that grid apart, or add --rerun-changed to "
            "delete these cells and compute them again under the settings given now"
        )
    for cell in changed:
        shutil.rmtree(cell_dir(out, *cell))


def _changed_report(out: Path, changed: dict[tuple[str, str, int], list[str]]) -> str:
    listed = [f"  {variant}/{tutor}/seed{seed}: {'; '.join(diffs)}" for (variant, tutor, seed), diffs in changed.items()]
    more = [f"  ... and {len(listed) - _LISTED_CELLS} more"] if len(listed) > _LISTED_CELLS else []
    return "\n".join(
        [f"{len(changed)} cell(s) under {out} were computed (or begun) with other settings than now:"]
        + listed[:_LISTED_CELLS]
        + more
    )


def load_records(config: BenchmarkConfig, out: Path) -> list[dict[str, Any]]:
    """The records of every finished cell of ``config``, each with its variant, tutor and seed (and its dataset
    where the grid has datasets)."""
    records = []
    for cell_variant, tutor, seed in config.cells():
        path = cell_dir(out, cell_variant, tutor, seed) / "record.json"
        if path.exists():
            variant, dataset = split_cell_variant(cell_variant)
            record = {"variant": variant, "tutor": tutor, "seed": seed, "run": read_record(path)[0]}
            records.append(record | ({"dataset": dataset} if dataset else {}))
    return records


def write_summary(config: BenchmarkConfig, out: Path) -> str:
    """Rebuild ``runs.csv``, ``results.csv``, ``state_columns.csv``, ``results.md`` and the plots from every finished
    cell; return the Markdown."""
    changed = changed_cells(config, out)
    if changed:
        raise SettingsChanged(
            f"{_changed_report(out, changed)}\nA summary would mix them with the settings given now: give the config "
            "they were computed with, or run the benchmark with --rerun-changed to compute them again"
        )
    records = load_records(config, out)
    if not records:
        raise RuntimeError(f"no finished cell under {out / 'cells'}; run the benchmark first")
    splits = benchmark_splits(records)
    rows = result_rows(records, splits)
    write_csv(rows, out / "runs.csv")
    summary = paired_summary(rows, splits)
    write_csv(summary, out / "results.csv")
    total = len(list(config.cells()))
    markdown = f"# Benchmark results\n\n{plan_report(out, config.protocol)}\n{len(records)} of {total} runs finished.\n\n"
    markdown += markdown_tables(summary, splits)
    power = power_table(summary, splits=splits)
    if power:
        markdown += "\n## Power\n\nSeeds a paired comparison needs, from the spread of the differences measured here.\n\n" + power
    columns = state_column_rows(records)
    if columns:
        write_csv(columns, out / "state_columns.csv")
        markdown += "\n## What the state reveals\n\n" + state_column_table(columns)
    write_atomically(out / "results.md", markdown)
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    plot_validation_curves(records, plots / "val_auc.png")
    plot_paired_differences(summary, plots / "paired_differences.png")
    # Uniform gives every sample weight 1: nothing to show on the weighting plot.
    finished = {record["tutor"] for record in records}
    weighted = [t for t in sorted(config.tutors, key=lambda t: not learns(t)) if t in finished and t != "uniform"]
    for variant in sorted({record["variant"] for record in records}):
        plot_weight_distributions(records, variant, plots / f"weights_{variant}.png")
        if weighted:
            plot_weighting(records, variant, weighted, plots / f"weighting_{variant}.png")
    return markdown
