"""The ``tsrl`` command line: ``train`` (the main job), ``benchmark`` (every tutor on one table), ``evaluate`` (saved
Students on any dataset's test splits), ``grid`` (example images per manipulation family), ``calibrate`` (what
uniform-weight Students reach on the embedded benchmark) and ``preprocess`` (videos to face crops in DeepfakeBench's
layout)."""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch
import yaml

from agents import TUTORS
from experiments.benchmark import BACKENDS, available_benchmarks, load_benchmark_config, run_benchmark, write_summary
from experiments.calibrate import calibrate
from experiments.checkpoint import RunInterrupted, interrupt_on_stop_signals
from experiments.config import RunConfig, config_names, load_run_config
from experiments.evaluate import check_evaluation, evaluate_students, evaluation_config, find_students, own_test_data
from experiments.report import epoch_table, final_table
from experiments.teach import check_teach_settings, load_teach_config, teach
from experiments.teach_report import write_teaching_report
from experiments.threads import chosen_threads
from experiments.train import (
    RunStopped,
    check_run_settings,
    check_tutor_checkpoint,
    follow_student,
    save_results,
    train_student,
)
from tsrl_env.data import save_family_grid
from tsrl_env.data.preprocess import preprocess_videos
from tsrl_env.distributed import DistributedGroupView, ProcessGroupView
from tsrl_env.files import directory_lock
from tsrl_env.rewards import REWARD_NAMES
from tsrl_env.student import resolve_device

RESUME_FIXED = (
    "config",
    "seed",
    "tutor",
    "tutor_checkpoint",
    "epochs",
    "warmup_epochs",
    "backbone",
    "reward",
    "batch_size",
    "image_size",
)
"""``tsrl train`` options that set what a run is: ``--resume`` refuses them."""


def _writable_directory(
    path: Path, remedy: str = "give another one with --out, or fix its permissions or free space on its disk"
) -> Path:
    """``path``, created if missing, once a file could be written and synced in it: refuses a bad ``--out`` up front."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path) as probe:
            probe.write(b"tsrl")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise OSError(f"cannot write to the output directory {str(path)!r} ({error.strerror or error}); {remedy}") from error
    return path


def _train(args: argparse.Namespace) -> None:
    if args.deterministic:
        _use_deterministic_algorithms()
    config = _resumed_config(args) if args.resume else _new_config(args)
    group = _process_group(config) if args.ddp else ProcessGroupView()
    tutor_checkpoint = Path(config.tutor_checkpoint) if config.tutor_checkpoint else None
    # The Students of the run, in order: (tutor, tutor checkpoint); with --ddp every rank trains each of them.
    students = [(None, tutor_checkpoint)] if args.no_baseline else [("uniform", None), (None, tutor_checkpoint)]
    try:
        if group.rank == 0:
            _lead(args, config, group, students)
        else:
            _follow(config, group, len(students))
    finally:
        group.close()


def _new_config(args: argparse.Namespace) -> RunConfig:
    return load_run_config(
        args.config or "demo",
        seed=args.seed,
        tutor=args.tutor,
        tutor_checkpoint=args.tutor_checkpoint,
        epochs=args.epochs,
        warmup_epochs=args.warmup_epochs,
        backbone=args.backbone,
        device=args.device,
        lr=args.lr,
        reward=args.reward,
        batch_size=args.batch_size,
        image_size=args.image_size,
    )


def _resumed_config(args: argparse.Namespace) -> RunConfig:
    """The config of the run given to ``--resume``, with the learning rate or device a resume may change."""
    fixed = [f"--{name.replace('_', '-')}" for name in RESUME_FIXED if getattr(args, name) is not None]
    if fixed:
        raise SystemExit(
            f"tsrl train: --resume continues a run with its own config (RUN_DIR/config.yaml); {', '.join(fixed)} cannot "
            "change it (only --lr, --device, --ddp, --deterministic, --no-baseline and --no-progress can be given with "
            "--resume)"
        )
    if args.out is not None:
        raise SystemExit("tsrl train: --resume continues the run where it is (RUN_DIR); drop --out, which places new runs")
    saved = Path(args.resume) / "config.yaml"
    if not saved.is_file():
        raise SystemExit(f"tsrl train: {args.resume!r} is not a run directory (it has no config.yaml); give one tsrl train made")
    return load_run_config(saved, lr=args.lr, device=args.device)


def _process_group(config: RunConfig) -> DistributedGroupView:
    """This process's place in the group torchrun started: NCCL on the GPU of its LOCAL_RANK, or gloo on the CPU."""
    try:
        return DistributedGroupView.from_torchrun(resolve_device(config.env.device))
    except (RuntimeError, ValueError) as error:
        raise SystemExit(f"tsrl train --ddp: {error}") from error


