"""Fine-tuning a taught tutor by reinforcement learning across teaching Students, from its imitation start.

    python -m experiments.teaching.finetune [--config teach_v1_pretrained] [--tutor noise_mentor_v1_pretrained]
        [--reward counterfactual] [--students 16 ... 31] [--trusted-batch-size 64] [--out DIR]

Imitation (:mod:`experiments.teaching.teach`) teaches a tutor the oracle's weights; the paper's tutor learns from a
reward instead. This starts PPO from the taught tutor's saved model (its cloned actor; its critic, never trained by
imitation, learns here from the start) and trains it on the reward named, one teaching Student after another: each
Student (the teaching config's ``--students`` indices: seed, dataset, label noise and noise model as ``tsrl teach``
gives them) is one episode under the tutor's own sampled actions, with ``TutorPPO``'s settings as saved (one rollout a
Student epoch, rewards standardised per rollout, a clipped update after each). The reward should be one whose
action-dependent part was measured above its noise on teaching Students first (``python -m
experiments.studies.reward_snr``): ``counterfactual`` (each sample's weight times the first-order drop of a trusted
batch's loss that its gradient brings) is the one that passed.

Per Student, ``finetune.json`` records the Student's condition, the mean weight the tutor acted with on flipped and on
clean samples (sampled, exploring), the mean reward on each, the final trusted (validation) AUC and the test AUCs, and
the wall time; ``finetune.md`` tabulates them once the run is through. After each Student the tutor is written as
``tutor.zip`` with the starting tutor's settings as ``tutor.json`` (the state it reads), a saved-tutor pair: copied into
``experiments/tutors`` as ``NAME.zip`` and ``NAME.json`` it is evaluated by name like any taught tutor. Each file is
written atomically, in the order of ``tsrl teach``'s (:mod:`experiments.teaching.files`): the tutor staged, the record
naming its SHA-256, then the tutor moved into place; a rerun continues after the last Student recorded, from the
tutor the record names, and refuses a run made otherwise (other config, start tutor, reward or Students). Whether the
fine-tune helps is decided on evaluation data, paired against its imitation start, in a benchmark grid; this records
only how it learned.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

import agents
from agents import PerSampleSB3VecEnv, TutorPPO
from experiments.analysis.statistics import GroupMoments
from experiments.config import plain
from experiments.records.provenance import code_version, sha256
from experiments.report import markdown_table
from experiments.teaching.config import TeachConfig, check_teach_settings, load_teach_config
from experiments.teaching.files import STAGED_TUTOR, TUTOR, TUTOR_SETTINGS, settle_tutor, write_in_order
from experiments.training.pretrain import build_missing_pretrained_file
from tsrl_env.files import directory_lock, write_atomically
from tsrl_env.rewards import reward_class

RECORD = "finetune.json"
REPORT = "finetune.md"
KEPT_SINCE_FIRST_RUN = ("start_sha256",)
"""Settings the first run's record does not hold (it predates their being kept); a rerun does not refuse it for them."""


class EpisodeTally(BaseCallback):
    """Over one Student's episode: the acting weights and rewards on flipped and clean samples, and the last step's info."""

    def __init__(self, flipped: np.ndarray) -> None:
        super().__init__()
        self.flipped = flipped
        self.moments = {"weight": GroupMoments(), "reward": GroupMoments()}
        self.last_info: dict[str, Any] = {}

    def _on_step(self) -> bool:
        info = self.locals["infos"][0]  # every sub-env's info is the step's whole-batch info
        flipped = self.flipped[info["sample_ids"]]
        self.moments["weight"].add(info["weights"], flipped)
        self.moments["reward"].add(info["sample_rewards"], flipped)
        self.last_info = info
        return True

    def means(self) -> dict[str, float | None]:
        """Mean weight and reward on clean and on flipped samples; None for a group without samples (no noise)."""
        return {
            f"{key}_{group}": total / count if count else None
            for key, moments in self.moments.items()
            for group, total, count in zip(("clean", "flipped"), moments.sums, moments.counts, strict=True)
        }


