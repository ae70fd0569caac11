"""The benchmark's statistics: Holm over a declared family, Wilcoxon beside the t-test, datasets as strata, no verdict
from fewer than three seeds."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from experiments.analysis.compare import GridRows, main, paired_between
from experiments.analysis.statistics import PairedDifference, holm, stratified_mean, wilcoxon_p
from experiments.analysis.summary import paired_summary, result_rows, write_csv
from experiments.analysis.tables import POOLED_SENTENCE, markdown_tables
from experiments.records.student_run import GroupTally, StudentRun


def record(tutor: str, seed: int, seen: float, unseen: float, dataset: str | None = None) -> dict[str, Any]:
    """A finished cell whose Student reached ``seen`` and ``unseen`` AUC (every other metric the same for all)."""
    other = {"video_auc": 0.5, "acc": 0.5, "eer": 0.3, "ap": 0.5}
    test = {"test_seen": {"auc": seen, **other}, "test_unseen": {"auc": unseen, **other}}
    noise = GroupTally(["clean", "flipped"], [1.0, 1.0], [1, 1])
    run = StudentRun(tutor, test=test, wall_time_s=1.0, weight_by_label_noise=noise)
    return {"variant": "v", "tutor": tutor, "seed": seed, "run": run} | ({"dataset": dataset} if dataset else {})


def grid(differences: dict[str, tuple[list[float], list[float]]], dataset: str | None = None, base: float = 0.7) -> list:
    """Records of uniform and of each tutor at its (seen, unseen) paired differences to uniform, seed by seed; uniform
    itself changes with the seed (and ``base``) so that only pairing by seed gives these differences."""
    seeds = range(len(next(iter(differences.values()))[0]))
    records = [record("uniform", s, base + s / 100, base - 0.1 + s / 100, dataset) for s in seeds]
    for tutor, (seen, unseen) in differences.items():
        records += [record(tutor, s, base + s / 100 + seen[s], base - 0.1 + s / 100 + unseen[s], dataset) for s in seeds]
    return records


def by_tutor(summary: list[dict[str, Any]], dataset: str | None = None) -> dict[str, dict[str, Any]]:
    return {row["tutor"]: row for row in summary if row.get("dataset") == dataset}


def test_holm_adjusts_a_hand_computed_family_and_keeps_the_adjusted_p_monotone():
    # Sorted: 0.005 × 4 = 0.02, 0.01 × 3 = 0.03, 0.03 × 2 = 0.06, 0.04 × 1 = 0.04 raised to 0.06 (never below the
    # adjusted p of a smaller raw p).
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # Capped at 1; an untested comparison (NaN) stays NaN and does not count in the family's size.
    adjusted = holm([0.5, float("nan"), 0.6])
    assert adjusted[0] == adjusted[2] == 1.0 and math.isnan(adjusted[1])
    assert holm([0.02, float("nan")])[0] == pytest.approx(0.02)


def test_wilcoxon_is_scipys_exact_signed_rank_test_and_nan_without_differences():
    differences = [0.02, -0.01, 0.03, 0.05, 0.04]
    # Ranks 2, 1, 3, 5, 4: the negative rank sum is 1; of the 2⁵ sign patterns 2 reach W ≤ 1, two-sided p = 4 / 32.
    assert wilcoxon_p(differences) == pytest.approx(0.125)
    assert wilcoxon_p(differences) == stats.wilcoxon(differences, alternative="two-sided").pvalue
    assert math.isnan(wilcoxon_p([0.0, 0.0, 0.0])) and math.isnan(wilcoxon_p([0.03])) and math.isnan(wilcoxon_p([]))


def test_the_pooled_difference_treats_datasets_as_strata_and_seeds_as_random_within_them():
    # A: 0.01, 0.02, 0.03 (mean 0.02, s² = 1e-4, n = 3); B: 0.04, 0.06 (mean 0.05, s² = 2e-4, n = 2).
    # v_A = 1e-4 / 3, v_B = 1e-4: SE = √(v_A + v_B) / 2 = √(1 / 7500) / 2; Welch–Satterthwaite
    # df = (v_A + v_B)² / (v_A² / 2 + v_B² / 1) = 32 / 19.
    mean, se, df = stratified_mean([[0.01, 0.02, 0.03], [0.04, 0.06]])
    assert mean == pytest.approx(0.035) and se == pytest.approx(math.sqrt(1 / 7500) / 2) and df == pytest.approx(32 / 19)
    difference = PairedDifference.stratified({"A": {0: 0.01, 1: 0.02, 2: 0.03}, "B": {0: 0.04, 1: 0.06}})
    half = stats.t.ppf(0.975, 32 / 19) * math.sqrt(1 / 7500) / 2
    assert difference.mean == pytest.approx(0.035) and difference.half_width == pytest.approx(half)
    assert difference.p == pytest.approx(2 * stats.t.sf(0.035 / (math.sqrt(1 / 7500) / 2), 32 / 19))
    assert difference.p_wilcoxon == stats.wilcoxon([0.01, 0.02, 0.03, 0.04, 0.06]).pvalue
    assert list(difference.per_seed) == ["A/0", "A/1", "A/2", "B/0", "B/1"] and difference.fewest_pairs == 2
    assert math.isnan(difference.sd), "no single spread over datasets"
    # One dataset is the ordinary paired t; a dataset without a pair leaves the pooled mean undefined.
    assert stratified_mean([[1.0, 2.0, 3.0]]) == pytest.approx((2.0, 1 / math.sqrt(3), 2.0))
    assert math.isnan(PairedDifference.stratified({"A": {0: 0.01, 1: 0.02}, "B": {}}).mean)


def test_holm_over_the_family_takes_the_bold_from_a_difference_significant_alone():
    # focal: +0.03, +0.04, +0.05 seen AUC (t = 4√3 on 2 df, p = 1 − t / √(2 + t²) = 0.0202): its interval excludes 0.
    # ppo and self_paced differ by nothing on average (p = 1); oracle and random are references, outside the family.
    level = ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    noise = ([0.02, -0.02, 0.0], [0.01, -0.01, 0.0])
    focal = ([0.03, 0.04, 0.05], [0.01, -0.01, 0.0])
    references = {"oracle": ([0.08, 0.08, 0.08], [0.04, 0.04, 0.04]), "random": level}
    p_alone = 1 - 4 * math.sqrt(3) / math.sqrt(50)

    summary = paired_summary(result_rows(grid({**references, "focal": focal, "ppo": noise, "self_paced": noise})))
    rows = by_tutor(summary)
    assert rows["focal"]["diff_test_seen_auc_p"] == pytest.approx(p_alone) and rows["focal"]["diff_test_seen_auc_low"] > 0
    # Family: 3 tutors × 2 splits' AUC; focal's is the smallest of 6 p-values.
    assert rows["focal"]["diff_test_seen_auc_p_holm"] == pytest.approx(6 * p_alone)
    assert rows["focal"]["diff_test_seen_auc_verdict"] == "no difference shown"
    assert all(math.isnan(rows[t]["diff_test_seen_auc_p_holm"]) for t in ("uniform", "oracle", "random"))
    assert rows["oracle"]["diff_test_seen_auc_verdict"] == "not in the family"
    assert rows["ppo"]["diff_test_seen_video_auc_verdict"] == "not in the family", "only the AUC differences are tested"
    markdown = markdown_tables(summary)
    assert "| focal | heuristic | 3 | +0.040 [" in markdown and "**" not in markdown
    assert "Family: the 2 × 3 differences to `uniform` (seen AUC, unseen AUC) of the tutors in this table" in markdown
    assert "Left out of it: the references uniform, oracle and random." in markdown

    # Alone in the family (with its unseen AUC, p = 1) focal's p is only doubled: 0.040 < 0.05, bold and better.
    rows = by_tutor(paired_summary(result_rows(grid({**references, "focal": focal}))))
    assert rows["focal"]["diff_test_seen_auc_p_holm"] == pytest.approx(2 * p_alone)
    assert rows["focal"]["diff_test_seen_auc_verdict"] == "better"
    assert "| focal | heuristic | 3 | **+0.040 [" in markdown_tables(list(rows.values()))


def test_fewer_than_three_seeds_give_the_differences_alone():
    two_seeds = {"oracle": ([0.08, 0.08], [0.04, 0.04]), "focal": ([0.05, 0.06], [0.02, 0.03])}
    summary = paired_summary(result_rows(grid(two_seeds)))
    focal = by_tutor(summary)["focal"]
    assert focal["diff_test_seen_auc_verdict"] == "fewer than 3 seeds" and math.isnan(focal["diff_test_seen_auc_p_holm"])
    assert not math.isnan(focal["diff_test_seen_auc_p"]), "the test itself is still given in results.csv"
    assert math.isnan(focal["share_of_oracle_test_seen_auc"])
    markdown = markdown_tables(summary)
    paired = markdown.split("Unpaired")[0]
    assert "2 seeds: the differences below are means over 2 pairs" in paired
    assert "fewer than three seeds give no verdict" in paired and "| focal | heuristic | 2 | +0.055 | +0.025 |" in paired
    for absent in ("[", "**", "verdict vs uniform", "share of oracle gain", "better"):
        assert absent not in paired

    # In a grid of three seeds, a tutor with two is judged by nothing and left out of the family.
    three = {"oracle": ([0.08] * 3, [0.04] * 3), "focal": ([0.03, 0.04, 0.05], [0.0] * 3)}
    records = grid(three) + [record("ppo", s, 0.7 + s / 100 + 0.05, 0.6 + s / 100) for s in range(2)]
    rows = by_tutor(paired_summary(result_rows(records)))
    assert rows["ppo"]["diff_test_seen_auc_verdict"] == "fewer than 3 seeds" and math.isnan(
        rows["ppo"]["diff_test_seen_auc_p_holm"]
    )
    markdown = markdown_tables(list(rows.values()))
    assert "| ppo | learned | 2 | +0.050 [" in markdown and "| fewer than 3 seeds |" in markdown
    assert "the references uniform, oracle and random and tutors with fewer than three seeds" in markdown


def test_rows_without_a_dataset_summarise_as_one_dataset():
    rows = result_rows(grid({"focal": ([0.03, 0.04, 0.05], [0.0, 0.0, 0.0])}))
    assert all("dataset" not in row for row in rows)
    summary = paired_summary(rows)
    assert all("dataset" not in row for row in summary) and len(summary) == 2
    focal = by_tutor(summary)["focal"]
    assert focal["diff_test_seen_auc"] == pytest.approx(0.04) and focal["diff_test_seen_auc_per_seed"].startswith("0:+0.0300")
    assert focal["diff_test_seen_auc_p_wilcoxon"] == pytest.approx(0.25), "3 positive differences: exact p = 2 / 2³"
    markdown = markdown_tables(summary)
    assert "| tutor | kind | pairs |" in markdown and "pooled" not in markdown and "dataset" not in markdown


def test_several_datasets_give_each_datasets_rows_and_a_pooled_row_tested_in_the_family(tmp_path):
    # Uniform differs between the datasets, so only pairing by (variant, dataset, seed) gives these differences.
    # A: +0.01, +0.02, +0.03; B: +0.04, +0.05, +0.06 (s = 0.01 each): pooled mean 0.035, SE √(2 × 1e-4 / 3) / 2,
    # Welch–Satterthwaite df = (2v)² / (2 v² / 2) = 4.
    records = grid({"focal": ([0.01, 0.02, 0.03], [0.0] * 3)}, "A")
    records += grid({"focal": ([0.04, 0.05, 0.06], [0.0] * 3)}, "B", base=0.8)
    rows = result_rows(records)
    assert [row["dataset"] for row in rows[:2]] == ["A", "A"] and list(rows[0])[:4] == ["variant", "dataset", "tutor", "seed"]
    summary = paired_summary(rows)
    assert [(row["dataset"], row["tutor"]) for row in summary][-2:] == [("pooled", "uniform"), ("pooled", "focal")]
    pooled, only_a = by_tutor(summary, "pooled")["focal"], by_tutor(summary, "A")["focal"]
    se = math.sqrt(2e-4 / 3) / 2
    assert pooled["diff_test_seen_auc"] == pytest.approx(0.035) and pooled["diff_test_seen_auc_pairs"] == 6
    assert pooled["diff_test_seen_auc_low"] == pytest.approx(0.035 - stats.t.ppf(0.975, 4) * se)
    assert pooled["diff_test_seen_auc_p"] == pytest.approx(2 * stats.t.sf(0.035 / se, 4))
    assert pooled["diff_test_seen_auc_p_holm"] == pytest.approx(2 * pooled["diff_test_seen_auc_p"]), "seen and unseen AUC"
    assert pooled["diff_test_seen_auc_verdict"] == "better" and pooled["seeds"] == 6
    assert only_a["diff_test_seen_auc"] == pytest.approx(0.02) and only_a["diff_test_seen_auc_verdict"] == "not in the family"
    markdown = markdown_tables(summary)
    assert POOLED_SENTENCE in markdown and "of the pooled rows of the tutors in this table" in markdown
    assert "| focal | pooled | heuristic | 6 | **+0.035 [" in markdown and "| focal | A | heuristic | 3 | +0.020 [" in markdown

    write_csv(rows, tmp_path / "runs.csv")
    table = paired_between(tmp_path, "focal", "uniform")
    assert table.startswith("Family: every pooled row below (6); Holm-adjusted p")
    assert "| v | pooled | test_seen_auc | 6 | +0.035 [" in table and "| v | A | test_seen_auc | 3 | +0.020 [" in table
    a_row = next(line for line in table.splitlines() if line.startswith("| v | A | test_seen_auc"))
    assert a_row.split(" | ")[6] == "-", "per-dataset rows are outside the family: no Holm p"
    seen_only = paired_between(tmp_path, "focal", "uniform", metrics=["test_seen_auc"])
    assert seen_only.startswith("Family: every pooled row below (1);") and "test_unseen_auc" not in seen_only
    pooled_line = next(line for line in seen_only.splitlines() if line.startswith("| v | pooled | test_seen_auc"))
    assert pooled_line.split(" | ")[6] == pooled_line.split(" | ")[5], "a family of one: Holm leaves its p"
    with pytest.raises(ValueError, match=r"no headline metric \['seen_auc'\]"):
        paired_between(tmp_path, "focal", "uniform", metrics=["seen_auc"])


def test_compare_pairs_a_tutor_across_two_variants_by_dataset_and_seed(tmp_path):
    """``--variants A B``: the same tutor under two settings, each seed's difference taken within its dataset."""
    exact = grid({"meta_weight_net": ([0.01, 0.02, 0.03], [0.0] * 3)}, "A")
    head = grid({"meta_weight_net": ([0.03, 0.05, 0.07], [0.0] * 3)}, "A")
    records = [entry | {"variant": "exact"} for entry in exact] + [entry | {"variant": "head"} for entry in head]
    write_csv(result_rows(records), tmp_path / "runs.csv")
    table = paired_between(tmp_path, "meta_weight_net", "meta_weight_net", ("head", "exact"))
    assert table.startswith("Family: every row below (")
    seen = next(line for line in table.splitlines() if "test_seen_auc" in line)
    assert seen.startswith("| head − exact | test_seen_auc | 3 | +0.030 [") and seen.endswith("+0.020, +0.030, +0.040 |")
    assert "| head | " not in table, "only the pair of variants asked for"
    with pytest.raises(ValueError, match=r"no variant \['fast'\]"):
        paired_between(tmp_path, "meta_weight_net", "meta_weight_net", ("fast", "exact"))