def _run_directory(args: argparse.Namespace, config: RunConfig) -> Path:
    """The run directory, made (a new run) or given (``--resume``), once it is writable; holds the run's config."""
    check_run_settings(config)
    if args.resume:
        remedy = "fix its permissions or free space on its disk, or copy the run to a writable place and resume the copy"
        run_dir = _writable_directory(Path(args.resume), remedy)
        config.save(run_dir / "config.yaml")  # a later resume continues with the learning rate and device given now
        return run_dir
    out = _writable_directory(Path(args.out or "runs"))
    if config.tutor_checkpoint is not None:
        check_tutor_checkpoint(config, Path(config.tutor_checkpoint))
    run_dir = out / datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / "config.yaml")
    return run_dir


def _lead(
    args: argparse.Namespace, config: RunConfig, group: ProcessGroupView, students: list[tuple[str | None, Path | None]]
) -> None:
    """Rank 0, or the only process: trains the Students with their tutors, writes the run directory, prints the tables."""
    run_dir = _run_directory(args, config)
    print(f"run directory: {run_dir}")
    start = time.perf_counter()
    resume = args.resume is not None
    try:
        with directory_lock(run_dir, "tsrl train"):
            runs = [
                train_student(
                    config,
                    run_dir,
                    tutor,
                    checkpoint,
                    progress=not args.no_progress,
                    resume=resume,
                    group=group,
                    rerun_changed=args.rerun_changed,
                    record_rewards=args.record_rewards,
                )
                for tutor, checkpoint in students
            ]
    except RunStopped as stopped:
        print(f"\n{stopped}", file=sys.stderr)
        sys.exit(stopped.exit_code)
    save_results(runs, run_dir)
    print()
    print(epoch_table(runs))
    print()
    print(final_table(runs))
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s; TensorBoard: tensorboard --logdir {run_dir / 'tensorboard'}")


def _follow(config: RunConfig, group: ProcessGroupView, students: int) -> None:
    """A rank other than 0: its shard of every Student's training, in lockstep with rank 0; it writes nothing."""
    try:
        with interrupt_on_stop_signals():
            for _ in range(students):
                follow_student(config, group)
    except RunInterrupted as error:
        sys.exit(128 + error.signal_number)  # rank 0 says what is kept and how to resume
    except FloatingPointError:
        sys.exit(1)  # rank 0 stopped on the same loss and says so


