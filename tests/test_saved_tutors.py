"""Saved tutors as a registry of agents: visible with ``import agents`` alone, each pair of files checked before use,
a broken pair skipped where tutors are listed and refused, naming its file, where it is used, built-in names kept, and
the shipped tutors in a wheel."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import agents.saved
from agents import (
    TUTORS,
    TutorRegistry,
    make_env_for,
    make_tutor,
    register_saved_tutor,
    saved_tutor_paths,
    shipped_tutors_directory,
    tutor_spec,
)
from agents.saved import rank_cut
from tsrl_env import TINY_SETTINGS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "experiments" / "tutors"
COLUMNS = ["ema_loss", "counters", "p_fake", "correctness", "area_under_margin", "knn_disagreement", "trusted_probe"]


@pytest.mark.slow
def test_import_agents_alone_lists_the_shipped_tutors_without_importing_experiments():
    script = (
        "import sys, agents\n"
        "names = list(agents.TUTORS)\n"
        "print(names[-4:], 'experiments' in sys.modules, agents.tutor_spec('noise_mentor').kind)"
    )
    shown = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    shipped = (
        "['noise_mentor_pretrained', 'noise_mentor_v1', 'noise_mentor_v1_pretrained', "
        "'noise_mentor_v1_pretrained_counterfactual']"
    )
    assert shown.stdout.strip() == f"{shipped} False taught"


def test_a_saved_tutors_files_are_named_for_fingerprints():
    assert shipped_tutors_directory() == SHIPPED
    expected = (SHIPPED / "noise_mentor.zip", SHIPPED / "noise_mentor.json")
    assert saved_tutor_paths("noise_mentor") == expected
    assert tutor_spec("noise_mentor").files == expected and tutor_spec("uniform").files == ()
    with pytest.raises(
        ValueError,
        match=r"'uniform' is not a saved tutor; the saved tutors: generalisation_mentor_v1_pretrained, noise_mentor, "
        r"noise_mentor_pretrained, noise_mentor_v1, noise_mentor_v1_pretrained",
    ):
        saved_tutor_paths("uniform")


def test_a_saved_tutor_on_an_env_without_its_state_columns_is_refused_and_make_env_for_builds_one():
    plain = gym.make("DeepfakeCurriculumTiny-v0")
    message = (
        r"the saved tutor 'noise_mentor' reads the state rows of the env settings \{'state_columns': \['ema_loss', .*"
        r"'trusted_probe'\]\}, but this environment has \{'state_columns': \['features', .*\]\}: build one with "
        r"agents.make_env_for\('noise_mentor', ...\)"
    )
    with pytest.raises(ValueError, match=message):
        make_tutor("noise_mentor", plain)
    env = make_env_for("noise_mentor", **TINY_SETTINGS)
    assert list(env.config.state_columns) == COLUMNS and env.config.backbone == "test_resnet"
    states, _ = env.reset(seed=0)
    weights = make_tutor("noise_mentor", env).predict(states, deterministic=True)[0]
    assert weights.size == env.batch_size and ((weights >= 0) & (weights <= 1)).all()
    with pytest.raises(ValueError, match=r"the tutor 'noise_mentor' reads the state .*; state_columns cannot be given otherwise"):
        make_env_for("noise_mentor", state_columns=["features"])


def test_rank_cut_drops_the_share_of_a_batch_its_weights_distrust_and_keeps_the_rest_whole():
    weights = np.array([[0.9], [0.2], [0.8], [0.6], [0.5]], dtype=np.float32)  # distrusts a share 0.4: two of five
    assert rank_cut(weights).tolist() == [[1.0], [0.0], [1.0], [1.0], [0.0]]
    assert rank_cut(np.ones(4, np.float32)).tolist() == [1.0] * 4
    assert rank_cut(np.full(4, 0.5, np.float32)).tolist() == [0.0, 0.0, 1.0, 1.0]  # ties: the earlier rows
    assert rank_cut(np.zeros(3, np.float32)).tolist() == [0.0] * 3
    with pytest.raises(ValueError, match=r"rank_cut needs finite weights, got \[nan\]"):
        rank_cut(np.array([0.5, np.nan], np.float32))


def test_a_saved_tutor_acts_by_its_outputs_or_by_their_rank_cut_and_refuses_another_decision():
    env = make_env_for("noise_mentor", **TINY_SETTINGS)
    states, _ = env.reset(seed=0)
    taught = make_tutor("noise_mentor", env).predict(states, deterministic=True)[0]
    decided = make_tutor("noise_mentor", env, decision="rank_cut").predict(states, deterministic=True)[0]
    assert decided.shape == taught.shape and set(np.unique(decided)) <= {0.0, 1.0}
    np.testing.assert_array_equal(decided, rank_cut(taught))
    assert decided.sum() < decided.size  # the taught weights distrust part of this batch
    with pytest.raises(ValueError, match=r"has no decision 'rank_cutt' \(did you mean 'rank_cut'\?\); accepted: mean, rank_cut"):
        make_tutor("noise_mentor", env, decision="rank_cutt")
    with pytest.raises(TypeError, match=r"takes only the keyword decision, got \['threshold'\]"):
        make_tutor("noise_mentor", env, threshold=0.5)


def _pair(directory: Path, name: str, settings: str | None = None, model: bytes | None = None) -> None:
    """A saved tutor ``name`` in ``directory``: the shipped noise_mentor's files, or the ones given (None: left out)."""
    (directory / f"{name}.json").write_text(settings if settings is not None else (SHIPPED / "noise_mentor.json").read_text())
    (directory / f"{name}.zip").write_bytes(model if model is not None else (SHIPPED / "noise_mentor.zip").read_bytes())


