"""``tsrl evaluate``: saved Students tested side by side on the test splits of a dataset config (cross-dataset), or of
the data they were trained on."""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.config import RunConfig, config_names, load_run_config
from experiments.evaluate import check_evaluation, evaluate_students, evaluation_config, find_students, own_test_data
from experiments.preflight import writable_directory
from experiments.records.student_run import save_results
from experiments.report import final_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run_configs = ", ".join(config_names("run"))
    parser.add_argument(
        "students", nargs="+", metavar="STUDENT", help="a student.pt, a Student's folder, or a run directory (all its Students)"
    )
    parser.add_argument(
        "--config",
        help=f"whose env settings give the test data (default: those the Students were trained with): a YAML path or one of: "
        f"{run_configs}",
    )
    parser.add_argument("--backbone", help="timm model name the Students were trained as (overrides the config)")
    parser.add_argument("--image-size", type=int, help="side of the images the Students were trained on (overrides the config)")
    parser.add_argument("--device", help="auto, cpu, cuda, ... (overrides the config)")
    parser.add_argument("--out", default="runs/evaluate", help="folder of results.json (default: runs/evaluate)")


def run(args: argparse.Namespace) -> None:
    students = [student for path in args.students for student in find_students(Path(path))]
    overrides = {"backbone": args.backbone, "image_size": args.image_size, "device": args.device}
    if args.config is not None:
        config = load_run_config(args.config, **overrides)
    else:
        config = RunConfig(env=own_test_data(students).replace(**{k: v for k, v in overrides.items() if v is not None}))
    env = evaluation_config(config)
    check_evaluation(students, env)
    out = writable_directory(Path(args.out))
    runs = evaluate_students(students, env)
    save_results(runs, out)
    print(final_table(runs, time_label="evaluation time (s)"))
    print(f"\nmetrics of each Student in {out / 'results.json'}")
