import csv
import json
import sys

import pytest
import yaml
from helpers import TINY_CLEAN_GRID_ENV

from experiments.cli import main
from experiments.grid.cells import cell_dir
from experiments.grid.runner import run_benchmark
from experiments.grid.spec import load_benchmark_config

pytestmark = pytest.mark.slow


@pytest.fixture
def two_cell_benchmark(tmp_path):
    path = tmp_path / "two_cells.yaml"
    path.write_text(yaml.safe_dump({"env": TINY_CLEAN_GRID_ENV, "tutors": ["uniform", "random"], "seeds": [0]}))
    return path


def test_ray_grid_writes_every_record_and_resubmits_nothing(two_cell_benchmark, tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray", reason="the Ray backend needs Ray: pip install '.[ray]'")
    out = tmp_path / "out"
    arguments = ["benchmark", "--config", str(two_cell_benchmark), "--backend", "ray", "--out", str(out), "--no-progress"]
    # A local Ray instance of 2 CPUs: both cells at once, one torch thread each.
    main([*arguments, "--workers", "2", "--cpus-per-cell", "1"])
    assert "2 of 2 runs finished" in capsys.readouterr().out
    config = load_benchmark_config(two_cell_benchmark)
    records = [cell_dir(out, *cell) / "record.json" for cell in config.cells()]
    assert all(json.loads(record.read_text())["torch_threads"] == 1 for record in records)
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert {(row["variant"], row["tutor"], int(row["seed"])) for row in rows} == set(config.cells())

    # Resuming a finished grid submits nothing: Ray is not even started, and the records stay as they are.
    written = [record.stat().st_mtime_ns for record in records]

    def no_ray(*args, **kwargs):
        raise AssertionError("a finished grid started Ray")

    monkeypatch.setattr(ray, "init", no_ray)
    main(arguments)
    assert "2 of 2 runs finished" in capsys.readouterr().out
    assert [record.stat().st_mtime_ns for record in records] == written


def test_a_cell_on_a_numbered_gpu_is_refused():
    pytest.importorskip("ray", reason="the Ray backend needs Ray: pip install '.[ray]'")
    from experiments.grid.ray_backend import gpus_per_cell

    assert gpus_per_cell("cpu") == 0
    with pytest.raises(ValueError, match=r"'cuda:1' names a GPU.*set the env device to 'cuda'"):
        gpus_per_cell("cuda:1")


def test_missing_ray_and_misplaced_address_are_refused_before_any_work(two_cell_benchmark, tmp_path, monkeypatch):
    config = load_benchmark_config(two_cell_benchmark)
    with pytest.raises(ValueError, match=r"add --backend ray or drop --address"):
        run_benchmark(config, tmp_path / "local", address="ray://head:10001")
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray imports
    monkeypatch.delitem(sys.modules, "experiments.grid.ray_backend", raising=False)
    with pytest.raises(ImportError, match=r"pip install '\.\[ray\]'"):
        run_benchmark(config, tmp_path / "ray", backend="ray")
    assert not (tmp_path / "local").exists() and not (tmp_path / "ray").exists()


def test_a_failed_ray_cell_is_raised_after_the_others_finish(two_cell_benchmark, tmp_path):
    pytest.importorskip("ray", reason="the Ray backend needs Ray: pip install '.[ray]'")
    settings = yaml.safe_load(two_cell_benchmark.read_text())
    settings["tutor_kwargs"] = {"random": {"no_such_keyword": 1}}  # fails in its Ray task, not when the config loads
    two_cell_benchmark.write_text(yaml.safe_dump(settings))
    config = load_benchmark_config(two_cell_benchmark)
    with pytest.raises(TypeError, match="no_such_keyword"):
        run_benchmark(config, tmp_path / "out", workers=2, progress=False, backend="ray", cpus_per_cell=1)
    assert (cell_dir(tmp_path / "out", "default", "uniform", 0) / "record.json").exists()
    assert not (cell_dir(tmp_path / "out", "default", "random", 0) / "record.json").exists()