def _settings(**changes: object) -> str:
    return json.dumps({**json.loads((SHIPPED / "noise_mentor.json").read_text()), **changes})


BROKEN = {
    "lonely_settings": (lambda d: (d / "lonely_settings.json").write_text(_settings()), r"'.*lonely_settings.zip' is missing"),
    "lonely_model": (lambda d: (d / "lonely_model.zip").write_bytes(b"PK"), r"'.*lonely_model.json' is missing"),
    "not_json": (
        lambda d: _pair(d, "not_json", settings="{algorithm: ppo"),
        r"'.*not_json.json' cannot be read \(JSONDecodeError",
    ),
    "unknown_algorithm": (
        lambda d: _pair(d, "unknown_algorithm", settings=_settings(algorithm="dqn")),
        r"'.*unknown_algorithm.json' names the algorithm 'dqn', not one that saves a tutor \(ppo, sac",
    ),
    "fixed_rule": (
        lambda d: _pair(d, "fixed_rule", settings=_settings(algorithm="uniform")),
        r"'.*fixed_rule.json' names the algorithm 'uniform', not one that saves a tutor",
    ),
    "unknown_column": (
        lambda d: _pair(d, "unknown_column", settings=_settings(env={"state_columns": ["ema_loss", "loss_trend"]})),
        r"'.*unknown_column.json' holds env settings that do not exist \(unknown state column\(s\) \['loss_trend'\]",
    ),
    "not_a_zip": (lambda d: _pair(d, "not_a_zip", model=b"random bytes"), r"'.*not_a_zip.zip' is not a saved model"),
    "uniform": (lambda d: _pair(d, "uniform"), r"'.*uniform.zip' cannot take the name 'uniform' of a built-in tutor"),
}


@pytest.fixture
def saved_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, TutorRegistry]:
    """A folder of saved tutors, one good and one of each kind of broken pair, as the shipped folder of a registry of
    the built-in tutors."""
    _pair(tmp_path, "good")
    for write, _ in BROKEN.values():
        write(tmp_path)
    monkeypatch.setattr(agents.saved, "shipped_tutors_directory", lambda: tmp_path)
    return tmp_path, TutorRegistry({name: spec for name, spec in TUTORS.items() if spec.kind != "taught"})


def test_broken_saved_tutors_are_skipped_with_a_warning_where_listed(saved_folder, caplog):
    folder, registry = saved_folder
    with caplog.at_level(logging.WARNING, logger="agents.saved"):
        names = list(registry)
    assert names[-1] == "good" and not (set(BROKEN) - {"uniform"}) & set(names)
    assert registry["uniform"] is TUTORS["uniform"], "a saved tutor never replaces a built-in one"
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == len(BROKEN) and all(message.startswith("skipping a saved tutor: ") for message in warnings)
    assert all("\n" not in message for message in warnings)
    assert registry["good"].kind == "taught" and registry["good"].files == (folder / "good.zip", folder / "good.json")


