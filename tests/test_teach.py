"""tsrl teach: a tutor imitating the oracle over teaching Students, resumable, saved with the state it observes, and
deployed frozen under its own name."""

import json
import math
import shutil
from dataclasses import asdict

import numpy as np
import pytest

from agents import TUTORS, load_tutor, register_saved_tutor, shipped_tutors_directory, tutor_spec
from experiments.config import RunConfig
from experiments.records.recorder import noise_detection_auroc
from experiments.teaching.config import FIRST_TEACHING_SEED, TeachConfig, load_teach_config_dict
from experiments.teaching.report import write_teaching_report
from experiments.teaching.teach import teach
from experiments.training.student import train_student
from tsrl_env import TINY_SETTINGS
from tsrl_env.config import EnvConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COLUMNS = ["ema_loss", "counters", "p_fake", "correctness", "area_under_margin", "knn_disagreement", "trusted_probe"]


def _config(**changes) -> TeachConfig:
    env = EnvConfig.from_dict({**TINY_SETTINGS, "epochs": 1, "state_columns": COLUMNS})
    settings = {"env": env, "label_noise": (0.3, 0.0), "imitation": {"epochs": 2, "batch_size": 128, "learning_rate": 1e-3}}
    return TeachConfig(**{**settings, "paired": False, **changes})


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    out = tmp_path_factory.mktemp("teach")
    curve = teach(_config(), 2, out, progress=False)
    return out, curve


def test_teaching_records_a_curve_and_saves_a_tutor_with_the_state_it_observes(taught):
    out, curve = taught
    assert [student.seed for student in curve] == [FIRST_TEACHING_SEED, FIRST_TEACHING_SEED + 1]
    assert [student.label_noise for student in curve] == [0.3, 0.0]
    assert [student.teacher_share for student in curve] == [1.0, 0.5]
    first = curve[0]
    assert first.acting_noise_auroc == 1.0, "the first Student is weighted by the oracle alone"
    assert curve[1].examples == 2 * first.examples
    examples = np.load(out / "examples.npz")
    assert set(np.unique(examples["targets"])) <= {0.0, 1.0} and (examples["targets"] == 0).any()
    assert json.loads((out / "tutor.json").read_text())["env"]["state_columns"] == COLUMNS
    assert (out / "teaching.md").read_text().count("\n| ") == 2 + 2  # header, rule and one row per Student
    assert (out / "plots" / "teaching_curve.png").is_file() and (out / "plots" / "tutor_weights.png").is_file()


def test_each_student_records_the_noise_level_and_model_it_trained_under(tmp_path):
    # Every model at one level before the next: (0.3, video), (0.3, frame), then (0.0, video) ...
    curve = teach(_config(noise_models=("video", "frame")), 2, tmp_path, progress=False)
    assert [(student.label_noise, student.noise_model) for student in curve] == [(0.3, "video"), (0.3, "frame")]
    assert all(0.0 < student.tutor_weight_clean for student in curve) and not math.isnan(curve[1].tutor_weight_flipped)
    assert "| 1 | 1001 | 0.300 | frame |" in (tmp_path / "teaching.md").read_text()


def test_the_teacher_can_be_another_fixed_rule_whose_weights_are_imitated(tmp_path):
    # The generalisation oracle of the clean-label study: l2rw against unseen manipulation families.
    env = EnvConfig.from_dict(
        {
            **TINY_SETTINGS,
            "epochs": 1,
            "state_columns": COLUMNS,
            "dataset_options": {**TINY_SETTINGS["dataset_options"], "tiles": "fixed", "val_unseen_size": 32},
        }
    )
    config = _config(env=env, label_noise=(0.0,), teacher="l2rw", teacher_kwargs={"trusted_split": "val_unseen"})
    teach(config, 1, tmp_path, progress=False)
    targets = np.load(tmp_path / "examples.npz")["targets"].reshape(-1, env.batch_size)
    # Learning to Reweight's weights: clipped at 0 and scaled so each batch's largest is 1, not the oracle's all-ones.
    assert np.allclose(targets.max(axis=1), 1.0) and (targets < 1.0).mean() > 0.5
    assert json.loads((tmp_path / "teaching.json").read_text())["config"]["teacher_kwargs"] == {"trusted_split": "val_unseen"}
    assert "teacher" not in _config().to_dict(), "left out at its default: earlier records still match"
    with pytest.raises(ValueError, match="the teacher must name a tutor that does not learn"):
        _config(teacher="ppo")