def finetune_student(
    config: TeachConfig, index: int, tutor_name: str, tutor_path: Path, reward: str, trusted_batch_size: int
) -> tuple[Any, dict]:
    """One teaching Student's episode of PPO from the tutor at ``tutor_path`` (a save of the saved tutor
    ``tutor_name``, whose state it reads); returns the tutor and the Student's record."""
    env_config = config.student_env(index).replace(reward=reward, trusted_batch_size=trusted_batch_size)
    env = agents.make_env_for(tutor_name, env_config)
    try:
        view = PerSampleSB3VecEnv(env, autoreset=False)
        # One rollout is one Student epoch of this env (the saved tutor's was that of the Students it was taught on).
        tutor = TutorPPO.load(tutor_path, env=view, custom_objects={"n_steps": env.steps_per_epoch})
        # The Student's seed for its episode, PPO's exploration and minibatches (on CUDA SB3 also makes cuDNN
        # deterministic for the process, as loading does).
        tutor.set_random_seed(env_config.seed)
        tally = EpisodeTally(env.splits["train"].flipped.cpu().numpy())
        start = time.perf_counter()
        tutor.learn(env_config.epochs * env.steps_per_epoch * view.num_envs, callback=tally)
    finally:
        env.close()
    info = tally.last_info
    record = {
        "index": index,
        "seed": env_config.seed,
        "noise_model": env_config.dataset_options.get("noise_model"),
        "label_noise": env_config.dataset_options.get("label_noise"),
        **tally.means(),
        "trusted_auc": float(info["val"]["auc"]),
        **{f"{split}_auc": float(metrics["auc"]) for split, metrics in info["test"].items()},
        "wall_time_s": time.perf_counter() - start,
    }
    return tutor, record


def finetune(
    config: TeachConfig, tutor_name: str, students: list[int], reward: str, trusted_batch_size: int, out: Path
) -> list[dict]:
    """Fine-tune the saved tutor ``tutor_name`` over the teaching ``students`` (continuing a run in ``out``); returns
    the records. The tutor is written as ``out/tutor.zip`` with ``tutor.json``, in the order of
    :mod:`experiments.teaching.files` (staged, recorded by its SHA-256, then moved into place)."""
    start = agents.TUTORS.saved(tutor_name)  # a tutor that is not a saved one is refused, naming the saved ones
    if start.algorithm != "ppo":
        raise ValueError(f"a fine-tune continues PPO; the saved tutor {tutor_name!r} was saved by {start.algorithm!r}")
    start_model, start_settings = start.paths
    if reward_class(reward).pays_late:
        raise ValueError(
            f"the {reward!r} reward pays each action a Student epoch late, which a tutor loaded from a save taught "
            "without it does not credit; fine-tune with a reward that pays each step's own actions"
        )
    check_teach_settings(config, max(students) + 1)  # the protocol's seeds and data included
    build_missing_pretrained_file(config.pretrain, config.env.pretrained_file)
    made_by = {
        "config": plain(config.to_dict()),
        "tutor": tutor_name,
        "reward": reward,
        "trusted_batch_size": trusted_batch_size,
        "start_sha256": sha256(start_model),
    }
    out.mkdir(parents=True, exist_ok=True)
    with directory_lock(out, "finetune"):
        records = _recorded_students(out, made_by, students)
        if records:
            settle_tutor(out, records[-1]["tutor_sha256"])
        write_atomically(out / TUTOR_SETTINGS, Path(start_settings).read_bytes())
        for index in students[len(records) :]:
            tutor, record = finetune_student(
                config, index, tutor_name, out / TUTOR if records else start_model, reward, trusted_batch_size
            )
            model = io.BytesIO()
            tutor.save(model)
            records.append({**record, "tutor_sha256": hashlib.sha256(model.getvalue()).hexdigest()})
            writes = [
                (STAGED_TUTOR, model.getvalue(), "after_tutor_staged"),
                (RECORD, json.dumps({**made_by, "code": code_version(), "students": records}, indent=2), "after_record_saved"),
                (TUTOR, model.getvalue(), "after_tutor_saved"),
            ]
            write_in_order(out, writes, RECORD, len(records), "the same python -m experiments.teaching.finetune command")
            print(_line(record), flush=True)
        write_atomically(out / REPORT, report(records, made_by))
    return records


