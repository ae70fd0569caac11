import csv
import json
import math
import pickle
import signal

import pytest
import yaml
from helpers import TINY_CLEAN_GRID_ENV, TINY_GRID_ENV

from experiments.analysis.compare import paired_between
from experiments.analysis.statistics import mean_interval, seeds_needed
from experiments.analysis.summary import HEADLINE, METRICS, SPLITS, paired_summary, result_rows, write_csv
from experiments.analysis.tables import markdown_tables
from experiments.cli import main
from experiments.grid.cells import cell_dir
from experiments.grid.runner import run_benchmark
from experiments.grid.spec import load_benchmark_config
from experiments.grid.summary import write_summary


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory):
    path = tmp_path_factory.mktemp("configs") / "tiny_benchmark.yaml"
    settings = {
        "env": TINY_GRID_ENV,
        "tutors": ["uniform", "random", "ppo"],
        "seeds": [0, 1],
        "variants": {"clean": {"dataset_options": {"label_noise": 0.0}}, "noisy": {"dataset_options": {"label_noise": 0.3}}},
    }
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture(scope="module")
def tiny_grid(tiny_benchmark, tmp_path_factory):
    """The grid the grid tests share: every cell of the tiny benchmark, run once by the real pool of two worker
    processes; a test that asks for a part of it (fewer tutors or seeds, another tutor entry) reads the cells it has
    and computes only the ones it lacks."""
    config = load_benchmark_config(tiny_benchmark)
    out = tmp_path_factory.mktemp("grid") / "out"
    return config, out, run_benchmark(config, out, workers=2, cpus_per_cell=1, progress=False)


@pytest.mark.slow
def test_grid_runs_every_cell_once_summarises_and_recomputes_a_lost_cell_to_the_same_result(tiny_grid):
    config, out, records = tiny_grid
    assert config.tutors == ("oracle", "uniform", "random", "ppo"), "a grid with label noise gets the oracle row first"
    assert len(records) == 16
    assert {(r["variant"], r["tutor"], r["seed"]) for r in records} == set(config.cells())
    markdown = write_summary(config, out)
    for tutor in ("uniform", "random", "ppo"):
        assert f"| {tutor} |" in markdown
    assert "### clean" in markdown and "### noisy" in markdown and "| ppo | learned | 2 |" in markdown
    summary = list(csv.DictReader((out / "results.csv").open()))
    assert {(row["variant"], row["tutor"]) for row in summary} == {(v, t) for v, t, _ in config.cells()}
    assert all(
        row["diff_test_unseen_auc_pairs"] == "2" and row["diff_test_unseen_auc_per_seed"].startswith("0:") for row in summary
    )
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert len(rows) == 16
    assert all(float(row["diff_test_seen_auc"]) == 0.0 for row in rows if row["tutor"] == "uniform")
    columns = list(csv.DictReader((out / "state_columns.csv").open()))
    assert {row["variant"] for row in columns} == {"noisy"} and len(columns) == 4 * 2 * TINY_GRID_ENV["epochs"]
    assert "## What the state reveals" in markdown and "## Power" in markdown
    assert all(0.0 <= float(row["test_unseen_auc"]) <= 1.0 for row in rows)
    assert all(float(row["overhead_vs_uniform"]) == 0.0 for row in rows if row["tutor"] == "uniform")
    assert all(float(row["weight_flipped"]) == 1.0 for row in rows if row["tutor"] == "uniform" and row["variant"] == "noisy")
    assert all(math.isnan(float(row["weight_flipped"])) for row in rows if row["variant"] == "clean")
    # Only the learning tutor reads rewards, so only its cells compute them.
    assert all(-1.0 <= float(row["reward_clean"]) <= 1.0 for row in rows if row["tutor"] == "ppo")
    assert all(math.isnan(float(row["reward_clean"])) for row in rows if row["tutor"] != "ppo")
    assert not (out / "warmups").exists(), "a finished grid keeps no shared warm-up"
    clean_table, noisy_table = markdown.split("### noisy")
    assert "mean weight flipped" not in clean_table, "a column no run measured is left out"
    assert "mean weight flipped" in noisy_table and "mean reward flipped" in noisy_table
    for name in ("val_auc.png", "weights_clean.png", "weights_noisy.png", "weighting_clean.png", "weighting_noisy.png"):
        assert (out / "plots" / name).stat().st_size > 10_000
    assert yaml.safe_load((out / "config.yaml").read_text())["tutors"] == ["oracle", "uniform", "random", "ppo"]
    noisy_cell = cell_dir(out, "noisy", "random", 1)
    assert yaml.safe_load((noisy_cell / "config.yaml").read_text())["env"]["dataset_options"]["label_noise"] == 0.3

    tests = {(r["variant"], r["tutor"], r["seed"]): r["run"].test for r in records}
    assert tests["clean", "random", 0] != tests["clean", "random", 1]
    assert tests["clean", "oracle", 0] == tests["clean", "uniform", 0], "without label noise the oracle weights every sample 1"
    assert tests["noisy", "oracle", 0] != tests["noisy", "uniform", 0]

    # Resuming: finished cells are kept as they are; a lost one is computed again, by a pool of one worker instead of
    # two, to the same result: same seed, same Student.
    kept = cell_dir(out, "clean", "ppo", 0) / "record.json"
    kept_time = kept.stat().st_mtime_ns
    (noisy_cell / "record.json").unlink()
    rerun = run_benchmark(config, out, workers=1, cpus_per_cell=1, progress=False)
    assert kept.stat().st_mtime_ns == kept_time
    assert {(r["variant"], r["tutor"], r["seed"]): r["run"].test for r in rerun} == tests


