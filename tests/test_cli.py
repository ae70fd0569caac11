import json

import pytest
import torch
import yaml

from agents import TutorPPO
from experiments.cli import main
from experiments.config import load_run_config


def test_train_runs_both_students_and_writes_everything(tmp_path, capsys):
    main(["train", "--config", "tiny", "--out", str(tmp_path), "--no-progress"])
    output = capsys.readouterr().out
    assert "uniform val AUC" in output and "ppo mean weight" in output
    assert "unseen video AUC" in output
    (run_dir,) = tmp_path.iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert [run["label"] for run in results] == ["uniform", "ppo"]
    for run in results:
        assert [epoch["phase"] for epoch in run["epochs"]] == ["warm-up", "tutored", "tutored"]
        assert 0.0 <= run["test"]["test_unseen"]["auc"] <= 1.0
    assert results[0]["epochs"][0]["val_auc"] == results[1]["epochs"][0]["val_auc"], "same seed, same warm-up"
    assert all(epoch["mean_weight"] == 1.0 for epoch in results[0]["epochs"])
    assert torch.load(run_dir / "ppo" / "student.pt", weights_only=True)
    assert isinstance(TutorPPO.load(run_dir / "ppo" / "tutor.zip", device="cpu"), TutorPPO)
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["env"]["backbone"] == "test_resnet"


def test_a_saved_tutor_teaches_a_new_student_without_learning(tmp_path, capsys):
    main(["train", "--config", "tiny", "--out", str(tmp_path / "first"), "--no-progress"])
    (first,) = (tmp_path / "first").iterdir()
    checkpoint = first / "ppo" / "tutor.zip"
    before = checkpoint.read_bytes()
    main(["train", "--config", "tiny", "--seed", "3", "--tutor-checkpoint", str(checkpoint), "--out", str(tmp_path / "second")])
    assert "ppo-checkpoint mean weight" in capsys.readouterr().out
    (second,) = (tmp_path / "second").iterdir()
    results = json.loads((second / "results.json").read_text())
    assert [run["label"] for run in results] == ["uniform", "ppo-checkpoint"]
    tutored = [epoch for epoch in results[1]["epochs"] if epoch["phase"] == "tutored"]
    assert all(0.0 < epoch["mean_weight"] < 1.0 for epoch in tutored)
    assert not (second / "ppo-checkpoint" / "tutor.zip").exists(), "a tutor that only acts is not saved again"
    assert checkpoint.read_bytes() == before


def test_run_config_rejects_unknown_keys_with_a_suggestion(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("seeds: 3\n")
    message = r"'seeds' is not a run setting in .*bad.yaml \(did you mean 'seed'\?\): it is a benchmark setting"
    with pytest.raises(TypeError, match=message):
        load_run_config(path)
    with pytest.raises(TypeError, match=r"did you mean 'warmup_epochs'"):
        load_run_config("tiny", warmup_epoch=1)
    with pytest.raises(FileNotFoundError, match="demo.*tiny"):
        load_run_config("nonexistent")


def test_overrides_reach_the_environment_and_the_run():
    config = load_run_config("tiny", epochs=5, seed=7, tutor="sac")
    assert (config.env.epochs, config.seed, config.tutor) == (5, 7, "sac")


def test_markdown_reports_are_rendered_in_a_terminal_and_kept_as_markdown_elsewhere(capsys, monkeypatch):
    from experiments.commands import print_markdown

    report = "### noise_0.30\n\n| tutor | Δ seen AUC |\n| --- | --- |\n| oracle | **+0.085** |\n"
    print_markdown(report)
    assert capsys.readouterr().out == report + "\n", "piped or redirected: the Markdown itself"
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    print_markdown(report)
    rendered = capsys.readouterr().out
    assert "oracle" in rendered and "+0.085" in rendered
    assert "**" not in rendered and "| --- |" not in rendered, "a terminal gets a table, not its Markdown"


def test_the_thread_count_follows_the_request_the_launch_and_the_load(monkeypatch):
    import os

    import torch

    from experiments.commands.threads import chosen_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.8, 3.0, 2.0))
    assert chosen_threads(3) == (3, "--threads")
    assert chosen_threads(None) == (1, "the machine is busy: load 3.8 on 4 cores")
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.1, 0.1))
    assert chosen_threads(None) == (torch.get_num_threads(), "the machine is quiet: load 0.2 on 4 cores")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert chosen_threads(None) == (2, "2 processes share 4 cores")
    with pytest.raises(ValueError, match="at least 1"):
        chosen_threads(0)


def test_threads_asked_for_are_set_and_said(capsys, tmp_path):
    from tsrl_env import TINY_SETTINGS, EnvConfig
    from tsrl_env.student import Student

    student = tmp_path / "student.pt"
    torch.save(
        {"state_dict": Student.from_timm("test_resnet").state_dict(), "env": EnvConfig(**TINY_SETTINGS).to_dict()}, student
    )
    before = torch.get_num_threads()
    try:
        main(["evaluate", str(student), "--threads", "1", "--out", str(tmp_path / "out")])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert "torch threads: 1 (--threads; --threads N sets it)" in capsys.readouterr().out
