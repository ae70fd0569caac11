"""``tsrl preprocess``: videos to face crops in DeepfakeBench's layout, with the env settings that train on them."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import yaml

from tsrl_env.data.preprocess import preprocess_videos


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos_dir", help="folder with real/ and fake/ (or train/, val/, test/ holding them) of videos")
    parser.add_argument("out_dir", help="output folder: rgb/ (face crops), dataset_json/, dataset_options.yaml")
    parser.add_argument("--name", default="videos", help="dataset name: JSON file, top-level key, label prefix")
    parser.add_argument("--frames", type=int, default=32, help="frames sampled evenly per video (default: 32)")
    parser.add_argument("--size", type=int, default=256, help="side of the square face crops in pixels (default: 256)")
    parser.add_argument("--margin", type=float, default=0.3, help="margin added around the face box (default: 0.3)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="videos carved as val when there is no val/")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="videos carved as test without split folders")
    parser.add_argument("--seed", type=int, default=0, help="seed of the carving (default: 0)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")


def run(args: argparse.Namespace) -> None:
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