def test_teaching_continues_after_the_last_student_and_refuses_another_config(taught, tmp_path):
    out, curve = taught
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    longer = teach(_config(), 3, copy, progress=False)
    assert [json.dumps(asdict(s)) for s in longer[:2]] == [json.dumps(asdict(s)) for s in curve]  # kept, NaNs included
    assert longer[2].seed == FIRST_TEACHING_SEED + 2
    assert longer[2].examples == 3 * curve[0].examples
    with pytest.raises(ValueError, match=r"another teaching config \(label_noise: \[0.3, 0.0\] -> \[0.45\]\)"):
        teach(_config(label_noise=(0.45,)), 4, copy, progress=False)


def test_teaching_seeds_stay_clear_of_the_evaluation_seeds():
    with pytest.raises(ValueError, match="teaching seeds must start at 1000"):
        _config(first_seed=7)
    assert load_teach_config_dict(_config().to_dict()) == _config()


@pytest.fixture
def registered_here():
    """The name ``taught_here``, free before the test and after it."""
    yield "taught_here"
    TUTORS.pop("taught_here", None)


def test_a_saved_tutor_teaches_frozen_on_the_state_columns_it_was_taught_on(taught, tmp_path, registered_here):
    out, _ = taught
    register_saved_tutor(registered_here, out / "tutor.zip")
    spec = tutor_spec(registered_here)
    assert not spec.learns and spec.env_settings["state_columns"] == COLUMNS
    # The Student's env has the default state; the tutor's own columns are added for the Student it teaches.
    config = RunConfig(env=EnvConfig.from_dict({**TINY_SETTINGS, "epochs": 1}), tutor=registered_here, seed=5)
    run = train_student(config, tmp_path, progress=False, save_student=False)
    assert 0.0 <= run.epochs[-1].mean_weight <= 1.0
    assert "trusted_probe" in run.epochs[-1].state_column_auroc


def test_the_report_is_rebuilt_from_the_files_alone(taught, tmp_path):
    out, _ = taught
    written = (out / "teaching.md").read_text()
    (out / "teaching.md").unlink()
    assert write_teaching_report(out) == written == (out / "teaching.md").read_text()
    # Without the weights file its Students started from, too (the state layout does not depend on it).
    moved = tmp_path / "run"
    shutil.copytree(out, moved)
    record = json.loads((moved / "teaching.json").read_text())
    record["config"]["env"]["pretrained_file"] = str(tmp_path / "gone.pt")
    (moved / "teaching.json").write_text(json.dumps(record))
    assert write_teaching_report(moved) == written


SHIPPED_TUTORS = [
    ("noise_mentor", "teaching/teach_noise"),
    ("noise_mentor_pretrained", "teaching/teach_pretrained"),
    ("noise_mentor_v1", "protocol_v1/teach"),
    ("noise_mentor_v1_pretrained", "protocol_v1/teach_pretrained"),
    ("generalisation_mentor_v1_pretrained", "protocol_v1/teach_clean"),
]
SAVED_TUTORS_DIR = shipped_tutors_directory()


@pytest.mark.parametrize(("name", "teaching_run"), SHIPPED_TUTORS)
def test_each_shipped_tutor_is_the_one_its_teaching_run_saved_and_weighs_its_rows_as_taught(name, teaching_run):
    run = SAVED_TUTORS_DIR.parent / "results" / teaching_run
    assert (SAVED_TUTORS_DIR / f"{name}.zip").read_bytes() == (run / "tutor.zip").read_bytes()
    assert json.loads((SAVED_TUTORS_DIR / f"{name}.json").read_text()) == json.loads((run / "tutor.json").read_text())
    examples = np.load(run / "examples.npz")
    tutor = load_tutor(name, SAVED_TUTORS_DIR / f"{name}.zip")
    weights = np.asarray(tutor.predict(examples["states"], deterministic=True)[0]).ravel()
    assert ((weights >= 0.0) & (weights <= 1.0)).all()
    teacher = load_teach_config_dict(json.loads((run / "teaching.json").read_text())["config"]).teacher
    if teacher == "oracle":  # on the rows it was taught on, a low weight marks those whose oracle weight was 0
        assert noise_detection_auroc(-weights, examples["targets"] < 0.5) > 0.75
    else:  # a teacher's graded weights: the tutor's follow them (0.52 measured)
        assert np.corrcoef(weights, examples["targets"])[0, 1] > 0.45
