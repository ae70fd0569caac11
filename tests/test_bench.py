"""The performance benchmarks run end to end at tiny sizes (what they measure there means nothing)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.performance import grid_cost, memory, meta_step, step_cost, student_cost, throughput

TINY = ["--backbone", "test_resnet", "--image-size", "32", "--train-size", "128", "--batch-size", "32", "--repeats", "1"]


def test_step_cost_prints_every_asked_variant_with_its_ratio_to_plain(capsys, one_torch_thread):
    step_cost.main([*TINY, "--variants", "reference", "tsrl", "next_visit", "ppo_next_visit"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Student test_resnet at 32x32, batch 32, 4 steps per epoch")
    rows = {line.split()[0]: line for line in lines[3:]}
    assert list(rows) == ["plain", "reference", "tsrl", "next_visit", "ppo_next_visit"]
    ratio_column = lines[1].index("x plain")
    ratios = {name: float(row[ratio_column:].split()[0]) for name, row in rows.items()}
    assert ratios["plain"] == 1.0 and all(0.0 < ratio < 100.0 for ratio in ratios.values())


def test_reference_recreation_pays_one_reward_per_sample_and_keeps_the_epoch_states(one_torch_thread):
    import argparse

    from experiments.performance.common import add_common_arguments, make_env

    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    env = make_env(parser.parse_args(TINY))
    reference = step_cost.ReferencePattern(env)
    reference.epoch()
    assert len(reference.epoch_rewards) == len(reference.epoch_states) == env.steps_per_epoch
    assert all(len(rewards) == env.batch_size and all(-1.0 <= r <= 1.0 for r in rewards) for rewards in reference.epoch_rewards)
    assert reference.epoch_states[0].shape == (env.batch_size, env.student.num_features + 5)


def test_throughput_prints_samples_per_second_per_view(capsys, one_torch_thread):
    throughput.main([*TINY, "--views", "batch", "sb3", "--rewards", "next_visit"])
    out = capsys.readouterr().out
    assert "plain supervised" in out and "batch / next_visit" in out and "sb3 / next_visit" in out


def test_memory_child_reports_its_run(one_torch_thread):
    parser_args = [*TINY, "--tutor", "uniform", "--reward", "next_visit", "--state-feature-dim", "8"]
    result = memory.run_child(memory.build_parser().parse_args(parser_args))
    assert result["train_size"] == 128 and result["state_dim"] == 8 + 5
    assert result["dataset_bytes"] > 0 and result["peak_bytes"] > 0 and result["tracemalloc_peak_bytes"] >= 0
    assert memory.expected_bytes_per_sample(13, "ppo", "next_visit")["rollout"] == 4 * (13 + 7)


def test_meta_step_compares_every_approximation_with_the_exact_step_and_times_each(capsys, one_torch_thread):
    tiny = ["--train-size", "128", "--val-size", "64", "--image-size", "32", "--epochs", "1", "--every", "1"]
    meta_step.main([*tiny, "--repeats", "1", "--meta-interval", "2"])
    lines = capsys.readouterr().out.splitlines()
    columns = ["l2rw: head", "l2rw: last_stage", "meta_weight_net: head", "meta_weight_net: last_stage"]
    assert all(column in lines[1] for column in [*columns, "meta_weight_net: student every 2"])
    rows = {line[: lines[2].index("  ")].strip(): line for line in lines[3:]}
    interval = lines[1].index("meta_weight_net: student every 2")
    gradients = rows["Spearman of meta-gradients, median [min, max]"]
    assert gradients[interval:].strip() == "-", "an interval version has no meta-gradients of its own"
    assert rows["compared steps"].split()[-1] == "2" and float(rows["mean absolute difference of weights"].split()[-1]) >= 0


def test_student_cost_charges_each_part_of_a_whole_student_beside_the_plain_loop(capsys, one_torch_thread):
    student_cost.main(["--config", "smoke", "--cell", "noise_0.30", "--tutors", "uniform", "meta_weight_net"])
    lines = capsys.readouterr().out.splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("tutor "))
    spans = [match.span() for match in re.finditer(r"-+", lines[header + 1])]  # the table's rule marks its columns

    def cells(line: str) -> list[str]:
        return [line[start:end].strip() for start, end in spans]

    columns = cells(lines[header])
    parts = {row[0]: dict(zip(columns, row, strict=True)) for row in map(cells, lines[header + 2 :])}
    assert list(parts) == ["plain loop", "uniform", "meta_weight_net"]
    rounding = 0.05 * (len(student_cost.PHASES) + 1)  # every figure is printed to 0.1 s
    for name, row in parts.items():
        phases = sum(float(row[phase]) for phase in student_cost.PHASES)
        assert abs(phases - float(row["wall s"])) <= rounding, f"{name}'s parts add up to its wall time"
    assert parts["plain loop"]["x plain loop"] == "1.00" and float(parts["plain loop"]["tutor acts"]) == 0.0
    assert float(parts["uniform"]["reward"]) == 0.0, "a tutor that does not learn reads no reward"
    assert float(parts["meta_weight_net"]["tutor acts"]) > 0.0, "the meta step is the tutor's act"


@pytest.mark.parametrize("module", [step_cost, throughput, memory, grid_cost])
def test_each_benchmark_documents_its_method(module):
    assert "\nMethod: " in module.__doc__


@pytest.mark.slow
@pytest.mark.skipif(not (grid_cost.REPOSITORY / ".git").exists(), reason="needs a git checkout to take another revision from")
def test_grid_cost_times_this_checkout_beside_a_revision_and_finds_the_same_students(capsys):
    grid_cost.main(["--config", "smoke", "--tutors", "uniform", "--seeds", "1", "--workers", "1", "--against", "HEAD"])
    lines = capsys.readouterr().out.splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("code "))
    spans = [match.span() for match in re.finditer(r"-+", lines[header + 1])]
    columns = [lines[header][start:end].strip() for start, end in spans]
    rows = [dict(zip(columns, [line[start:end].strip() for start, end in spans], strict=True)) for line in lines[header + 2 :]]
    assert [row["code"].split(" (")[0] for row in rows] == ["this checkout", "HEAD"]
    students = int(rows[0]["Students"])
    assert students >= 1 and rows[1]["Students"] == str(students), "the same grid trains as many Students in both codes"
    assert rows[0]["x first (median)"] == "1.00" and float(rows[1]["x first (median)"]) > 0
    # Every cell's test metrics are compared: the same code trains the same Students bit for bit in another checkout.
    assert [row["same Students"] for row in rows] == [f"{students}/{students}"] * 2


def test_grid_cost_counts_only_the_students_a_grid_trained_and_refuses_another_codes_records(tmp_path):
    def write(cell: str, **fields) -> None:
        path = tmp_path / "cells" / cell / "record.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"run": {"test": {"test_seen": {"auc": 0.5}}}, **fields}))

    code = grid_cost.Code("this", tmp_path, "a" * 40, "grid_cost")
    write("v/uniform/seed0", code={"commit": "a" * 40})
    write("w/uniform/seed0", code={"commit": "a" * 40}, same_student_as="cells/v/uniform/seed0")
    timing = grid_cost._read_grid(tmp_path, code, wall_s=36.0)
    assert timing.students == 1 and timing.students_per_hour == 100.0 and len(timing.test_metrics) == 2
    write("v/oracle/seed0", code={"commit": "b" * 40})
    with pytest.raises(SystemExit, match="another code ran"):
        grid_cost._read_grid(tmp_path, code, wall_s=36.0)


@pytest.mark.skipif(not (grid_cost.REPOSITORY / ".git").exists(), reason="needs a git checkout to take another revision from")
def test_grid_cost_runs_another_revision_from_its_own_worktree_and_removes_it(tmp_path):
    with grid_cost._worktree("HEAD") as root:
        code = grid_cost._checkout(root, "HEAD", "smoke")
        # Started outside the worktree, so that its environment alone decides which code is imported.
        imported = subprocess.run(
            [sys.executable, "-c", "import experiments; print(experiments.__file__)"],
            cwd=tmp_path,
            env=grid_cost.environment_of(code, cpus_per_cell=1),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert Path(imported).resolve().is_relative_to(root.resolve()), "the revision's own code is imported"
    assert not root.exists()
    worktrees = subprocess.run(["git", "-C", str(grid_cost.REPOSITORY), "worktree", "list"], capture_output=True, text=True)
    assert str(root) not in worktrees.stdout


def test_grid_cost_refuses_a_revision_git_does_not_know():
    with pytest.raises(SystemExit, match="git checkout"), grid_cost._worktree("no-such-revision-anywhere"):
        pass
