"""What produced a result beyond its settings: the code's commit, the files a run reads and the numeric environment.

A record names its settings (its fingerprint), but two runs with equal settings can still differ when the code
changed or a file at the same path did: a swapped ``pretrained_file`` or saved tutor. So every fingerprint carries
the SHA-256 of each file the Student's run reads beyond the dataset (a changed file is a changed setting), and every
record the code's commit and whether the working tree had uncommitted changes, and what decides its last bits besides
its seed (:func:`numeric_environment`: torch threads, CPU, the kernels' instruction-set caps; see
:mod:`experiments.studies.reproducibility`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from agents import tutor_spec

_REPOSITORY = Path(__file__).resolve().parents[2]
_CHUNK = 1 << 20
KERNEL_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")
"""Environment variables that change which CPU kernels oneDNN, MKL and ATen pick: a record names those set."""


@functools.lru_cache(maxsize=64)
def _sha256_of(path: Path, size: int, modified_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256(path: str | Path) -> str:
    """The file's SHA-256 (cached per path, size and modification time, so a grid hashes each file once)."""
    path = Path(path).resolve()
    status = path.stat()
    return _sha256_of(path, status.st_size, status.st_mtime_ns)


def files_read(env_settings: dict[str, Any], tutor: str, tutor_checkpoint: str | None) -> dict[str, str]:
    """``{setting: sha256}`` of every file a run of these settings reads beyond the dataset: the pretrained weights,
    a saved tutor's files, a tutor checkpoint and the settings file beside it. Files that do not exist are left out
    (the run's own checks refuse them)."""
    named: dict[str, Path] = {}
    if env_settings.get("pretrained_file"):
        named["env.pretrained_file"] = Path(env_settings["pretrained_file"])
    for index, path in enumerate(getattr(tutor_spec(tutor), "files", ())):
        named[f"tutor.files[{index}]"] = Path(path)
    if tutor_checkpoint:
        named["tutor_checkpoint"] = Path(tutor_checkpoint)
        named["tutor_checkpoint.json"] = Path(tutor_checkpoint).with_suffix(".json")
    return {setting: sha256(path) for setting, path in named.items() if path.is_file()}


def code_version() -> dict[str, Any]:
    """``{"commit": ..., "dirty": ...}`` of the checkout this package runs from; both None outside a git checkout
    (an installed wheel), where the package version names the code instead.

    Read once, when this module is first imported in the process: a run names the code it started with, not a commit
    made while it ran (a grid's workers import it when they start, and may train for hours)."""
    return dict(_CODE_AT_START)


def read_code_version(root: Path = _REPOSITORY) -> dict[str, Any]:
    """``{"commit": ..., "dirty": ..., "version": ...}`` of the git checkout at ``root`` (by default the one this package
    runs from), read now; commit and dirty are None where git cannot tell (no git, not a checkout, git too slow)."""
    try:
        commit = git(root, "rev-parse", "HEAD")
        dirty = bool(git(root, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):  # no git, not a checkout, or git too slow: the version names the code
        return {"commit": None, "dirty": None, "version": _package_version()}
    return {"commit": commit, "dirty": dirty, "version": _package_version()}


def git(root: Path, *arguments: str, timeout: float | None = 10) -> str:
    """The output of ``git -C root ARGUMENTS``; raises ``CalledProcessError``, or ``TimeoutExpired`` after ``timeout``
    seconds."""
    return subprocess.run(
        ["git", "-C", str(root), *arguments], capture_output=True, text=True, check=True, timeout=timeout
    ).stdout.strip()


def _package_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tsrl")
    except PackageNotFoundError:
        return None


def numeric_environment() -> dict[str, Any]:
    """What decides a run's last bits besides its seed: torch threads, CPU, the kernels' instruction-set caps."""
    import torch

    return {
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        **{name: os.environ[name] for name in KERNEL_VARIABLES if name in os.environ},
    }


KERNEL_KEYS = ("torch", "cpu", "cpu_capability", *KERNEL_VARIABLES)
"""The entries of a numeric environment that say which CPU kernels computed a Student, as far as torch and the system
report it: the same seed and threads under other values train another Student in the last bits. The CPU's name is
among them because capping oneDNN and MKL at AVX2 did not make an Intel AVX-512 machine and an AMD AVX2 one agree
(``experiments/results/reproducibility/README.md``); it does not tell two models of one vendor apart where the
system names both alike (every AMD machine here reports "AMD EPYC")."""


def kernel_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """How the CPU and kernels of ``current`` (a :func:`numeric_environment`) differ from those ``recorded``, as
    ``"key: recorded -> current"``."""
    return [
        f"{key}: {recorded.get(key)!r} -> {current.get(key)!r}" for key in KERNEL_KEYS if recorded.get(key) != current.get(key)
    ]


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


_CODE_AT_START = read_code_version()