def _recorded_students(out: Path, made_by: dict[str, Any], students: list[int]) -> list[dict]:
    """The Students a fine-tune in ``out`` recorded, refused where it was made otherwise or on other Students. A
    record that predates a setting's being kept (:data:`KEPT_SINCE_FIRST_RUN`) is not refused for it."""
    if not (out / RECORD).exists():
        return []
    saved = json.loads((out / RECORD).read_text())
    differing = sorted(
        key for key, value in made_by.items() if (saved[key] != value if key in saved else key not in KEPT_SINCE_FIRST_RUN)
    )
    if differing:
        raise SystemExit(f"{out} holds a fine-tune with other {', '.join(differing)}: give another --out")
    records = saved["students"]
    done = [record["index"] for record in records]
    if done != students[: len(done)]:
        raise SystemExit(
            f"{out} holds a fine-tune that trained Students {', '.join(str(r['seed']) for r in records)}, not the "
            f"first of {', '.join(map(str, students))} (indices): give another --out"
        )
    return records


def _maybe(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _line(record: dict) -> str:
    return (
        f"Student {record['seed']} ({record['noise_model']} {record['label_noise']}): weight clean "
        f"{record['weight_clean']:.3f} flipped {_maybe(record['weight_flipped'])}, trusted AUC "
        f"{record['trusted_auc']:.4f}, "
        f"{record['wall_time_s']:.0f} s"
    )


def report(records: list[dict], made_by: dict) -> str:
    columns = ["seed", "noise", "weight clean", "weight flipped", "reward clean", "reward flipped", "trusted AUC", "seen AUC"]
    rows = [
        [
            str(r["seed"]),
            f"{r['noise_model']} {r['label_noise']}",
            *(_maybe(r[key]) for key in ("weight_clean", "weight_flipped")),
            *(_maybe(r[key], "+.3g") for key in ("reward_clean", "reward_flipped")),
            f"{r['trusted_auc']:.4f}",
            f"{r.get('test_seen_auc', float('nan')):.4f}",
        ]
        for r in records
    ]
    lines = [
        f"# Fine-tune of {made_by['tutor']} with the {made_by['reward']} reward",
        "",
        f"Teaching Students {', '.join(str(r['seed']) for r in records)}, one PPO episode each, in this order; the weights",
        "are the sampled (exploring) actions the Student was trained with; rewards as the env paid them, before PPO's",
        "standardisation.",
        "",
        markdown_table(columns, rows),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.teaching.finetune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="teach_v1_pretrained", help="the teaching config whose Students it learns on")
    parser.add_argument("--tutor", default="noise_mentor_v1_pretrained", help="the saved (taught) tutor it starts from")
    parser.add_argument("--reward", default="counterfactual", help="the env reward PPO learns from")
    parser.add_argument(
        "--students",
        type=int,
        nargs="+",
        default=list(range(16, 32)),
        help="teaching Student indices, in order (default 16-31: seeds 1016-1031 under teach_v1_pretrained, every "
        "condition once, none of them taught on by imitation)",
    )
    parser.add_argument("--trusted-batch-size", type=int, default=64, help="trusted (validation) images a step")
    parser.add_argument("--out", default="experiments/results/protocol_v1/finetune_pretrained")
    args = parser.parse_args(argv)
    config = load_teach_config(args.config)
    records = finetune(config, args.tutor, args.students, args.reward, args.trusted_batch_size, Path(args.out))
    command = "python -m experiments.teaching.finetune " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"{len(records)} Students: {command.strip()}")


if __name__ == "__main__":
    main()