def test_bad_benchmark_configs_are_refused(tiny_benchmark, tmp_path):
    with pytest.raises(
        ValueError, match=r"unknown tutor 'ppo2' in the tutors given \(--tutors\) \(did you mean 'ppo'\?\); accepted: .*ppo"
    ):
        load_benchmark_config(tiny_benchmark, tutors=["ppo2"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("tutor: [ppo]\n")
    with pytest.raises(TypeError, match="did you mean 'tutors'"):
        load_benchmark_config(bad)
    bad.write_text(yaml.safe_dump({"variants": {"x": {"batch_sise": 3}}}))
    with pytest.raises(TypeError, match="did you mean 'batch_size'"):
        load_benchmark_config(bad)
    with pytest.raises(FileNotFoundError, match="benchmark_noise"):
        load_benchmark_config("no_such_benchmark")


@pytest.mark.slow
def test_a_tutor_entry_can_name_the_reward_it_learns_from(tiny_benchmark, tiny_grid):
    config = load_benchmark_config(tiny_benchmark, tutors=["ppo@val_alignment", "ppo", "uniform"], seeds=[0])
    assert config.run_config("noisy", "ppo@val_alignment", 0).env.reward == "val_alignment"
    assert config.run_config("noisy", "ppo@val_alignment", 0).tutor == "ppo"
    assert config.run_config("noisy", "ppo", 0).env.reward == "tsrl", "a plain entry keeps the environment's reward"
    message = (
        r"unknown reward 'val_alignmnt' in the tutors given \(--tutors\) \(tutor@reward\) \(did you mean 'val_alignment'\?\)"
    )
    with pytest.raises(ValueError, match=message):
        load_benchmark_config(tiny_benchmark, tutors=["ppo@val_alignmnt"])
    config = load_benchmark_config(tiny_benchmark, tutors=["ppo@next_visit", "uniform"], seeds=[0], variants=["noisy"])
    out = tiny_grid[1]  # its uniform, oracle and random cells are the shared grid's: only ppo@next_visit's train here
    run_benchmark(config, out, workers=1, cpus_per_cell=1, progress=False)
    cell = cell_dir(out, "noisy", "ppo@next_visit", 0)
    assert yaml.safe_load((cell / "config.yaml").read_text())["env"]["reward"] == "next_visit"
    assert "| ppo@next_visit | learned | 1 |" in write_summary(config, out)
    recorded = yaml.safe_load((out / "config.yaml").read_text())  # the whole grid, not this run's part of it
    assert recorded["tutors"] == ["oracle", "uniform", "random", "ppo", "ppo@next_visit"]
    assert recorded["seeds"] == [0, 1] and list(recorded["variants"]) == ["clean", "noisy"]


def test_paired_differences_of_a_hand_computed_case():
    # Three seeds; the tutor is 0.03, 0.04 and 0.05 above uniform in seen AUC (mean 0.04, sd 0.01) and exactly
    # 0.01 below in unseen AUC; the oracle gains 0.08 in seen AUC at every seed.
    def row(tutor, seed, seen, unseen):
        values = {f"{split}_{metric}": 0.5 for split in SPLITS for metric in METRICS}
        values |= {"test_seen_auc": seen, "test_unseen_auc": unseen}
        return {"variant": "noise_0.30", "tutor": tutor, "seed": seed, "noise_auroc": 0.5, "wall_time_s": 1.0} | values

    rows = [row("uniform", s, 0.70 + s / 100, 0.60) for s in range(3)]
    rows += [row("focal", s, 0.73 + s / 100 + 0.01 * s, 0.59) for s in range(3)]
    rows += [row("oracle", s, 0.78 + s / 100, 0.60) for s in range(3)]
    for extra in ("weight_clean", "weight_flipped", "reward_clean", "reward_flipped"):
        for r in rows:
            r[extra] = float("nan")
    for r in rows:
        baseline = rows[r["seed"]]
        r |= {f"diff_{c}": r[c] - baseline[c] for _, c, _ in HEADLINE}
        r["overhead_vs_uniform"] = 0.0
    summary = {r["tutor"]: r for r in paired_summary(rows)}
    focal = summary["focal"]
    half = 4.302653 * 0.01 / 3**0.5
    assert focal["diff_test_seen_auc"] == pytest.approx(0.04)
    assert focal["diff_test_seen_auc_low"] == pytest.approx(0.04 - half, rel=1e-5)
    assert focal["diff_test_seen_auc_high"] == pytest.approx(0.04 + half, rel=1e-5)
    assert focal["diff_test_seen_auc_pairs"] == 3 and focal["diff_test_seen_auc_verdict"] == "better"
    assert focal["diff_test_seen_auc_per_seed"] == "0:+0.0300;1:+0.0400;2:+0.0500"
    assert focal["diff_test_unseen_auc"] == pytest.approx(-0.01) and focal["diff_test_unseen_auc_verdict"] == "worse"
    assert focal["share_of_oracle_test_seen_auc"] == pytest.approx(0.5)
    # The oracle is a reference: outside the Holm family, so no verdict, but its own tests are given.
    oracle = summary["oracle"]
    assert oracle["diff_test_seen_auc_verdict"] == oracle["diff_test_unseen_auc_verdict"] == "not in the family"
    assert math.isnan(oracle["diff_test_seen_auc_p_holm"]) and oracle["diff_test_seen_auc_p"] < 0.05
    assert oracle["diff_test_unseen_auc_p"] == 1.0, "the same zero difference at every seed"
    markdown = markdown_tables(list(summary.values()))
    assert "| focal | heuristic | 3 | **+0.040 [" in markdown and "+50% / " in markdown

    one_seed = markdown_tables(paired_summary([r for r in rows if r["seed"] == 0]))
    assert "one seed cannot separate tutors" in one_seed and "[" not in one_seed and "±" not in one_seed


def test_one_tutor_against_another_is_paired_by_seed(tmp_path):
    # focal is 0.01, 0.02, 0.03 above random at seeds 0-2 (mean 0.02, sd 0.01); anti_noise has no seed 2.
    rows = [
        {"variant": "v", "tutor": "random", "seed": s, "test_seen_auc": 0.60 + s / 10, "diff_test_seen_auc": 0.0}
        for s in range(3)
    ]
    rows += [
        {"variant": "v", "tutor": "focal", "seed": s, "test_seen_auc": 0.61 + s / 10 + s / 100, "diff_test_seen_auc": 0.0}
        for s in range(3)
    ]
    rows += [
        {"variant": "v", "tutor": "anti_noise", "seed": s, "test_seen_auc": 0.5, "diff_test_seen_auc": 0.0} for s in range(2)
    ]
    write_csv(rows, tmp_path / "runs.csv")
    half = 4.302653 * 0.01 / 3**0.5
    # t = 0.02 / (0.01 / √3) = 2√3 on 2 degrees of freedom: p = 1 − t / √(2 + t²) = 0.074, its own Holm family of one;
    # Wilcoxon: 3 positive differences, exact p = 2 / 2³ = 0.25.
    table = paired_between(tmp_path, "focal", "random")
    interval = f"+0.020 [{0.02 - half:+.3f}, {0.02 + half:+.3f}]"
    assert f"| v | test_seen_auc | 3 | {interval} | 0.074 | 0.074 | 0.250 | +0.010, +0.020, +0.030 |" in table
    assert table.startswith("Family: every row below (1); Holm-adjusted p.")
    assert "| v | test_seen_auc | 2 | " in paired_between(tmp_path, "focal", "anti_noise"), "only the seeds both have"


def test_seeds_needed_matches_the_paired_t_test_tables():
    # Cohen's d = 1 (effect = sd) needs 10 pairs for 80% power at a two-sided 5% level; d = 0.5 needs 34.
    assert seeds_needed(0.02, 0.02) == 10 and seeds_needed(0.02, 0.01) == 34
    with pytest.raises(ValueError, match="must be positive"):
        seeds_needed(0.0, 0.01)


def test_mean_interval_is_a_student_t_interval():
    mean, half = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1.0 / 3**0.5, rel=1e-5)
    assert math.isnan(mean_interval([0.5])[1])


@pytest.mark.slow
def test_cli_benchmark_with_overrides(tiny_benchmark, tiny_grid, capsys):
    main(
        [
            "benchmark",
            "--config",
            str(tiny_benchmark),
            "--tutors",
            "uniform",
            "--seeds",
            "1",
            "--workers",
            "1",
            "--out",
            str(tiny_grid[1]),  # every cell these overrides ask for is the shared grid's
            "--no-progress",
        ]
    )
    output = capsys.readouterr().out
    # The run asked for uniform at seed 0 (and the reference rows); its tables cover the whole grid, the Holm family
    # of every tutor in it.
    assert "| uniform |" in output and "| oracle |" in output and "| ppo |" in output and "| random |" in output
    assert "16 of 16 runs finished" in output


def test_benchmark_without_a_config_lists_the_configs_and_runs_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["benchmark"])
    listing = capsys.readouterr().out
    assert "smoke" in listing and "benchmark_paired" in listing and "144 Students (9 tutors x 8 seeds x 2 variant(s))" in listing
    assert listing.index("smoke") < listing.index("benchmark_paired"), "cheapest first"
    assert not (tmp_path / "runs").exists()


