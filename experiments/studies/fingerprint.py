"""Fingerprints of cheap runs, to show that a refactor changed no number: record them once, compare them after.

    python -m experiments.studies.fingerprint record fingerprints.json
    python -m experiments.studies.fingerprint compare fingerprints.json

Each fingerprint is a run on the ``tiny`` config with torch at one thread:

- ``env/<reward>/...``: the environment stepped with fixed random weights (no tutor), every observation, reward,
  ``reward_for`` record and weight hashed, plus a restore from the epoch-start state continued to the end; under each
  reward, with both counters in the state and a projected feature width, and on frame files read from a folder;
- ``train/<tutor>@<reward>``: :func:`experiments.training.student.train_student` (a learned tutor learning, a heuristic acting),
  recording the run's record without its wall time, a SHA-256 of the final Student's ``state_dict`` and the saved
  tutor's deterministic weights on the first observation of a fresh environment;
- ``cli/tiny``: ``tsrl train --config tiny`` in a subprocess, its ``results.json`` without wall times and both
  Students' hashes.

``compare`` recomputes them all and lists every fingerprint whose bytes differ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from agents import load_tutor, tutor_spec
from experiments.config import load_run_config
from experiments.training.student import train_student
from tsrl_env import DeepfakeCurriculumEnv

TUTOR_RUNS = (
    ("uniform", "tsrl"),
    ("self_paced", "tsrl"),
    ("ppo", "tsrl"),
    ("ppo", "tsrl_reference"),
    ("ppo", "next_visit"),
    ("ppo", "val_alignment"),
    ("sac", "tsrl"),
    ("sac", "next_visit"),
    ("a2c", "val_alignment"),
    ("attention", "tsrl"),
    ("attention", "next_visit"),
)
"""(tutor, reward) pairs trained with :func:`train_student` on the ``tiny`` config."""

ENV_RUNS = {
    "tsrl": {"reward": "tsrl"},
    "tsrl_reference": {"reward": "tsrl_reference"},
    "next_visit": {"reward": "next_visit"},
    "val_alignment": {"reward": "val_alignment", "trusted_batch_size": 16},
    "counters_projected": {"state_counters": ["learned", "forgotten"], "state_feature_dim": 8, "augment": False},
}
"""Environment settings, over the ``tiny`` config's, of the runs stepped with fixed random weights."""

EPOCH_FIELDS = ("epoch", "phase", "val_auc", "mean_weight", "mean_reward", "student_loss", "weight_histogram")


def digest(*arrays: Any) -> str:
    """SHA-256 of the bytes of numpy arrays or tensors, with their dtypes and shapes."""
    hasher = hashlib.sha256()
    for array in arrays:
        value = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
        hasher.update(f"{value.dtype}{value.shape}".encode())
        hasher.update(np.ascontiguousarray(value).tobytes())
    return hasher.hexdigest()


def state_dict_digest(state: dict[str, torch.Tensor]) -> str:
    hasher = hashlib.sha256()
    for name in sorted(state):
        hasher.update(name.encode())
        hasher.update(digest(state[name]).encode())
    return hasher.hexdigest()


def tiny_env_settings(**changes: Any) -> dict[str, Any]:
    settings = load_run_config("tiny").env.to_dict()
    settings.update(device="cpu", num_workers=0, **changes)
    return settings


def env_fingerprint(settings: dict[str, Any]) -> dict[str, Any]:
    """Step an episode with fixed random weights; hash everything it returns; restore the last epoch start and rerun."""
    env = DeepfakeCurriculumEnv(**settings)
    rng = np.random.default_rng(0)
    weights = rng.uniform(size=(env.config.epochs * env.steps_per_epoch, env.batch_size)).astype(np.float32)
    observation, info = env.reset(seed=3)
    hasher = hashlib.sha256(digest(observation).encode())
    warmup_auc = [record["val"]["auc"] for record in info["warmup"]]
    restore_at, restored_hashes, hashes = None, [], []
    test: dict[str, Any] = {}
    for index, action in enumerate(weights):
        if env.at_epoch_start and env.epoch == env.config.epochs - 1:
            restore_at = (index, env.epoch_start_state())
        observation, reward, terminated, _, info = env.step(action)
        step_hash = _step_digest(observation, reward, info, env.steps_per_epoch)
        hashes.append(step_hash)
        hasher.update(step_hash.encode())
        if terminated:
            test = info["test"]
            break
    student = state_dict_digest(env.finished_student.state_dict())
    assert restore_at is not None
    index, state = restore_at
    env.reset(options={"restore": state})
    for action in weights[index:]:
        observation, reward, terminated, _, info = env.step(action)
        restored_hashes.append(_step_digest(observation, reward, info, env.steps_per_epoch))
        if terminated:
            break
    env.close()
    return {
        "steps": hasher.hexdigest(),
        "warmup_val_auc": warmup_auc,
        "test": test,
        "student": student,
        "restore_matches": restored_hashes == hashes[index:],
        "restored_student": state_dict_digest(env.finished_student.state_dict()),
    }