@pytest.mark.parametrize("name", [name for name in BROKEN if name != "uniform"])
def test_a_broken_saved_tutor_is_refused_where_used_naming_its_file(saved_folder, name):
    _, registry = saved_folder
    assert name in registry, "its name is taken"
    with pytest.raises(ValueError, match=rf"^the saved tutor '{name}' cannot be used: {BROKEN[name][1]}") as refused:
        registry[name]
    assert "\n" not in str(refused.value) and "restore the pair of files tsrl teach wrote" in str(refused.value)


def test_registering_a_saved_tutor_under_a_built_in_name_is_refused():
    with pytest.raises(ValueError, match=r"cannot take the name 'uniform' of a built-in tutor; save it under another name"):
        register_saved_tutor("uniform", SHIPPED / "noise_mentor.zip")
    assert TUTORS["uniform"].kind == "heuristic"


def _application_copy(folder: Path) -> Path:
    """A copy of the experiments package (code, configs, saved tutors) in ``folder``, found before the installed one
    when ``folder`` is on the Python path."""
    shutil.copytree(
        ROOT / "experiments", folder / "experiments", ignore=shutil.ignore_patterns("results", "notebooks", "__pycache__")
    )
    return folder / "experiments" / "tutors"


@pytest.mark.slow
def test_the_command_line_works_beside_a_broken_saved_tutor_and_refuses_it_in_two_lines(tmp_path):
    tutors = _application_copy(tmp_path / "app")
    (tutors / "orphan.json").write_text(_settings())
    _pair(tutors, "uniform")
    command = [sys.executable, "-m", "experiments.cli"]
    environment = {**os.environ, "PYTHONPATH": str(tmp_path / "app"), "OMP_NUM_THREADS": "1"}
    # The help of a command that lists the tutors (tsrl --help alone imports no tutor).
    shown = subprocess.run([*command, "train", "--help"], cwd=tmp_path / "app", capture_output=True, text=True, env=environment)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: tsrl")
    skipped = [line for line in shown.stderr.splitlines() if line.startswith("skipping a saved tutor: ")]
    assert len(skipped) == 2 and "orphan.zip' is missing" in skipped[0] and "name 'uniform' of a built-in" in skipped[1]
    arguments = ["train", "--config", "tiny", "--tutor", "orphan", "--out", str(tmp_path / "runs")]
    used = subprocess.run([*command, *arguments], cwd=tmp_path / "app", capture_output=True, text=True, env=environment)
    assert used.returncode == 2 and "Traceback" not in used.stderr
    assert used.stderr.splitlines()[-2].startswith(
        f"tsrl train: the saved tutor 'orphan' cannot be used: '{tutors / 'orphan.zip'}' is missing"
    )
    assert not (tmp_path / "runs").exists()


CARD_SECTIONS = ("## What it is", "## How it was taught", "## Held-out results", "## Licence")


@pytest.mark.parametrize("model", sorted(SHIPPED.glob("*.zip")), ids=lambda path: path.stem)
def test_every_shipped_tutor_has_a_card_naming_what_it_reads_how_it_was_taught_and_its_results(model):
    card = model.with_suffix(".md")
    assert card.is_file(), f"{model.name} has no card {card.name}"
    text = card.read_text()
    assert text.startswith(f"# Tutor card: `{model.stem}`")
    assert [section for section in CARD_SECTIONS if section not in text] == []
    settings = json.loads(model.with_suffix(".json").read_text())["env"]
    assert [column for column in settings["state_columns"] if f"`{column}`" not in text] == []
    taught = text.split("## How it was taught")[1].split("## Held-out results")[0]
    assert "protocol" in taught.lower(), "the card names the protocol its teaching data followed"


def test_a_wheel_ships_the_saved_tutors(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("agents", "tsrl_env"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    _application_copy(source)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path)]
    subprocess.run([*build, str(source)], capture_output=True, check=True)
    (wheel,) = tmp_path.glob("tsrl-*.whl")
    listed = set(zipfile.ZipFile(wheel).namelist())
    for name in ("noise_mentor", "noise_mentor_v1", "noise_mentor_v1_pretrained", "generalisation_mentor_v1_pretrained"):
        assert {f"experiments/tutors/{name}.{suffix}" for suffix in ("zip", "json", "md")} <= listed
    shipped = zipfile.ZipFile(wheel).read("experiments/tutors/noise_mentor.zip")
    assert shipped == (SHIPPED / "noise_mentor.zip").read_bytes()