def _use_deterministic_algorithms() -> None:
    """Deterministic torch kernels (CUDA's cuBLAS needs its workspace setting before the first matrix product)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def _list_benchmarks(workers: int) -> None:
    print(f"Benchmark configs (tsrl benchmark --config NAME); wall time estimated for --workers {workers} on a 2-core CPU:")
    benchmarks = available_benchmarks(workers)
    width = max(len(name) for name, _, _ in benchmarks)
    for name, config, seconds in benchmarks:
        env = config.run_config(*next(config.cells())).env
        size = f"{env.backbone}, {env.warmup_epochs}+{env.epochs} epochs"
        estimate = "not measured" if math.isnan(seconds) else f"~{_duration(seconds)}"
        cells = len(list(config.cells()))
        grid = f"{len(config.tutors)} tutors x {len(config.seeds)} seeds x {len(config.variants)} variant(s)"
        grid += f" x {len(config.datasets)} datasets" if config.datasets else ""
        print(f"  {name:<{width}} {cells:>4} Students {f'({grid})':<42} {size:<26} {estimate}")


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{max(minutes, 1)} min"


def _benchmark(args: argparse.Namespace) -> None:
    if args.config is None:
        _list_benchmarks(args.workers if args.workers > 1 else 2)
        return
    tutors = args.tutors.split(",") if args.tutors else None
    seeds = list(range(args.seeds)) if args.seeds else None
    variants = args.variants.split(",") if args.variants else None
    config = load_benchmark_config(args.config, tutors=tutors, seeds=seeds, variants=variants)
    out = _writable_directory(Path(args.out) if args.out else Path("runs") / "benchmark" / Path(args.config).stem)
    print(f"benchmark directory: {out}")
    start = time.perf_counter()
    if not args.summary_only:
        run_benchmark(
            config,
            out,
            workers=args.workers,
            progress=not args.no_progress,
            backend=args.backend,
            address=args.address,
            cpus_per_cell=args.cpus_per_cell,
            rerun_changed=args.rerun_changed,
            extend=args.extend,
        )
    print_markdown(write_summary(config, out))
    print(f"wall time {time.perf_counter() - start:.0f} s; tables and plots in {out}")


def _teach(args: argparse.Namespace) -> None:
    if args.summary_only:
        with directory_lock(Path(args.out), "tsrl teach --summary-only"):  # never beside a teach writing there
            print_markdown(write_teaching_report(Path(args.out)))
        return
    config = load_teach_config(args.config)
    check_teach_settings(config, args.students)  # before the output directory is made
    out = _writable_directory(Path(args.out))
    start = time.perf_counter()
    command = shlex.join(["tsrl", "teach", "--config", args.config, "--students", str(args.students), "--out", str(out)])
    try:
        curve = teach(config, args.students, out, progress=not args.no_progress, resume_command=command)
    except RunStopped as stopped:
        print(f"\n{stopped}", file=sys.stderr)
        sys.exit(stopped.exit_code)
    print(f"{len(curve)} Students taught in {out} ({time.perf_counter() - start:.0f} s this run); the tutor: {out / 'tutor.zip'}")


def _evaluate(args: argparse.Namespace) -> None:
    students = [student for path in args.students for student in find_students(Path(path))]
    overrides = {"backbone": args.backbone, "image_size": args.image_size, "device": args.device}
    if args.config is not None:
        config = load_run_config(args.config, **overrides)
    else:
        config = RunConfig(env=own_test_data(students).replace(**{k: v for k, v in overrides.items() if v is not None}))
    env = evaluation_config(config)
    check_evaluation(students, env)
    out = _writable_directory(Path(args.out))
    runs = evaluate_students(students, env)
    save_results(runs, out)
    print(final_table(runs, time_label="evaluation time (s)"))
    print(f"\nmetrics of each Student in {out / 'results.json'}")


def _grid(args: argparse.Namespace) -> None:
    path = save_family_grid(args.out, examples_per_family=args.examples, seed=args.seed)
    print(f"wrote {path}")


def _calibrate(args: argparse.Namespace) -> None:
    config = load_run_config(args.config, backbone=args.backbone, device=args.device)
    out = _writable_directory(Path(args.out))
    print(calibrate(config, args.seeds, out, progress=not args.no_progress))


def _preprocess(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = preprocess_videos(
        args.videos_dir,
        args.out_dir,
        name=args.name,
        frames_per_video=args.frames,
        image_size=args.size,
        margin=args.margin,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        workers=args.workers,
    )
    print(report.summary())
    print(f"train on it with these env settings (also in {Path(args.out_dir) / 'dataset_options.yaml'}):")
    print(yaml.safe_dump({"dataset": "deepfakebench", "dataset_options": report.dataset_options}, sort_keys=False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tsrl", description="Tutor-Student RL curricula for deepfake detection.")
    tutors, rewards = ", ".join(TUTORS), ", ".join(REWARD_NAMES)
    run_configs, benchmark_configs = ", ".join(config_names("run")), ", ".join(config_names("benchmark"))
    parser.add_argument("--verbose", action="store_true", help="show the traceback of an error, not only its message")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train",
        help="train a Student with uniform weights and one with a tutor, and compare them (--no-baseline: the tutored one only)",
    )
    train.add_argument("--config", help=f"a YAML path or one of: {run_configs} (default: demo)")
    train.add_argument("--seed", type=int, help="seed of both Students (overrides the config)")
    train.add_argument("--tutor", help=f"one of: {tutors} (overrides the config)")
    train.add_argument("--epochs", type=int, help="tutored epochs (overrides the config)")
    train.add_argument("--warmup-epochs", type=int, help="uniform-weight epochs before tutoring (overrides the config)")
    train.add_argument("--backbone", help="timm model name of the Student (overrides the config)")
    train.add_argument("--device", help="auto, cpu, cuda, ... (overrides the config)")
    train.add_argument("--tutor-checkpoint", help="a saved tutor (tutor.zip) that teaches without learning")
    train.add_argument("--lr", type=float, help="the Student's learning rate (overrides the config; may change on --resume)")
    train.add_argument("--reward", help=f"the tutor's reward, one of: {rewards} (overrides the config)")
    train.add_argument("--batch-size", type=int, help="samples per Student mini-batch (overrides the config)")
    train.add_argument("--image-size", type=int, help="side of the images fed to the Student (overrides the config)")
    train.add_argument(
        "--no-baseline",
        action="store_true",
        help="train only the tutored Student, not the uniform-weight one beside it (give it again with --resume)",
    )
    train.add_argument("--out", help="parent folder of the run directory (default: runs)")
    train.add_argument(
        "--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoints (finished Students are kept)"
    )
    train.add_argument(
        "--ddp",
        action="store_true",
        help="train each Student with DistributedDataParallel across the processes torchrun starts "
        "(torchrun --nproc_per_node=N -m experiments.cli train --ddp ...); batch_size must divide by their number",
    )
    train.add_argument("--deterministic", action="store_true", help="use deterministic torch algorithms only")
    train.add_argument(
        "--rerun-changed", action="store_true", help="with --resume: train again a finished Student of other settings"
    )
    train.add_argument(
        "--record-rewards",
        action="store_true",
        help="compute and record the rewards of a tutor that does not learn too (skipped by default: it reads none)",
    )
    train.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    train.set_defaults(handler=_train)

    bench = commands.add_parser("benchmark", help="run a tutor x seed x variant grid and write results.csv, results.md, plots")
    bench.add_argument("--config", help=f"a YAML path or one of: {benchmark_configs}; without it, list them with their sizes")
    bench.add_argument(
        "--tutors", help=f"comma-separated tutors (overrides the config), each one of: {tutors}; tutor@reward for a learned one"
    )
    bench.add_argument("--seeds", type=int, help="run seeds 0..N-1 (overrides the config)")
    bench.add_argument("--variants", help="comma-separated variants of the config to run (default: all)")
    bench.add_argument(
        "--workers", type=int, default=1, help="cells at once: local processes, or the local Ray instance's size (default: 1)"
    )
    bench.add_argument(
        "--backend", choices=BACKENDS, default="local", help="local processes, or Ray tasks (needs pip install '.[ray]')"
    )
    bench.add_argument("--address", help="with --backend ray: the Ray cluster to submit to (default: start a local instance)")
    bench.add_argument(
        "--cpus-per-cell", type=int, help="torch threads of each cell, the CPUs a Ray task asks for (default: cores / workers)"
    )
    bench.add_argument("--out", help="output folder (default: runs/benchmark/<config name>); finished cells there are kept")
    bench.add_argument("--summary-only", action="store_true", help="only rebuild the tables and plots from finished cells")
    bench.add_argument(
        "--extend",
        action="store_true",
        help="add seeds or datasets to a grid that has finished cells (its results then say it was extended)",
    )
    bench.add_argument(
        "--rerun-changed", action="store_true", help="compute again the finished cells whose settings changed since"
    )
    bench.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    bench.set_defaults(handler=_benchmark)

    evaluation = commands.add_parser(
        "evaluate", help="test saved Students on the test splits of a dataset config, side by side (cross-dataset)"
    )
    evaluation.add_argument(
        "students", nargs="+", metavar="STUDENT", help="a student.pt, a Student's folder, or a run directory (all its Students)"
    )
    evaluation.add_argument(
        "--config",
        help=f"whose env settings give the test data (default: those the Students were trained with): a YAML path or one of: "
        f"{run_configs}",
    )
    evaluation.add_argument("--backbone", help="timm model name the Students were trained as (overrides the config)")
    evaluation.add_argument(
        "--image-size", type=int, help="side of the images the Students were trained on (overrides the config)"
    )
    evaluation.add_argument("--device", help="auto, cpu, cuda, ... (overrides the config)")
    evaluation.add_argument("--out", default="runs/evaluate", help="folder of results.json (default: runs/evaluate)")
    evaluation.set_defaults(handler=_evaluate)

    grid = commands.add_parser("grid", help="save a PNG grid of real images and their manipulated versions, per family")
    grid.add_argument("--out", default="family_grid.png", help="PNG path (default: family_grid.png)")
    grid.add_argument("--examples", type=int, default=6, help="examples per family (default: 6)")
    grid.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    grid.set_defaults(handler=_grid)

    calibration = commands.add_parser("calibrate", help="test AUCs of uniform-weight Students with and without label noise")
    calibration.add_argument("--config", default="demo", help=f"a YAML path or one of: {run_configs} (default: demo)")
    calibration.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="Student seeds (default: 0 1)")
    calibration.add_argument("--backbone", help="timm model name of the Student (overrides the config)")
    calibration.add_argument("--device", help="auto, cpu, cuda, ... (overrides the config)")
    calibration.add_argument("--out", default="runs/calibration", help="output folder (default: runs/calibration)")
    calibration.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    calibration.set_defaults(handler=_calibrate)

    preprocess = commands.add_parser(
        "preprocess", help="sample frames of videos, crop the largest face, write them with a DeepfakeBench dataset JSON"
    )
    preprocess.add_argument("videos_dir", help="folder with real/ and fake/ (or train/, val/, test/ holding them) of videos")
    preprocess.add_argument("out_dir", help="output folder: rgb/ (face crops), dataset_json/, dataset_options.yaml")
    preprocess.add_argument("--name", default="videos", help="dataset name: JSON file, top-level key, label prefix")
    preprocess.add_argument("--frames", type=int, default=32, help="frames sampled evenly per video (default: 32)")
    preprocess.add_argument("--size", type=int, default=256, help="side of the square face crops in pixels (default: 256)")
    preprocess.add_argument("--margin", type=float, default=0.3, help="margin added around the face box (default: 0.3)")
    preprocess.add_argument("--val-fraction", type=float, default=0.1, help="videos carved as val when there is no val/")
    preprocess.add_argument("--test-fraction", type=float, default=0.2, help="videos carved as test without split folders")
    preprocess.add_argument("--seed", type=int, default=0, help="seed of the carving (default: 0)")
    preprocess.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")
    preprocess.set_defaults(handler=_preprocess)

    teaching = commands.add_parser(
        "teach",
        help="teach one tutor over many Students (imitation of the oracle with dataset aggregation) and save it",
        description="Teach one tutor over many Students: each is trained with the oracle's weights blended with the "
        "tutor's, and the tutor learns the oracle's weights on every state row seen so far (DAgger). Writes tutor.zip "
        "and tutor.json (register them as a saved tutor), teaching.json (the curve), examples.npz and teaching.md in "
        "--out. Run again with the same settings to continue after the last Student recorded.",
    )
    teaching.add_argument(
        "--config",
        default="teach_noise",
        help=f"teaching YAML: a path or one of: {', '.join(config_names('teach'))} (default: teach_noise)",
    )
    teaching.add_argument(
        "--students", type=int, default=8, help="Students (episodes) to teach on, seeds from the config's first_seed (default: 8)"
    )
    teaching.add_argument(
        "--out",
        default="runs/teach",
        help="directory of the tutor and its teaching curve; a rerun continues it (default: runs/teach)",
    )
    teaching.add_argument("--no-progress", action="store_true", help="hide the progress bars and per-Student lines")
    teaching.add_argument(
        "--summary-only", action="store_true", help="rewrite teaching.md and the plots of --out, teaching nothing"
    )
    teaching.set_defaults(handler=_teach)
    for command in commands.choices.values():
        command.add_argument(
            "--threads",
            type=int,
            help="torch threads of this process (default: 1 on a busy machine or when one of several processes, "
            "else torch's; printed in the run header)",
        )
    return parser


USER_ERRORS = (ValueError, TypeError, OSError, RuntimeError)
"""What a command raises for a setting, a file or a directory the user can fix: its message says how."""


def main(argv: list[str] | None = None) -> None:
    """Run ``tsrl`` with ``argv`` (default: the command line's arguments).

    From the command line, an error the user can fix is printed as its message alone and exits with code 2
    (``--verbose`` shows its traceback instead); a caller passing ``argv`` gets the exception itself.
    """
    args = build_parser().parse_args(argv)
    if argv is None or args.threads is not None:
        # A caller passing argv (a test, a notebook) keeps its own thread count unless it asks for one.
        threads, why = chosen_threads(args.threads)
        torch.set_num_threads(threads)
        if args.command in THREADED_COMMANDS:
            print(f"torch threads: {threads} ({why}; --threads N sets it)")
    if argv is not None or args.verbose:
        args.handler(args)
        return
    try:
        args.handler(args)
    except SystemExit as stop:
        if not isinstance(stop.code, str):
            raise
        _exit_for_user_error(stop.code)
    except USER_ERRORS as error:
        _exit_for_user_error(f"tsrl {args.command}: {error}")
    except KeyboardInterrupt:
        # Ctrl-C before a run's own stop handling is set up (imports, loading the config or the data): nothing written.
        print(f"\ntsrl {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)


THREADED_COMMANDS = ("train", "evaluate", "teach", "calibrate")
"""Commands that compute in this process (``benchmark`` sets each cell's threads with ``--cpus-per-cell``)."""


def print_markdown(text: str) -> None:
    """A report written as Markdown (``results.md``, ``teaching.md``): rendered as tables in a terminal, the Markdown
    itself when the output goes to a file or a pipe (where it is meant to be kept)."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(text))
    else:
        print(text)


def _exit_for_user_error(message: str) -> None:
    print(f"{message}\n(tsrl --verbose {' '.join(sys.argv[1:])} shows where it was raised)", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
