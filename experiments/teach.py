"""Teaching one tutor across many Students: imitation of a teacher's weights with dataset aggregation.

The recipe is that of MentorNet's data-driven mentor (Jiang et al., ICML 2018): learn on Students whose wrong labels
are known, deploy where they are not. The teacher is the ``oracle`` (weight 0 on flipped training labels); the tutor's
actor learns to give each state row the teacher's weight by behavioural cloning, over every row of every Student
taught so far (DAgger, Ross, Gordon & Bagnell, AISTATS 2011): the first Student is weighted by the teacher, each later
one by a blend that hands over to the tutor (the teacher's share halves with each Student), so the tutor learns on the
states its own weights lead to. Its weights go back through the state: a flipped sample that is not fitted keeps a
high loss and a low margin, which is what makes it visible.

Teaching seeds start at :data:`FIRST_TEACHING_SEED`, disjoint from the evaluation seeds of every benchmark config;
the label noise of each teaching Student cycles through ``label_noise``, so that the tutor also learns to leave a
clean dataset alone. The tutor saved is a ``TutorPPO`` (``tutor.zip``, loadable with ``agents.load_tutor("ppo", ...)``)
with ``tutor.json`` beside it, naming the env settings it observes (its state columns).

Files in the output directory: ``teaching.json`` (the config and one record per Student taught: the teaching curve),
``examples.npz`` (the aggregated state rows and teacher weights), ``tutor.zip`` and ``tutor.json``, ``uniform/seedN``
(the paired uniform Students, read back on a rerun), and the report
(:func:`write_teaching_report`): ``teaching.md`` (the curve as a table), ``plots/teaching_curve.png`` and
``plots/tutor_weights.png`` (the tutor's weight against each state column on the last Student's rows). The run is
resumable: it continues after the last Student recorded.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from agents import load_tutor, make_tutor
from agents.vec_env import PerSampleVecEnv
from experiments.config import RunConfig, plain, read_yaml_config
from experiments.plots import plot_teaching_curve, plot_weights_against_columns
from experiments.record import noise_detection_auroc
from experiments.train import train_student
from tsrl_env import DeepfakeCurriculumEnv
from tsrl_env.config import EnvConfig, reject_unknown_keys
from tsrl_env.files import write_atomically

FIRST_TEACHING_SEED = 1000
"""Teaching Students take seeds from here up; evaluation grids use seeds below it."""


@dataclass(frozen=True)
class TeachConfig:
    """What a tutor is taught on: the Students' env (``env``; its ``state_columns`` are what the tutor observes), the
    label noise of successive Students (cycled), the first teaching seed, the tutor and its keywords, and the
    behavioural-cloning settings (``imitation``: ``epochs``, ``batch_size``, ``learning_rate`` of each round).
    ``paired`` trains a uniform-weight Student at every teaching seed too, for the paired gain of the curve."""

    env: EnvConfig = field(default_factory=EnvConfig)
    label_noise: tuple[float, ...] = (0.30, 0.15, 0.45, 0.0)
    first_seed: int = FIRST_TEACHING_SEED
    tutor: str = "ppo"
    tutor_kwargs: dict[str, Any] = field(default_factory=dict)
    imitation: dict[str, float] = field(default_factory=lambda: {"epochs": 10, "batch_size": 512, "learning_rate": 1e-3})
    paired: bool = True

    def __post_init__(self) -> None:
        if self.first_seed < FIRST_TEACHING_SEED:
            raise ValueError(
                f"teaching seeds must start at {FIRST_TEACHING_SEED} or above, disjoint from the evaluation seeds of the "
                f"benchmark configs, got first_seed {self.first_seed}"
            )
        if not self.label_noise or not all(0.0 <= noise < 1.0 for noise in self.label_noise):
            raise ValueError(f"label_noise must list noise levels in [0, 1), got {self.label_noise}")

    def student_env(self, index: int) -> EnvConfig:
        """The env of the ``index``-th teaching Student (0-based): its seed and label noise."""
        noise = self.label_noise[index % len(self.label_noise)]
        return self.env.replace(seed=self.first_seed + index, dataset_options={**self.env.dataset_options, "label_noise": noise})

    def to_dict(self) -> dict[str, Any]:
        return plain({**asdict(self), "env": self.env.to_dict()})


def load_teach_config(path: str | Path) -> TeachConfig:
    """Read a teaching YAML (a name under ``experiments/configs`` or a path)."""
    return load_teach_config_dict(read_yaml_config(path), str(path))


def load_teach_config_dict(settings: dict[str, Any], source: str = "the teaching config") -> TeachConfig:
    """A :class:`TeachConfig` from its settings (as in a YAML file or ``teaching.json``)."""
    settings = dict(settings)
    keys = ["env", "label_noise", "first_seed", "tutor", "tutor_kwargs", "imitation", "paired"]
    reject_unknown_keys(settings, keys, f"teaching setting in {source}")
    env = EnvConfig.from_dict(settings.pop("env", None) or {})
    if "label_noise" in settings:
        settings["label_noise"] = tuple(float(noise) for noise in settings["label_noise"])
    return TeachConfig(env=env, **settings)


@dataclass
class TaughtStudent:
    """One point of the teaching curve: the Student taught, how it was weighted, and how it did.

    ``tutor_noise_auroc`` is how well the tutor's own weights (before it learned from this Student) flag the flipped
    labels of a Student it had not seen; ``acting_noise_auroc`` that of the weights the Student was trained with (the
    teacher's share ``teacher_share`` blended with the tutor's). ``gain_*`` are paired: test AUC minus that of a
    uniform-weight Student at the same seed.
    """

    index: int
    seed: int
    label_noise: float
    teacher_share: float
    tutor_noise_auroc: float
    acting_noise_auroc: float
    tutor_weight_flipped: float
    tutor_weight_clean: float
    seen_auc: float
    unseen_auc: float
    uniform_seen_auc: float
    uniform_unseen_auc: float
    gain_seen_auc: float
    gain_unseen_auc: float
    examples: int
    imitation_loss: float
    wall_time_s: float


def teach(config: TeachConfig, students: int, out: Path, progress: bool = True) -> list[TaughtStudent]:
    """Teach one tutor over ``students`` Students (continuing a run in ``out``); returns the teaching curve."""
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "teaching.json"
    curve = _read_curve(record_path, config)
    examples = dict(np.load(out / "examples.npz")) if curve else {"states": None, "targets": None}
    tutor = None
    for index in range(len(curve), students):
        start = time.perf_counter()
        env = DeepfakeCurriculumEnv(config.student_env(index))
        if tutor is None:
            view = PerSampleVecEnv(env, autoreset=False)
            tutor = (
                load_tutor(config.tutor, out / "tutor.zip", view)
                if curve
                else make_tutor(config.tutor, view, seed=config.first_seed, **config.tutor_kwargs)
            )
        teacher_share = 0.5**index
        episode = _teach_one_student(
            env, tutor, make_tutor("oracle", env), teacher_share, f"Student {index + 1}/{students}", progress
        )
        uniform = (
            _uniform_test_auc(config.student_env(index), out / "uniform" / f"seed{config.first_seed + index}")
            if config.paired
            else (math.nan, math.nan)
        )
        examples = _aggregated(examples, episode["states"], episode["targets"])
        losses = tutor.pretrain_behaviour_cloning(examples["states"], examples["targets"], **_imitation_settings(config))
        flipped = episode["flipped"]
        curve.append(
            TaughtStudent(
                index=index,
                seed=config.first_seed + index,
                label_noise=config.label_noise[index % len(config.label_noise)],
                teacher_share=teacher_share,
                tutor_noise_auroc=noise_detection_auroc(-episode["tutor_weights"], flipped) if index else math.nan,
                acting_noise_auroc=noise_detection_auroc(-episode["acting_weights"], flipped),
                tutor_weight_flipped=float(episode["tutor_weights"][flipped].mean()) if flipped.any() else math.nan,
                tutor_weight_clean=float(episode["tutor_weights"][~flipped].mean()),
                seen_auc=episode["test"]["test_seen"]["auc"],
                unseen_auc=episode["test"]["test_unseen"]["auc"],
                uniform_seen_auc=uniform[0],
                uniform_unseen_auc=uniform[1],
                gain_seen_auc=episode["test"]["test_seen"]["auc"] - uniform[0],
                gain_unseen_auc=episode["test"]["test_unseen"]["auc"] - uniform[1],
                examples=len(examples["targets"]),
                imitation_loss=losses[-1],
                wall_time_s=time.perf_counter() - start,
            )
        )
        tutor.save(out / "tutor.zip")
        write_atomically(out / "tutor.json", json.dumps(_observed_settings(config), indent=2))
        np.savez_compressed(out / "examples.npz", **examples)
        write_atomically(record_path, json.dumps({"config": config.to_dict(), "students": [asdict(s) for s in curve]}, indent=2))
        if progress:
            print(_curve_line(curve[-1]), flush=True)
        env.close()
    write_teaching_report(out)
    return curve


def write_teaching_report(out: Path) -> str:
    """Write ``teaching.md`` and the two plots of a teaching run in ``out`` from its files; returns the markdown."""
    saved = json.loads((out / "teaching.json").read_text())
    curve = [TaughtStudent(**student) for student in saved["students"]]
    columns = [
        "index",
        "seed",
        "label_noise",
        "teacher_share",
        "tutor_noise_auroc",
        "tutor_weight_flipped",
        "tutor_weight_clean",
        "acting_noise_auroc",
        "seen_auc",
        "gain_seen_auc",
        "unseen_auc",
        "gain_unseen_auc",
        "examples",
        "imitation_loss",
        "wall_time_s",
    ]
    rows = [[_shown(getattr(student, name)) for name in columns] for student in curve]
    lines = [
        "# Teaching curve",
        "",
        "One row per Student taught, in order. `tutor_*`: the tutor's own weights on a Student it had not yet learned from "
        "(its noise AUROC: how well a low weight flags a flipped label); `acting_noise_auroc`: the weights the Student was "
        "trained with (the teacher's share blended with the tutor's); `gain_*`: paired, test AUC minus a uniform-weight "
        "Student's at the same seed. Teaching seeds; nothing here is an evaluation seed.",
        "",
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        f"Compute: {sum(student.wall_time_s for student in curve) / 60:.0f} min of one process for {len(curve)} Students "
        "(each trained taught and, for the paired gain, with uniform weights).",
    ]
    text = "\n".join(lines) + "\n"
    write_atomically(out / "teaching.md", text)
    (out / "plots").mkdir(exist_ok=True)
    plot_teaching_curve(curve, out / "plots" / "teaching_curve.png")
    # The tutor's weights on the rows of the last Student with wrong labels to find.
    shown = next((student for student in reversed(curve) if student.label_noise > 0), curve[-1])
    rows = slice(curve[shown.index - 1].examples if shown.index else 0, shown.examples)
    examples = np.load(out / "examples.npz")
    states = examples["states"][rows]
    tutor = load_tutor(saved["config"]["tutor"], out / "tutor.zip")
    weights = np.asarray(tutor.predict(states, deterministic=True)[0], np.float32).ravel()
    layout = DeepfakeCurriculumEnv(load_teach_config_dict(saved["config"]).student_env(0)).state_layout
    title = f"the final tutor on teaching Student {shown.index + 1} (seed {shown.seed}, label noise {shown.label_noise:.2f})"
    plot_weights_against_columns(
        states, weights, examples["targets"][rows] < 0.5, layout, out / "plots" / "tutor_weights.png", title
    )
    return text


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _teach_one_student(
    env: DeepfakeCurriculumEnv, tutor: Any, teacher: Any, teacher_share: float, label: str, progress: bool
) -> dict[str, Any]:
    """Train one Student with the blend of the teacher's and the tutor's weights; every tutored row's state, teacher
    weight and tutor weight, whether its label was flipped, and the test metrics."""
    flipped_mask = env.splits["train"].flipped.cpu().numpy()
    rows: dict[str, list[np.ndarray]] = {"states": [], "targets": [], "tutor_weights": [], "acting_weights": [], "flipped": []}
    states, _ = env.reset(seed=env.config.seed)
    steps = env.config.epochs * env.steps_per_epoch
    info: dict[str, Any] = {}
    for _ in tqdm(range(steps), desc=label, disable=not progress, leave=False):
        target = teacher.predict(states)[0].ravel()
        own = np.asarray(tutor.predict(states, deterministic=True)[0], np.float32).ravel()
        acting = teacher_share * target + (1.0 - teacher_share) * own
        for key, value in (("states", states), ("targets", target), ("tutor_weights", own), ("acting_weights", acting)):
            rows[key].append(np.array(value, np.float32))
        rows["flipped"].append(flipped_mask[env.batch_sample_ids])
        states, _, terminated, _, info = env.step(acting.astype(np.float32))
        if terminated:
            break
    return {**{key: np.concatenate(value) for key, value in rows.items()}, "test": info["test"]}


def _uniform_test_auc(env_config: EnvConfig, out: Path) -> tuple[float, float]:
    """Seen and unseen test AUC of a uniform-weight Student at the same seed (same data, initialisation, order),
    trained (or read back, on a rerun) under ``out``."""
    run = train_student(
        RunConfig(env=env_config, seed=env_config.seed), out, "uniform", progress=False, save_student=False, resume=True
    )
    return run.test["test_seen"]["auc"], run.test["test_unseen"]["auc"]


def _aggregated(examples: dict[str, np.ndarray | None], states: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    if examples["states"] is None:
        return {"states": states, "targets": targets}
    return {"states": np.concatenate([examples["states"], states]), "targets": np.concatenate([examples["targets"], targets])}


def _imitation_settings(config: TeachConfig) -> dict[str, Any]:
    settings = config.imitation
    return {
        "epochs": int(settings["epochs"]),
        "batch_size": int(settings["batch_size"]),
        "learning_rate": float(settings["learning_rate"]),
    }


def _observed_settings(config: TeachConfig) -> dict[str, Any]:
    """What ``tutor.json`` says: the tutor's algorithm and the env settings of the state it reads."""
    env = config.env
    return {
        "algorithm": config.tutor,
        "env": {"state_columns": list(env.state_columns), "state_counters": list(env.state_counters)},
    }


def _read_curve(path: Path, config: TeachConfig) -> list[TaughtStudent]:
    if not path.is_file():
        return []
    saved = json.loads(path.read_text())
    if saved["config"] != config.to_dict():
        raise ValueError(
            f"{path} was written by another teaching config; teach into another --out, or delete that directory to start again"
        )
    return [TaughtStudent(**student) for student in saved["students"]]


def _curve_line(student: TaughtStudent) -> str:
    return (
        f"Student {student.index + 1} (seed {student.seed}, noise {student.label_noise:.2f}, teacher share "
        f"{student.teacher_share:.2f}): tutor noise AUROC {student.tutor_noise_auroc:.3f}, weight flipped/clean "
        f"{student.tutor_weight_flipped:.2f}/{student.tutor_weight_clean:.2f}; test AUC seen {student.seen_auc:.3f} "
        f"({student.gain_seen_auc:+.3f} vs uniform), unseen {student.unseen_auc:.3f} ({student.gain_unseen_auc:+.3f}); "
        f"{student.wall_time_s:.0f} s"
    )
