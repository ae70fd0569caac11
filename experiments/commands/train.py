"""``tsrl train``: a Student with uniform weights and one with a tutor, side by side (the main job); with ``--ddp``, each
Student trained across the processes torchrun starts, rank 0 leading and the others following."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

from agents import TUTORS
from experiments.commands import exit_when_stopped
from experiments.config import RunConfig, config_names, load_run_config
from experiments.preflight import check_run_settings, check_tutor_checkpoint, writable_directory
from experiments.records.student_run import save_results
from experiments.report import epoch_table, final_table
from experiments.training.pretrain import build_missing_pretrained_file, pretrained_file_missing
from experiments.training.signals import RunInterrupted, interrupt_on_stop_signals
from experiments.training.student import follow_student, train_student
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tutors, rewards, run_configs = ", ".join(TUTORS), ", ".join(REWARD_NAMES), ", ".join(config_names("run"))
    parser.add_argument("--config", help=f"a YAML path or one of: {run_configs} (default: main)")
    parser.add_argument("--seed", type=int, help="seed of both Students (overrides the config)")
    parser.add_argument("--tutor", help=f"one of: {tutors} (overrides the config)")
    parser.add_argument("--epochs", type=int, help="tutored epochs (overrides the config)")
    parser.add_argument("--warmup-epochs", type=int, help="uniform-weight epochs before tutoring (overrides the config)")
    parser.add_argument("--backbone", help="timm model name of the Student (overrides the config)")
    parser.add_argument("--device", help="auto, cpu, cuda, ... (overrides the config)")
    parser.add_argument("--tutor-checkpoint", help="a saved tutor (tutor.zip) that teaches without learning")
    parser.add_argument("--lr", type=float, help="the Student's learning rate (overrides the config; may change on --resume)")
    parser.add_argument("--reward", help=f"the tutor's reward, one of: {rewards} (overrides the config)")
    parser.add_argument("--batch-size", type=int, help="samples per Student mini-batch (overrides the config)")
    parser.add_argument("--image-size", type=int, help="side of the images fed to the Student (overrides the config)")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="train only the tutored Student, not the uniform-weight one beside it (give it again with --resume)",
    )
    parser.add_argument("--out", help="parent folder of the run directory (default: runs)")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoints (finished Students are kept)"
    )
    parser.add_argument(
        "--ddp",
        action="store_true",
        help="train each Student with DistributedDataParallel across the processes torchrun starts "
        "(torchrun --nproc_per_node=N -m experiments.cli train --ddp ...); batch_size must divide by their number",
    )
    parser.add_argument("--deterministic", action="store_true", help="use deterministic torch algorithms only")
    parser.add_argument(
        "--rerun-changed", action="store_true", help="with --resume: train again a finished Student of other settings"
    )
    parser.add_argument(
        "--record-rewards",
        action="store_true",
        help="compute and record the rewards of a tutor that does not learn too (skipped by default: it reads none)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> None:
    if args.deterministic:
        _use_deterministic_algorithms()
    config = _resumed_config(args) if args.resume else _new_config(args)
    if args.ddp:
        _refuse_unbuilt_pretrained_file(config)
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
        args.config or "main",
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


def _refuse_unbuilt_pretrained_file(config: RunConfig) -> None:
    """Every process of a ``--ddp`` run loads the pretrained weights at once, so they are built before, in one process."""
    if pretrained_file_missing(config.pretrain, config.env.pretrained_file):
        raise SystemExit(
            f"tsrl train --ddp: the pretrained Student {config.env.pretrained_file} is not built yet, and every process "
            f"would load it; build it in one process first (tsrl train without --ddp builds it before its Students, or "
            f"by hand as experiments/configs/{config.pretrain}.yaml says)"
        )


def _process_group(config: RunConfig) -> DistributedGroupView:
    """This process's place in the group torchrun started: NCCL on the GPU of its LOCAL_RANK, or gloo on the CPU."""
    try:
        return DistributedGroupView.from_torchrun(resolve_device(config.env.device))
    except (RuntimeError, ValueError) as error:
        raise SystemExit(f"tsrl train --ddp: {error}") from error


def _run_directory(args: argparse.Namespace, config: RunConfig, progress: bool) -> Path:
    """The run directory, made (a new run) or given (``--resume``), once it is writable; holds the run's config."""
    if args.resume:
        check_settings_and_build_pretrained(config, progress)
        remedy = "fix its permissions or free space on its disk, or copy the run to a writable place and resume the copy"
        run_dir = writable_directory(Path(args.resume), remedy)
        config.save(run_dir / "config.yaml")  # a later resume continues with the learning rate and device given now
        return run_dir
    check_settings_and_build_pretrained(config, progress, Path(args.out or "runs"))
    out = writable_directory(Path(args.out or "runs"))
    if config.tutor_checkpoint is not None:
        check_tutor_checkpoint(config, Path(config.tutor_checkpoint))
    run_dir = out / datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / "config.yaml")
    return run_dir


def check_settings_and_build_pretrained(config: RunConfig, progress: bool, out: Path | None = None) -> None:
    """The settings checks; then, where the pretrained Student the run starts from is missing, its build, once the
    output directory ``out`` (of a new run) is known to be writable; a stop signal during the build exits. What every
    command that trains a Student from a run config does first (``tsrl train``, ``tsrl calibrate``)."""
    check_run_settings(config)
    if pretrained_file_missing(config.pretrain, config.env.pretrained_file):
        if out is not None:
            writable_directory(out)
        with exit_when_stopped():
            build_missing_pretrained_file(config.pretrain, config.env.pretrained_file, progress)


def _lead(
    args: argparse.Namespace, config: RunConfig, group: ProcessGroupView, students: list[tuple[str | None, Path | None]]
) -> None:
    """Rank 0, or the only process: trains the Students with their tutors, writes the run directory, prints the tables."""
    run_dir = _run_directory(args, config, progress=not args.no_progress)
    print(f"run directory: {run_dir}")
    start = time.perf_counter()
    resume = args.resume is not None
    with exit_when_stopped(), directory_lock(run_dir, "tsrl train"):
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
