"""Teaching one tutor across many Students: imitation of a teacher's weights with dataset aggregation.

The recipe is that of MentorNet's data-driven mentor (Jiang et al., ICML 2018): learn on Students whose wrong labels
are known, deploy where they are not. The teacher is the ``oracle`` (weight 0 on flipped training labels) unless the
config names another tutor that does not learn (``teacher``: e.g. ``l2rw`` on ``val_unseen``); the tutor's
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
``examples.npz`` (the aggregated state rows and teacher weights), ``tutor.zip`` and ``tutor.json``, written in the order
of :mod:`experiments.teaching.files`, so that a run stopped anywhere continues after the last Student recorded;
``uniform/seedN`` (the paired uniform Students, read back or continued on a rerun); and the report
(:mod:`experiments.teaching.report`). A run holds the directory's lock, checks every setting before any Student trains,
and stops at once on SIGINT or SIGTERM, keeping the Students recorded and naming the command that continues it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from agents import PerSampleSB3VecEnv, load_tutor, make_tutor
from experiments.config import RunConfig
from experiments.records.recorder import noise_detection_auroc
from experiments.teaching.config import TeachConfig, check_teach_settings
from experiments.teaching.files import RECORD, TUTOR, TaughtStudent, commit_student, read_teaching_run
from experiments.teaching.report import write_teaching_report
from experiments.training.pretrain import build_missing_pretrained_file
from experiments.training.signals import RunInterrupted, RunStopped, interrupt_on_stop_signals, stop_signals_deferred
from experiments.training.student import train_student
from tsrl_env import DeepfakeCurriculumEnv
from tsrl_env.config import EnvConfig
from tsrl_env.files import directory_lock


def teach(
    config: TeachConfig, students: int, out: Path, progress: bool = True, resume_command: str | None = None
) -> list[TaughtStudent]:
    """Teach one tutor over ``students`` Students (continuing a run in ``out``); returns the teaching curve.

    Holds the lock of ``out``; a run of another teaching config there is refused, naming the settings that differ. A
    stop signal raises :class:`~experiments.training.signals.RunStopped`, whose message says what is kept and names
    ``resume_command`` (what continues the run; default: this call again); a file that cannot be written (a full
    disk) raises an OSError that says the same.
    """
    check_teach_settings(config, students)
    build_missing_pretrained_file(config.pretrain, config.env.pretrained_file, progress)
    resume_command = resume_command or f"the same teach call again (out={str(out)!r})"
    out.mkdir(parents=True, exist_ok=True)
    with directory_lock(out, "tsrl teach"):
        curve, examples = read_teaching_run(out, config.to_dict())
        try:
            with interrupt_on_stop_signals():
                _teach_from(config, students, out, curve, examples, progress, resume_command)
        except RunInterrupted as error:
            taught = f"{RECORD} keeps the {len(curve)} Student(s) taught before it" if curve else "no Student had been taught yet"
            raise RunStopped(
                f"tsrl teach: {error} while teaching Student {len(curve) + 1} of {students}; {taught}. Continue with: "
                f"{resume_command}",
                128 + error.signal_number,
                error.signal_number,
            ) from error
        write_teaching_report(out)
    return curve


def _teach_from(
    config: TeachConfig,
    students: int,
    out: Path,
    curve: list[TaughtStudent],
    examples: dict[str, np.ndarray | None],
    progress: bool,
    resume_command: str,
) -> None:
    """Teach Students ``len(curve)`` to ``students - 1``, appending each to ``curve`` once it is committed."""
    tutor = None
    for index in range(len(curve), students):
        start = time.perf_counter()
        student_env = config.student_env(index)
        env = DeepfakeCurriculumEnv(student_env)
        try:
            if tutor is None:
                tutor = _first_tutor(config, env, out / TUTOR if curve else None)
            teacher_share = 0.5**index
            episode = _teach_one_student(
                env, tutor, _teacher(config, env), teacher_share, f"Student {index + 1}/{students}", progress
            )
        finally:
            env.close()
        uniform = (
            _uniform_test_auc(config.student_env(index), out / "uniform" / f"seed{config.first_seed + index}", resume_command)
            if config.paired
            else (math.nan, math.nan)
        )
        examples = _aggregated(examples, episode["states"], episode["targets"])
        losses = tutor.pretrain_behaviour_cloning(examples["states"], examples["targets"], **config.imitation)
        flipped = episode["flipped"]
        taught = TaughtStudent(
            index=index,
            seed=config.first_seed + index,
            label_noise=student_env.dataset_options["label_noise"],
            noise_model=student_env.dataset_options.get("noise_model"),
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
        # A signal waits until the Student is committed whole, so the message names what is on disk.
        with stop_signals_deferred():
            commit_student(out, config.to_dict(), [*curve, taught], examples, tutor, _observed_settings(config), resume_command)
            curve.append(taught)
        if progress:
            print(_curve_line(taught), flush=True)


def _first_tutor(config: TeachConfig, env: DeepfakeCurriculumEnv, saved: Path | None) -> Any:
    """The tutor a run starts with: the one recorded last (``saved``), or a new one, whose keywords are checked here,
    before any Student trains."""
    view = PerSampleSB3VecEnv(env, autoreset=False)
    if saved is not None:
        return load_tutor(config.tutor, saved, view)
    try:
        return make_tutor(config.tutor, view, seed=config.first_seed, **config.tutor_kwargs)
    except (AssertionError, TypeError, ValueError) as error:  # SB3 checks its arguments with asserts
        reason = str(error).splitlines()[0] if str(error) else ""
        raise ValueError(
            f"the teaching setting tutor_kwargs {config.tutor_kwargs} does not make a {config.tutor!r} tutor "
            f"({type(error).__name__}: {reason}); give keywords of its constructor with values it accepts"
        ) from error


def _teacher(config: TeachConfig, env: DeepfakeCurriculumEnv) -> Any:
    """The teacher of one Student, built on its env with the config's keywords (refused, naming them, where they do
    not make one)."""
    try:
        return make_tutor(config.teacher, env, seed=env.config.seed, **config.teacher_kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"the teaching setting teacher_kwargs {config.teacher_kwargs} does not make a {config.teacher!r} teacher: {error}"
        ) from error


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


def _uniform_test_auc(env_config: EnvConfig, out: Path, resume_command: str) -> tuple[float, float]:
    """Seen and unseen test AUC of a uniform-weight Student at the same seed (same data, initialisation, order),
    trained (continued, or read back, on a rerun) under ``out``; stopped, it names ``resume_command``."""
    run = train_student(
        RunConfig(env=env_config, seed=env_config.seed),
        out,
        "uniform",
        progress=False,
        save_student=False,
        resume=True,
        resume_command=resume_command,
    )
    return run.test["test_seen"]["auc"], run.test["test_unseen"]["auc"]


def _aggregated(examples: dict[str, np.ndarray | None], states: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    if examples["states"] is None:
        return {"states": states, "targets": targets}
    return {"states": np.concatenate([examples["states"], states]), "targets": np.concatenate([examples["targets"], targets])}


def _observed_settings(config: TeachConfig) -> dict[str, Any]:
    """What ``tutor.json`` says: the tutor's algorithm and the env settings of the state it reads."""
    env = config.env
    return {
        "algorithm": config.tutor,
        "env": {"state_columns": list(env.state_columns), "state_counters": list(env.state_counters)},
    }


def _curve_line(student: TaughtStudent) -> str:
    return (
        f"Student {student.index + 1} (seed {student.seed}, noise {student.label_noise:.2f}, teacher share "
        f"{student.teacher_share:.2f}): tutor noise AUROC {student.tutor_noise_auroc:.3f}, weight flipped/clean "
        f"{student.tutor_weight_flipped:.2f}/{student.tutor_weight_clean:.2f}; test AUC seen {student.seen_auc:.3f} "
        f"({student.gain_seen_auc:+.3f} vs uniform), unseen {student.unseen_auc:.3f} ({student.gain_unseen_auc:+.3f}); "
        f"{student.wall_time_s:.0f} s"
    )
