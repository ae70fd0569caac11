"""Pre-flight checks: the settings, files and directories a command would otherwise fail on only once training has
started, refused before any work with one line that says what is wrong and what to do. ``tsrl train``,
``benchmark``, ``teach``, ``evaluate`` and ``calibrate`` all run them first."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from experiments.config import RunConfig
from experiments.training.pretrain import pretrained_file_missing, pretraining_recipe
from experiments.training.saved_tutor import load_tutor_checkpoint
from tsrl_env import DeepfakeCurriculumEnv
from tsrl_env.config import EnvConfig
from tsrl_env.data import EmbeddedConfig
from tsrl_env.student import Student, available_devices, resolve_device
from tsrl_env.trainer import resolved_precision


def writable_directory(
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


def check_run_settings(config: RunConfig) -> None:
    """Refuse, before any run directory is made, the settings that would otherwise fail only once training starts:
    the device, the backbone's name and its pretrained weights, a batch larger than the training split (where the
    settings alone give its size: the embedded benchmark; the other sources check it once their files are read).

    Where the pretrained weights are still to be built (``config.pretrain``), the backbone is built from random
    weights and compared with the pretraining run's, whose weights will fit it: so a bad setting is refused before
    minutes of pretraining, not after."""
    _check_device(config.env.device)
    resolved_precision(config.env.precision, resolve_device(config.env.device))
    _check_backbone(_env_checkable_before_pretraining(config))
    train_size = _known_train_size(config.env)
    if train_size is not None and config.env.batch_size > train_size:
        raise ValueError(
            f"the env setting batch_size ({config.env.batch_size}) exceeds the {train_size} training images of the "
            "dataset (dataset_options train_size): lower batch_size or raise train_size"
        )


def _check_device(device: str) -> None:
    resolved = resolve_device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"the env setting device is {device!r}, but CUDA is not available here; this machine has: "
            f"{', '.join(available_devices())} (auto picks CUDA where there is one)"
        )
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(
            f"the env setting device is {device!r}, but this machine has {torch.cuda.device_count()} CUDA device(s) "
            f"({', '.join(available_devices())}); use auto, cuda or one of those"
        )


def _env_checkable_before_pretraining(config: RunConfig) -> EnvConfig:
    """The run's env settings, without the pretrained file where that is still to be built from ``config.pretrain``."""
    if not pretrained_file_missing(config.pretrain, config.env.pretrained_file):
        return config.env
    assert config.pretrain is not None  # pretrained_file_missing is true only with a recipe to build from
    recipe = pretraining_recipe(config.pretrain)
    if recipe.env.backbone != config.env.backbone:
        raise ValueError(
            f"the env setting backbone is {config.env.backbone!r}, but pretrain config {config.pretrain!r} builds the "
            f"weights of {recipe.env.backbone!r}; give the backbone it pretrains, or a pretrain config of this backbone"
        )
    return config.env.replace(pretrained_file=None)


def _check_backbone(env: EnvConfig) -> None:
    """Build the Student once, on a copy of torch's RNG so that the run's own draws stay those of an unchecked run."""
    try:
        with torch.random.fork_rng(devices=[]):
            Student.from_timm(env.backbone, env.pretrained_weights)
    except Exception as error:  # timm and the weights' download raise many kinds: each means these two settings
        raise ValueError(
            f"cannot build the Student of the env settings backbone={env.backbone!r}, pretrained={env.pretrained!r}, "
            f"pretrained_file={env.pretrained_file!r} ({type(error).__name__}: {error}); name a timm model, and set "
            "pretrained to false, or pretrained_file to a local file of its weights where they cannot be downloaded"
        ) from error


def _known_train_size(env: EnvConfig) -> int | None:
    if env.dataset != "embedded":
        return None
    return EmbeddedConfig.filled(env.dataset_options)["train_size"]


def check_tutor_checkpoint(config: RunConfig, path: Path) -> None:
    """Load the checkpoint on an environment of ``config`` and drop it: refuses one that does not fit before any work."""
    env = DeepfakeCurriculumEnv(config.env)
    try:
        load_tutor_checkpoint(config.tutor, path, env)
    finally:
        env.close()