def test_compare_joins_the_variants_asked_for_of_several_grids_into_one_family(tmp_path, capsys):
    """A family whose variants ran in two folders is one command; ``OUT:VARIANT`` leaves out a folder's other
    variants (one unfinished, here, whose rows would otherwise join the family and change its Holm p)."""
    first, second = tmp_path / "transfer", tmp_path / "transfer_noise_0"
    kept = grid({"focal": ([0.01, 0.02, 0.03], [0.0] * 3)})
    unfinished = grid({"focal": ([0.05, 0.05, 0.06], [0.0] * 3)})
    noise_0 = grid({"focal": ([-0.01, 0.0, -0.02], [0.0] * 3)}, base=0.6)
    first.mkdir(), second.mkdir()
    records = [entry | {"variant": "kept"} for entry in kept] + [entry | {"variant": "unfinished"} for entry in unfinished]
    write_csv(result_rows(records), first / "runs.csv")
    write_csv(result_rows([entry | {"variant": "noise_0"} for entry in noise_0]), second / "runs.csv")

    main([f"{first}:kept", str(second), "focal", "uniform", "--metrics", "test_seen_auc"])
    table = capsys.readouterr().out
    assert table.startswith("Family: every row below (2); Holm-adjusted p.")
    rows = {line.split(" | ")[0].removeprefix("| "): line.split(" | ") for line in table.splitlines()[4:]}
    assert set(rows) == {"transfer/kept", "transfer_noise_0/noise_0"}, "the unfinished variant left out"
    raw = {name: float(cells[4]) for name, cells in rows.items()}
    expected = dict(zip(raw, holm(list(raw.values())), strict=True))
    assert {name: float(cells[5]) for name, cells in rows.items()} == pytest.approx(expected, abs=1e-3)
    assert rows["transfer_noise_0/noise_0"][3].startswith("-0.010 [") and rows["transfer/kept"][3].startswith("+0.020 [")

    everything = paired_between([first, second], "focal", "uniform", metrics=["test_seen_auc"])
    assert everything.startswith("Family: every row below (3);") and "| transfer/unfinished |" in everything
    assert GridRows.parse("runs/a:b,c") == GridRows(Path("runs/a"), ("b", "c"))
    assert GridRows.parse("runs/a") == GridRows(Path("runs/a"))
    assert GridRows.parse("x:/runs/a") == GridRows(Path("x:/runs/a")), "a colon before a slash is part of the path"
    with pytest.raises(ValueError, match=r"transfer: no variant \['noise_0'\]"):
        paired_between([GridRows(first, ("noise_0",)), second], "focal", "uniform")
    with pytest.raises(ValueError, match="one folder"):
        paired_between([first, second], "focal", "focal", ("kept", "noise_0"))
    with pytest.raises(ValueError, match="no variant after the colon"):
        GridRows.parse("runs/a:")
    with pytest.raises(ValueError, match="share a last name"):
        paired_between([first, tmp_path / "other" / "transfer"], "focal", "uniform")
    with pytest.raises(ValueError, match="no seed has both 'focal' and 'oracle'"):
        paired_between([first, second], "focal", "oracle")
    with pytest.raises(FileNotFoundError, match="finished grid"):
        paired_between(tmp_path / "absent", "focal", "uniform")