def test_a_grid_that_names_rewards_records_them_for_every_tutor():
    assert load_benchmark_config("reward_signal").records_rewards, "uniform@tsrl, ... : a study of the rewards"
    assert not load_benchmark_config("protocol_v1_scratch").records_rewards, "only its learning tutors read rewards"


def test_cells_of_one_student_train_it_once_and_share_its_record(tmp_path):
    """Variants that differ only in one tutor's keywords give every other tutor the same Student: it trains once."""
    path = tmp_path / "one_student_twice.yaml"
    settings = {
        "env": {**TINY_CLEAN_GRID_ENV, "epochs": 1},
        "tutors": ["uniform", "constant"],
        "seeds": [0],
        "variants": {
            "low": {"tutor_kwargs": {"constant": {"weight": 0.2}}},
            "high": {"tutor_kwargs": {"constant": {"weight": 0.8}}},
        },
    }
    path.write_text(yaml.safe_dump(settings))
    config = load_benchmark_config(path)
    out = tmp_path / "out"
    records = run_benchmark(config, out, workers=1, cpus_per_cell=1, progress=False)
    tests = {(r["variant"], r["tutor"]): r["run"].test for r in records}
    assert len(records) == 4 and tests["low", "uniform"] == tests["high", "uniform"]
    assert tests["low", "constant"] != tests["high", "constant"]
    trained = [cell_dir(out, variant, "uniform", 0) for variant in ("low", "high")]
    assert sum((directory / "uniform").is_dir() for directory in trained) == 1, "one of the two cells trained the Student"
    twin = next(directory for directory in trained if not (directory / "uniform").is_dir())
    source = next(directory for directory in trained if directory != twin)
    assert yaml.safe_load((twin / "record.json").read_text())["same_student_as"] == source.relative_to(out).as_posix()
    write_csv(result_rows(records), out / "runs.csv")
    with (out / "runs.csv").open() as handle:
        trained_by = {(row["variant"], row["tutor"]): row["same_student_as"] for row in csv.DictReader(handle)}
    variant_of = {directory: directory.relative_to(out / "cells").parts[0] for directory in trained}
    assert trained_by[variant_of[twin], "uniform"] == source.relative_to(out).as_posix()
    assert trained_by[variant_of[source], "uniform"] == "" and trained_by["low", "constant"] == ""

    # A lost twin takes the finished cell's record again instead of training.
    (twin / "record.json").unlink()
    run_benchmark(config, out, workers=1, cpus_per_cell=1, progress=False)
    assert not (twin / "uniform").is_dir() and (twin / "record.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2], ids=["in_process", "pool"])
def test_a_failed_cell_is_said_at_once_and_the_others_go_on(workers, tmp_path, capsys):
    path = tmp_path / "one_fails.yaml"
    clean = {**TINY_CLEAN_GRID_ENV, "epochs": 1}
    # The first cell fails when its tutor is built, in the cell, not when the config loads.
    settings = {"env": clean, "tutors": ["uniform", "random"], "seeds": [0], "tutor_kwargs": {"uniform": {"no_such_keyword": 1}}}
    path.write_text(yaml.safe_dump(settings))
    out = tmp_path / "out"
    with pytest.raises(TypeError, match="no_such_keyword"):
        run_benchmark(load_benchmark_config(path), out, workers=workers, cpus_per_cell=1, progress=False)
    failed = cell_dir(out, "default", "uniform", 0)
    assert f"cell {failed} failed (TypeError: unknown parameter 'no_such_keyword'" in capsys.readouterr().err
    assert not (failed / "record.json").exists()
    assert (cell_dir(out, "default", "random", 0) / "record.json").exists(), "the cell after the failed one ran"


def test_a_stop_signal_in_a_cell_stops_the_grid_at_once_as_it_comes_back_from_a_worker(tmp_path):
    from experiments.grid.runner import _each_record
    from experiments.training.signals import RunStopped

    stop = RunStopped("uniform: stopped by SIGTERM", 128 + signal.SIGTERM, signal.SIGTERM)
    # What a pool's worker sends back: the error pickled, its cause left behind.
    returned = pickle.loads(pickle.dumps(stop))
    assert (str(returned), returned.exit_code, returned.signal_number) == (str(stop), stop.exit_code, signal.SIGTERM)

    def stopped() -> str:
        raise returned

    after = []
    attempts = [(tmp_path / "stopped", stopped), (tmp_path / "next", lambda: after.append("next") or "next")]
    with pytest.raises(RunStopped, match="SIGTERM"):
        list(_each_record(iter(attempts)))
    assert after == [], "no cell starts after a stop signal"

    def diverged() -> str:
        raise pickle.loads(pickle.dumps(RunStopped("uniform: the loss is NaN", 1)))

    with pytest.raises(RunStopped, match="NaN"):
        list(_each_record(iter([(tmp_path / "diverged", diverged), (tmp_path / "next", lambda: after.append("next") or "next")])))
    assert after == ["next"], "a cell whose loss diverged is one failed cell: the others go on"


def test_a_finished_cell_lends_its_record_only_at_the_same_thread_count(tmp_path):
    from experiments.config import fingerprint
    from experiments.grid.runner import _one_cell_per_student

    path = tmp_path / "twins.yaml"
    variants = {"a": {"tutor_kwargs": {"constant": {"weight": 0.2}}}, "b": {"tutor_kwargs": {"constant": {"weight": 0.8}}}}
    path.write_text(yaml.safe_dump({"env": TINY_GRID_ENV, "tutors": ["uniform"], "seeds": [0], "variants": variants}))
    config = load_benchmark_config(path)
    out = tmp_path / "out"
    finished = cell_dir(out, "a", "uniform", 0)
    finished.mkdir(parents=True)
    record = {"torch_threads": 2, "fingerprint": fingerprint(config.run_config("a", "uniform", 0))}
    (finished / "record.json").write_text(json.dumps(record))
    todo = [("b", "uniform", 0)]
    assert _one_cell_per_student(config, out, todo, threads=1) == (todo, {})
    assert _one_cell_per_student(config, out, todo, threads=2) == ([], {finished: [cell_dir(out, "b", "uniform", 0)]})