def _step_digest(observation: np.ndarray, reward: float, info: dict[str, Any], steps_per_epoch: int) -> str:
    parts = [observation, np.float64(reward), info["sample_rewards"], info["sample_ids"], info["weights"]]
    parts += [np.float64(info["loss"]), np.float64(info["accuracy"]), np.int64(info["clipped_actions"])]
    if "reward_for" in info:
        credit = info["reward_for"]
        # The arrays of the record as the fingerprints were first taken: its fields in name order, with the flat
        # transition number (epoch * steps_per_epoch + step) * batch_size + slot, -1 where no action is paid.
        transition = np.where(
            credit.epoch >= 0, (credit.epoch * steps_per_epoch + credit.step) * len(credit.slot) + credit.slot, -1
        )
        parts += [credit.epoch, credit.slot, credit.step, transition.astype(np.int64), credit.weight]
    if "val" in info:
        parts.append(np.float64(info["val"]["auc"]))
    return digest(*parts)


def write_folder(root: Path, per_class: int = 48, size: int = 16) -> None:
    """A small image folder (``real/`` and ``fake/<family>/``, one frame per video) of deterministic noise images."""
    rng = np.random.default_rng(0)
    for index in range(per_class):
        for folder, shift in (("real", 0), (f"fake/{'ab'[index % 2]}", 40)):
            pixels = np.clip(rng.normal(120 + shift, 30, size=(size, size, 3)), 0, 255).astype(np.uint8)
            path = root / folder / f"{index:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)


def tutor_fingerprint(tutor: str, reward: str, out: Path) -> dict[str, Any]:
    config = load_run_config("tiny", tutor=tutor, reward=reward, device="cpu")
    run = train_student(config, out, progress=False)
    record = stable_record(json.loads(json.dumps(asdict(run))))
    student = torch.load(out / tutor / "student.pt", weights_only=True)
    result = {"run": record, "student": state_dict_digest(student)}
    env = DeepfakeCurriculumEnv(config.env)
    observation, _ = env.reset(seed=11)
    if tutor_spec(tutor).learns:
        agent = load_tutor(tutor, out / tutor / "tutor.zip", env)
        actions, _ = agent.predict(observation, deterministic=True)
        result["first_actions"] = np.asarray(actions, np.float64).reshape(-1)[:8].tolist()
        result["first_actions_digest"] = digest(np.asarray(actions))
    env.close()
    return result


def cli_fingerprint(out: Path) -> dict[str, Any]:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "experiments.cli", "train", "--config", "tiny", "--device", "cpu"]
    subprocess.run([*command, "--out", str(out), "--no-progress"], check=True, env=environment, capture_output=True)
    (run_dir,) = [path for path in out.iterdir() if path.is_dir()]
    results = [stable_record(run) for run in json.loads((run_dir / "results.json").read_text())]
    students = {
        path.parent.name: state_dict_digest(torch.load(path, weights_only=True)) for path in sorted(run_dir.glob("*/student.pt"))
    }
    return {"results": results, "students": students}


def stable_record(run: dict[str, Any]) -> dict[str, Any]:
    """A run record's numbers that depend on the training only: test metrics, epoch curves, weight and reward tallies.

    Wall times vary from run to run, and fields the record gains later would make old fingerprints differ for nothing.
    """
    epochs = [{key: epoch[key] for key in EPOCH_FIELDS} for epoch in run["epochs"]]
    tallies = {key: value for key, value in run.items() if key.startswith(("weight_by_", "reward_by_"))}
    return {"test": run["test"], "epochs": epochs, **tallies}


def fingerprints() -> dict[str, Any]:
    torch.set_num_threads(1)
    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        os.environ.setdefault("TSRL_CACHE_DIR", str(root / "cache"))
        for name, changes in ENV_RUNS.items():
            found[f"env/{name}"] = env_fingerprint(tiny_env_settings(**changes))
            print(f"env/{name}", flush=True)
        write_folder(root / "folder")
        folder = {"dataset": "folder", "dataset_options": {"root": str(root / "folder"), "image_size": 16}, "batch_size": 16}
        found["env/folder"] = env_fingerprint(tiny_env_settings(**folder))
        print("env/folder", flush=True)
        for tutor, reward in TUTOR_RUNS:
            found[f"train/{tutor}@{reward}"] = tutor_fingerprint(tutor, reward, root / f"train-{tutor}-{reward}")
            print(f"train/{tutor}@{reward}", flush=True)
        found["cli/tiny"] = cli_fingerprint(root / "cli")
        print("cli/tiny", flush=True)
    return json.loads(json.dumps(found))


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["record", "compare"])
    parser.add_argument("path", type=Path, help="the JSON file of recorded fingerprints")
    args = parser.parse_args(argv)
    found = fingerprints()
    if args.action == "record":
        args.path.write_text(json.dumps(found, indent=1, sort_keys=True))
        print(f"{len(found)} fingerprints written to {args.path}")
        return
    recorded = json.loads(args.path.read_text())
    # Compared as JSON text: NaN (a warm-up epoch's loss) equals itself there.
    differing = [name for name in dict.fromkeys([*recorded, *found]) if _text(recorded.get(name)) != _text(found.get(name))]
    for name in differing:
        print(f"DIFFERS: {name}")
    print(f"{len(found) - len(differing)} of {len(recorded)} fingerprints identical")
    if differing:
        sys.exit(1)


if __name__ == "__main__":
    main()