def test_compare_says_what_was_wrong_with_its_arguments_in_its_own_words(tmp_path, capsys):
    """A wrong folder, filter or tutor on the command line ends in argparse's usage line and the refusal's own message
    (exit code 2), not a traceback and not argparse's bare "invalid value"."""
    write_csv(result_rows(grid({"focal": ([0.01, 0.02, 0.03], [0.0] * 3)})), tmp_path / "runs.csv")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "runs.csv").write_text("variant,tutor,seed,diff_test_seen_auc\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "runs.csv").write_text("tutor,auc\nuniform,0.5\n")
    refusals = {
        (f"{tmp_path}:", "focal", "uniform"): "no variant after the colon",
        (str(tmp_path / "absent"), "focal", "uniform"): "no such file; give the output folder of a finished grid",
        (str(tmp_path / "empty"), "focal", "uniform"): "no finished cell",
        (str(tmp_path / "other"), "focal", "uniform"): "no column ['seed', 'variant']",
        (str(tmp_path), "focal", "oracle"): "no seed has both 'focal' and 'oracle'",
    }
    for arguments, message in refusals.items():
        with pytest.raises(SystemExit) as stop:
            main(list(arguments))
        error = capsys.readouterr().err
        assert stop.value.code == 2 and message in error and "Traceback" not in error, arguments
        assert error.startswith("usage: python -m experiments.analysis.compare")
