"""The evaluation protocol, the grid's fixed plan (--extend) and what records say produced them."""

import hashlib
import json

import pytest
import yaml

from experiments.config import RunConfig, fingerprint, fingerprint_differences
from experiments.grid.cells import cell_dir
from experiments.grid.plan import GridExtended, check_plan, plan_report, read_plan
from experiments.grid.runner import run_benchmark
from experiments.grid.spec import load_benchmark_config
from experiments.protocol import ProtocolViolation
from experiments.records.provenance import code_version
from tsrl_env import TINY_SETTINGS
from tsrl_env.config import EnvConfig

V1_ENV = {
    **TINY_SETTINGS,
    "dataset_options": {
        **TINY_SETTINGS["dataset_options"],
        "label_noise": 0.3,
        "noise_model": "video",
        "tiles": "fixed",
        "content": "benchmark",
    },
    "epochs": 1,
}
V1_DATASETS = {f"d{i}": {"seed": 10 + i, "noise_seed": 110 + i} for i in range(3)}


def write_config(tmp_path, **changes):
    settings = {"protocol": "v1", "env": V1_ENV, "tutors": ["uniform"], "seeds": list(range(8)), "datasets": V1_DATASETS}
    settings.update(changes)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def test_a_v1_grid_has_a_cell_per_variant_dataset_tutor_and_seed(tmp_path):
    config = load_benchmark_config(write_config(tmp_path))
    assert config.cell_variants == ("default/d0", "default/d1", "default/d2")
    assert len(list(config.cells())) == 3 * 8 * len(config.tutors)
    env = config.run_config("default/d2", "uniform", 0).env
    assert env.dataset_options["seed"] == 12 and env.dataset_options["noise_seed"] == 112
    assert cell_dir(tmp_path, "default/d1", "uniform", 3) == tmp_path / "cells" / "default" / "d1" / "uniform" / "seed3"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seeds": [0, 1, 2, 3, 4, 5, 6, 1000]}, "Student seed(s) [1000], not evaluation seeds"),
        ({"seeds": [0, 1, 2, 3]}, "needs at least 8"),
        ({"datasets": {"d0": {"seed": 10, "noise_seed": 110}, "d1": {"seed": 11, "noise_seed": 111}}}, "at least 3"),
        ({"datasets": {**V1_DATASETS, "d2": {"seed": 1002, "noise_seed": 112}}}, "dataset seed 1002, not an evaluation seed"),
        ({"datasets": {**V1_DATASETS, "d2": {"seed": 12, "noise_seed": 1500}}}, "noise_seed 1500"),
        ({"datasets": {**V1_DATASETS, "d2": {"seed": 12}}}, "must give dataset_options noise_seed"),
        ({"env": {**V1_ENV, "dataset_options": {**V1_ENV["dataset_options"], "tiles": "reshuffled"}}}, "tiles: fixed"),
        ({"protocol": "v2"}, "unknown protocol 'v2'"),
    ],
)
def test_a_grid_breaking_the_protocol_is_refused_before_any_work(tmp_path, changes, message):
    with pytest.raises(ValueError) as caught:
        load_benchmark_config(write_config(tmp_path, **changes))
    assert message in str(caught.value)


def test_without_a_protocol_the_grid_is_legacy_and_its_report_says_so(tmp_path):
    config = load_benchmark_config(write_config(tmp_path, protocol=None, seeds=[1000], datasets=None))
    assert config.protocol is None and config.planned()["protocol"] == "legacy"
    assert "Protocol: legacy" in plan_report(tmp_path, config.protocol)
    assert "not held out" in plan_report(tmp_path, config.protocol)


