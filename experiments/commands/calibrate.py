"""``tsrl calibrate``: test AUCs of uniform-weight Students with and without label noise
(:mod:`experiments.studies.calibrate`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.commands.train import check_settings_and_build_pretrained
from experiments.config import config_names, load_run_config
from experiments.preflight import writable_directory
from experiments.studies.calibrate import calibrate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run_configs = ", ".join(config_names("run"))
    parser.add_argument("--config", default="demo", help=f"a YAML path or one of: {run_configs} (default: demo)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="Student seeds (default: 0 1)")
    parser.add_argument("--backbone", help="timm model name of the Student (overrides the config)")
    parser.add_argument("--device", help="auto, cpu, cuda, ... (overrides the config)")
    parser.add_argument("--out", default="runs/calibration", help="output folder (default: runs/calibration)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> None:
    config = load_run_config(args.config, backbone=args.backbone, device=args.device)
    check_settings_and_build_pretrained(config, not args.no_progress, Path(args.out))
    out = writable_directory(Path(args.out))
    print(calibrate(config, args.seeds, out, progress=not args.no_progress))