def test_a_v1_pretrained_file_must_come_from_pretraining_content(tmp_path):
    run = tmp_path / "pretrain" / "uniform"
    run.mkdir(parents=True)
    (run / "student.pt").write_bytes(b"weights")
    benchmark_env = {"dataset": "embedded", "dataset_options": {"tiles": "fixed", "content": "benchmark"}}
    (tmp_path / "pretrain" / "config.yaml").write_text(yaml.safe_dump({"env": benchmark_env}))
    env = {**V1_ENV, "pretrained_file": str(run / "student.pt")}
    with pytest.raises(ProtocolViolation, match="trained on benchmark content"):
        load_benchmark_config(write_config(tmp_path, env=env))
    benchmark_env["dataset_options"] |= {"content": "pretraining", "train_families": ["blend", "warp"]}
    (tmp_path / "pretrain" / "config.yaml").write_text(yaml.safe_dump({"env": benchmark_env}))
    with pytest.raises(ProtocolViolation, match=r"trained on \['warp'\], which the evaluation data holds out"):
        load_benchmark_config(write_config(tmp_path, env=env))
    benchmark_env["dataset_options"] |= {"train_families": ["blend", "splice"], "seed": 11}
    (tmp_path / "pretrain" / "config.yaml").write_text(yaml.safe_dump({"env": benchmark_env}))
    with pytest.raises(ProtocolViolation, match="pretrained at dataset seed 11, the seed of this data too"):
        load_benchmark_config(write_config(tmp_path, env=env))
    benchmark_env["dataset_options"]["seed"] = 0
    (tmp_path / "pretrain" / "config.yaml").write_text(yaml.safe_dump({"env": benchmark_env}))
    assert load_benchmark_config(write_config(tmp_path, env=env)).env.pretrained_file.endswith("student.pt")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tutors": ["uniform", "focal", "focal"]}, "focal more than once"),
        ({"seeds": [0, 1, 1]}, "1 more than once"),
        ({"tutors": []}, "non-empty list"),
        ({"seeds": []}, "non-empty list"),
        ({"tutors": "random"}, "non-empty list"),
        ({"seeds": ["a"]}, "integers >= 0"),
        ({"tutor_kwargs": {"focal": {"gamma": 1.0}}}, "do not list"),
    ],
)
def test_grid_settings_read_silently_wrong_before_are_refused(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        load_benchmark_config(write_config(tmp_path, protocol=None, datasets=None, **changes))


def test_seeds_fixed_before_a_grid_ran_need_extend_to_grow(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    first = {"protocol": "v1", "seeds": [0, 1, 2, 3], "datasets": ["d0"], "tutors": ["uniform"], "variants": ["v"]}
    check_plan(out, first, has_finished_cells=False, extend=False)
    more_seeds = {**first, "seeds": [0, 1, 2, 3, 4, 5, 6, 7]}
    check_plan(out, more_seeds, has_finished_cells=False, extend=False)  # nothing seen yet: the plan grows freely
    assert read_plan(out)["seeds"] == list(range(8)) and not any(e["extension"] for e in read_plan(out)["history"])
    even_more = {**first, "seeds": list(range(12)), "tutors": ["uniform", "focal"]}
    with pytest.raises(GridExtended, match=r"adds seeds \[8, 9, 10, 11\].*--extend"):
        check_plan(out, even_more, has_finished_cells=True, extend=False)
    check_plan(out, even_more, has_finished_cells=True, extend=True)
    report = plan_report(out)
    assert "Protocol: v1" in report
    assert "Extended after cells had been seen" in report and "seeds [8, 9, 10, 11]" in report and "tutors ['focal']" in report


def test_run_benchmark_refuses_new_seeds_on_a_grid_with_finished_cells(tmp_path):
    config = load_benchmark_config(write_config(tmp_path, protocol=None, datasets=None, seeds=[0]))
    out = tmp_path / "out"
    out.mkdir()
    check_plan(out, config.planned(), has_finished_cells=False, extend=False)
    finished = cell_dir(out, "default", "uniform", 0)
    finished.mkdir(parents=True)
    (finished / "record.json").write_text("{}")
    grown = load_benchmark_config(write_config(tmp_path, protocol=None, datasets=None, seeds=[0, 1]))
    with pytest.raises(GridExtended):
        run_benchmark(grown, out, progress=False)
    assert not cell_dir(out, "default", "uniform", 1).exists(), "refused before any work"


def test_a_changed_pretrained_file_at_the_same_path_is_a_changed_setting(tmp_path):
    weights = tmp_path / "student.pt"
    weights.write_bytes(b"first weights")
    config = RunConfig(env=EnvConfig(pretrained_file=str(weights)), tutor="uniform")
    before = fingerprint(config)
    assert before["files"] == {"env.pretrained_file": hashlib.sha256(b"first weights").hexdigest()}
    assert fingerprint_differences(before, config) == []
    weights.write_bytes(b"other weights, same path")
    differences = fingerprint_differences(before, config)
    assert len(differences) == 1 and differences[0].startswith("files")
    without_hashes = {key: value for key, value in before.items() if key != "files"}
    assert fingerprint_differences(without_hashes, config) == [], "a record from before hashing is taken as matching"


def test_records_name_the_code_they_were_computed_with():
    version = code_version()
    assert set(version) >= {"commit", "dirty"}
    if version["commit"] is not None:
        assert len(version["commit"]) == 40 and isinstance(version["dirty"], bool)
    json.dumps(version)


def test_a_process_names_the_code_it_started_with_not_a_commit_made_while_it_ran(monkeypatch):
    from experiments.records import provenance

    started_with = code_version()

    def committed_since(root, *arguments, timeout=None):
        return "0" * 40 if arguments[0] == "rev-parse" else ""

    monkeypatch.setattr(provenance, "git", committed_since)
    assert code_version() == started_with


def teach_config(**changes):
    from experiments.teaching.config import load_teach_config_dict

    settings = {
        "protocol": "v1",
        "env": {**V1_ENV, "dataset_options": {**V1_ENV["dataset_options"], "noise_model": "frame"}},
        "label_noise": [0.3, 0.0],
        "noise_models": ["video", "class_conditional"],
        "first_seed": 1000,
    }
    return load_teach_config_dict({**settings, **changes})


def test_under_v1_each_teaching_student_has_a_dataset_of_its_own_teaching_seeds():
    config = teach_config()
    config.check_protocol(students=4)
    envs = [config.student_env(index) for index in range(4)]
    assert [env.seed for env in envs] == [1000, 1001, 1002, 1003]
    assert [env.dataset_options["seed"] for env in envs] == [1000, 1001, 1002, 1003]
    assert [env.dataset_options["noise_seed"] for env in envs] == [1000, 1001, 1002, 1003]
    conditions = [(env.dataset_options["label_noise"], env.dataset_options["noise_model"]) for env in envs]
    assert conditions == [(0.3, "video"), (0.3, "class_conditional"), (0.0, "video"), (0.0, "class_conditional")]


def test_a_teaching_run_breaking_the_protocol_is_refused():
    with pytest.raises(ProtocolViolation, match=r"Student seed\(s\) \[2000\], not teaching seeds"):
        teach_config(first_seed=1990).check_protocol(students=11)
    reshuffled = {**V1_ENV, "dataset_options": {**V1_ENV["dataset_options"], "tiles": "reshuffled"}}
    with pytest.raises(ProtocolViolation, match="tiles: fixed"):
        teach_config(env=reshuffled).check_protocol(students=1)


def test_a_legacy_teaching_config_keeps_its_record_and_its_single_dataset():
    config = teach_config(protocol=None, noise_models=[])
    assert "protocol" not in config.to_dict() and "noise_models" not in config.to_dict()
    assert config.student_env(3).dataset_options.get("seed") is None, "legacy: every Student on the config's dataset"


def test_a_tuning_grid_searches_settings_on_teaching_data_only(tmp_path):
    teaching = {f"t{i}": {"seed": 1900 + i, "noise_seed": 1900 + i} for i in range(2)}
    variants = {"low": {"tutor_kwargs": {"focal": {"gamma": 0.5}}}, "default": {}}
    path = write_config(tmp_path, role="tuning", seeds=[1900], datasets=teaching, variants=variants, tutors=["focal"])
    config = load_benchmark_config(path)
    assert config.run_config("low/t1", "focal", 1900).tutor_kwargs == {"gamma": 0.5}
    assert config.run_config("default/t1", "focal", 1900).tutor_kwargs == {}
    with pytest.raises(ProtocolViolation, match=r"Student seed\(s\) \[0\], not teaching seeds"):
        load_benchmark_config(write_config(tmp_path, role="tuning", seeds=[0], datasets=teaching))
    with pytest.raises(ProtocolViolation, match="dataset seed 100, not a teaching seed"):
        load_benchmark_config(
            write_config(tmp_path, role="tuning", seeds=[1900], datasets={"e": {"seed": 100, "noise_seed": 1900}})
        )
    with pytest.raises(ValueError, match="role"):
        load_benchmark_config(write_config(tmp_path, role="exploration"))


def test_a_part_of_the_grid_runs_by_variant_and_the_plan_keeps_every_variant(tmp_path):
    variants = {"video_0.30": {}, "noise_0": {"dataset_options": {"label_noise": 0.0}}}
    path = write_config(tmp_path, variants=variants)
    part = load_benchmark_config(path, variants=["noise_0"])
    assert part.cell_variants == ("noise_0/d0", "noise_0/d1", "noise_0/d2")
    assert sorted(part.planned()["variants"]) == ["noise_0", "video_0.30"], "running a part is not a change of plan"
    with pytest.raises(ValueError, match=r"unknown variant\(s\) \['noise_O'\] in --variants \(did you mean 'noise_0'\?\)"):
        load_benchmark_config(path, variants=["noise_O"])
