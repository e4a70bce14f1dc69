"""Mean ± std across seeds, the Markdown table's numbers and the common horizon, against numpy on the
values the runs logged."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from papo_verl.compare import CompareError, CompareWarning, compare, load_runs
from papo_verl.compare.cli import main
from tests.compare.helpers import run_config, synthetic_metrics, write_file_run

SEEDS = (1, 2, 3)
METRICS = ("critic/score/mean", "actor/entropy", "val-core/gsm8k/acc/mean@1", "papo/tilt", "papo/val/sign_agreement")


@pytest.fixture(scope="module")
def three_seeds_each(tmp_path_factory):
    """PAPO and GRPO, seeds 1-3, steps 1..6 (entropy NaN at one step of one seed); {algo: {seed: metrics}}."""
    root = tmp_path_factory.mktemp("runs")
    written = {}
    for algorithm in ("papo", "grpo"):
        for seed in SEEDS:
            metrics = synthetic_metrics(algorithm, seed, range(1, 7), nan_step=3 if seed == 2 else None)
            write_file_run(root, run_config(algorithm, seed, f"{algorithm}-seed{seed}"), metrics)
            written.setdefault(algorithm, {})[seed] = metrics
    return root, written


def _numpy_stats(written_by_seed, metric, steps):
    out = {}
    for step in steps:
        values = [m[step][metric] for m in written_by_seed.values()
                  if step in m and metric in m[step] and math.isfinite(m[step][metric])]
        if values:
            std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
            out[step] = (float(np.mean(values)), std, len(values))
    return out


def _load(root, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CompareWarning)
        comparison = compare(load_runs([root]), **kwargs)
    return comparison, [str(w.message) for w in caught]


def _assert_frame_matches(agg: pd.DataFrame, expected: dict):
    assert list(agg.index) == sorted(expected)
    for step, (mean, std, n) in expected.items():
        assert agg.loc[step, "mean"] == pytest.approx(mean, rel=1e-12)
        assert int(agg.loc[step, "n"]) == n
        if n > 1:
            assert agg.loc[step, "std"] == pytest.approx(std, rel=1e-12)
        else:
            assert math.isnan(agg.loc[step, "std"])


@pytest.mark.slow  # renders figures / runs the CLI (seconds each)
def test_mean_and_std_per_step_match_numpy(three_seeds_each):
    root, written = three_seeds_each
    comparison, messages = _load(root)
    assert messages == []
    assert comparison.horizon == 6
    for algorithm in ("papo", "grpo"):
        for metric in METRICS:
            agg = comparison.aggregate(metric, algorithm)
            if metric.startswith("papo/") and algorithm == "grpo":
                assert agg is None
                continue
            _assert_frame_matches(agg, _numpy_stats(written[algorithm], metric, range(1, 7)))
    # the NaN entropy at step 3 of seed 2 leaves two runs there
    assert int(comparison.aggregate("actor/entropy", "papo").loc[3, "n"]) == 2
    # validation every 2nd step only
    assert list(comparison.aggregate("val-core/gsm8k/acc/mean@1", "grpo").index) == [2, 4, 6]


def _parse(cell: str) -> tuple[float, float]:
    mean, _, std = cell.partition(" ± ")
    return float(mean), float(std) if std else math.nan


def _table_rows(markdown: str) -> dict[tuple[str, str, str], list[str]]:
    """``{(metric, statistic, algorithm): [n, mean ± sd, 95 % CI, at step, (Δ, p)]}`` from the results table."""
    rows = {}
    for line in markdown.splitlines():
        match = re.match(r"^\| `([^`]+)` \| (final|best|auc|initial) \| (\w[\w+]*) \| (.*)\|$", line)
        if match:
            rows[(match[1], match[2], match[3])] = [cell.strip() for cell in match[4].split("|")]
    return rows


def test_markdown_final_best_and_auc_match_numpy_and_scipy(three_seeds_each):
    from scipy import stats

    root, written = three_seeds_each
    comparison, _ = _load(root)
    rows = _table_rows(comparison.markdown())
    for algorithm in ("papo", "grpo"):
        for metric in ("critic/score/mean", "val-core/gsm8k/acc/mean@1", "actor/entropy", "papo/tilt"):
            if metric.startswith("papo/") and algorithm == "grpo":
                assert (metric, "final", algorithm) not in rows
                continue
            finals = [m[max(s for s in m if metric in m[s])][metric] for m in written[algorithm].values()]
            n, final, interval, at_step = rows[(metric, "final", algorithm)]
            assert int(n) == 3
            assert _parse(final)[0] == pytest.approx(np.mean(finals), rel=1e-3)
            assert _parse(final)[1] == pytest.approx(np.std(finals, ddof=1), rel=5e-2)
            half = stats.t.ppf(0.975, 2) * np.std(finals, ddof=1) / np.sqrt(3)
            low, high = (float(v) for v in interval.strip("[]").split(","))
            assert (low, high) == pytest.approx((np.mean(finals) - half, np.mean(finals) + half), rel=1e-3, abs=1e-4)
            assert at_step == "6"
            if metric == "actor/entropy" or metric.startswith("papo/"):
                assert (metric, "best", algorithm) not in rows and (metric, "auc", algorithm) not in rows
            else:
                bests = [max(v[metric] for v in m.values() if metric in v) for m in written[algorithm].values()]
                assert _parse(rows[(metric, "best", algorithm)][1])[0] == pytest.approx(np.mean(bests), rel=1e-3)
            if metric.startswith("val-core/"):  # held out: the area under the curve per step
                aucs = []
                for m in written[algorithm].values():
                    steps = sorted(s for s in m if metric in m[s])
                    aucs.append(np.trapezoid([m[s][metric] for s in steps], steps) / (steps[-1] - steps[0]))
                assert _parse(rows[(metric, "auc", algorithm)][1])[0] == pytest.approx(np.mean(aucs), rel=1e-3)
            # no run evaluated before training (step 2 is the first validation, step 1 the first training step):
            # no placebo row (tests/compare/test_eval_merge_on_cpu.py has one)
            assert (metric, "initial", algorithm) not in rows


@pytest.mark.slow  # renders figures / runs the CLI (seconds each)
def test_baseline_difference_is_welchs(three_seeds_each, tmp_path):
    from scipy import stats

    root, written = three_seeds_each
    comparison, _ = _load(root, baseline="grpo")
    table = comparison.stats_table().set_index(["metric", "statistic", "algorithm"])
    metric = "critic/score/mean"
    finals = {a: [m[max(m)][metric] for m in written[a].values()] for a in ("papo", "grpo")}
    welch = stats.ttest_ind(finals["papo"], finals["grpo"], equal_var=False)
    row = table.loc[(metric, "final", "papo")]
    assert row["diff"] == pytest.approx(np.mean(finals["papo"]) - np.mean(finals["grpo"]), rel=1e-12)
    assert row["p_value"] == pytest.approx(welch.pvalue, rel=1e-12)
    ci = welch.confidence_interval(0.95)
    assert (row["diff_low"], row["diff_high"]) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert math.isnan(table.loc[(metric, "final", "grpo")]["diff"])  # the baseline itself
    assert "Δ vs grpo [95 % CI] | p (Welch)" in comparison.markdown()
    with pytest.raises(CompareError, match="baseline 'ppo' is not one of the algorithms compared: grpo, papo"):
        _load(root, baseline="ppo")
    assert main([str(root), "-o", str(tmp_path / "out"), "--baseline", "grpo"]) == 0
    csv = pd.read_csv(tmp_path / "out" / "stats.csv")
    assert csv.set_index(["metric", "statistic", "algorithm"]).loc[(metric, "final", "papo"), "p_value"] == \
        pytest.approx(welch.pvalue, rel=1e-9)


@pytest.mark.slow  # renders figures / runs the CLI (seconds each)
def test_cli_writes_aggregate_csv_with_numpys_values(three_seeds_each, tmp_path, capsys):
    root, written = three_seeds_each
    assert main([str(root), "-o", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "aggregate.csv")
    assert list(table.columns) == ["algorithm", "metric", "step", "mean", "std", "n"]
    assert set(table["algorithm"]) == {"papo", "grpo"}
    assert not table[(table["algorithm"] == "grpo") & table["metric"].str.startswith("papo/")].shape[0]
    for algorithm in ("papo", "grpo"):
        expected = _numpy_stats(written[algorithm], "critic/score/mean", range(1, 7))
        rows = table[(table["algorithm"] == algorithm) & (table["metric"] == "critic/score/mean")].set_index("step")
        _assert_frame_matches(rows, expected)
    stdout = capsys.readouterr().out
    assert stdout.strip() == (tmp_path / "out" / "summary.md").read_text().strip()


@pytest.mark.slow  # renders figures / runs the CLI (seconds each)
def test_different_horizons_are_warned_and_compared_on_the_common_one(tmp_path):
    written = {}
    for algorithm, seed, last in (("papo", 1, 8), ("papo", 2, 8), ("grpo", 1, 5), ("grpo", 2, 7)):
        metrics = synthetic_metrics(algorithm, seed, range(1, last + 1))
        write_file_run(tmp_path, run_config(algorithm, seed, f"{algorithm}-seed{seed}"), metrics)
        written.setdefault(algorithm, {})[seed] = metrics
    comparison, messages = _load(tmp_path)
    assert comparison.horizon == 5
    assert "horizons differ between algorithms (grpo ends at steps 5..7, papo ends at step 8); comparing every " \
           "algorithm on the common horizon, steps ≤ 5" in messages
    assert "runs of grpo end at different steps (grpo-seed1: 5, grpo-seed2: 7); comparing on steps ≤ 5" in messages
    for algorithm in ("papo", "grpo"):
        agg = comparison.aggregate("critic/score/mean", algorithm)
        _assert_frame_matches(agg, _numpy_stats(written[algorithm], "critic/score/mean", range(1, 6)))
    rows = _table_rows(comparison.markdown())
    n, final, _, at_step = rows[("critic/score/mean", "final", "papo")]
    assert at_step == "5"
    assert _parse(final)[0] == pytest.approx(np.mean([m[5]["critic/score/mean"] for m in written["papo"].values()]),
                                            rel=1e-3)
    assert "Steps ≤ **5** (common horizon)" in comparison.markdown()

    capped, messages = _load(tmp_path, max_step=3)
    assert capped.horizon == 3
    assert list(capped.aggregate("papo/tilt", "papo").index) == [1, 2, 3]
    _, messages = _load(tmp_path, max_step=50)
    assert "max step 50 is beyond the common horizon; comparing on steps ≤ 5" in messages


@pytest.mark.slow  # renders figures / runs the CLI (seconds each)
def test_final_window_averages_each_runs_last_steps_before_the_seed_statistics(three_seeds_each, tmp_path, capsys):
    root, written = three_seeds_each
    comparison, _ = _load(root, final_window=3)
    rows = {(r.metric, r.label): r for r in comparison.summary_rows() if r.statistic == "final"}
    for algorithm in ("papo", "grpo"):
        for metric in ("critic/score/mean", "actor/entropy", "val-core/gsm8k/acc/mean@1"):
            per_run = []
            for m in written[algorithm].values():
                logged = [m[s][metric] for s in sorted(m) if metric in m[s] and math.isfinite(m[s][metric])]
                per_run.append(logged[-1] if metric.startswith("val-") else np.mean(logged[-3:]))
            row = rows[(metric, algorithm)]
            assert row.mean == pytest.approx(np.mean(per_run), rel=1e-12)
            assert row.std == pytest.approx(np.std(per_run, ddof=1), rel=1e-12)
        # held-out metrics (validation) are large samples of their own: the last evaluation, not a window
        assert rows[("val-core/gsm8k/acc/mean@1", algorithm)].steps == (6,)
        assert rows[("critic/score/mean", algorithm)].steps == (4, 5, 6)
    markdown = comparison.markdown()
    assert "final = each run's mean over its last 3 logged steps" in markdown
    # the best-so-far rows do not depend on the window
    assert _table_rows(markdown)[("critic/score/mean", "best", "papo")] == _table_rows(_load(root)[0].markdown())[
        ("critic/score/mean", "best", "papo")]

    assert main([str(root), "-o", str(tmp_path / "out"), "--final-window", "3"]) == 0
    assert "each run's mean over its last 3 logged steps" in (tmp_path / "out" / "summary.md").read_text()
    capsys.readouterr()
    assert main([str(root), "-o", str(tmp_path / "bad"), "--final-window", "0"]) == 2
    assert "final_window must be an integer >= 1" in capsys.readouterr().err


def test_summary_rows_cover_what_the_protocols_hypotheses_compare(tmp_path):
    """Each split's branch responses (H4), exact vs sampled-only sign agreement (H5) and the token correlation
    are summary rows by default, in that order after PAPO's weights."""

    write_file_run(tmp_path, run_config("papo", 1, "papo-seed1"), synthetic_metrics("papo", 1, range(1, 9)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompareWarning)
        comparison = compare(load_runs([tmp_path]))
    rows = [m for m in comparison.table_metrics() if m.startswith("papo/val/")]
    assert rows == ["papo/val/branch_dH_expand", "papo/val/branch_dH_contract", "papo/val/sign_split_dH_neg_adv",
                    "papo/val/sign_split_dH_pos_adv", "papo/val/sign_agreement", "papo/val/sign_agreement_sampled_only",
                    "papo/val/token_corr_pearson",
                    # the paired contrasts: what the correction adds (H5), each split's separation (H4)
                    "papo/val/sign_agreement − papo/val/sign_agreement_sampled_only",
                    "papo/val/branch_dH_expand − papo/val/branch_dH_contract",
                    "papo/val/sign_split_dH_neg_adv − papo/val/sign_split_dH_pos_adv"]
    assert "| `papo/val/sign_agreement_sampled_only` |" in comparison.markdown()


def _finals(by_seed: dict, metric: str, window: int) -> list[float]:
    """Per run: the mean of ``metric`` over its last ``window`` logged steps."""
    out = []
    for metrics in by_seed.values():
        steps = sorted(s for s in metrics if metric in metrics[s] and math.isfinite(metrics[s][metric]))
        out.append(float(np.mean([metrics[s][metric] for s in steps[-window:]])))
    return out


def test_contrasts_are_paired_within_each_run_as_scipys_paired_t(three_seeds_each):
    """A built-in contrast's final row is the paired comparison of its two metrics: each run's difference first
    (both are logged at the same steps), then the mean and t interval over runs, which is scipy's ttest_rel;
    no best row, and no row for an algorithm that logs neither (GRPO)."""
    from scipy import stats

    root, written = three_seeds_each
    comparison, _ = _load(root, final_window=2)
    name = "papo/val/sign_agreement − papo/val/sign_agreement_sampled_only"
    assert name in comparison.contrasts and comparison.table_metrics()[-3:] == list(comparison.contrasts)
    exact = _finals(written["papo"], "papo/val/sign_agreement", 2)
    sampled = _finals(written["papo"], "papo/val/sign_agreement_sampled_only", 2)
    (row,) = [r for r in comparison.summary_rows() if r.metric == name]
    assert (row.statistic, row.label, row.n, row.steps) == ("final", "papo", 3, (4, 6))
    paired = stats.ttest_rel(exact, sampled)
    assert row.mean == pytest.approx(np.mean(exact) - np.mean(sampled), rel=1e-12)
    ci = paired.confidence_interval(0.95)
    assert (row.ci_low, row.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    # the separate rows' Welch-style comparison would not be paired: the interval differs
    unpaired = stats.ttest_ind(exact, sampled, equal_var=False).confidence_interval(0.95)
    assert (row.ci_high - row.ci_low) != pytest.approx(unpaired.high - unpaired.low, rel=1e-3)
    # the column is the per-step difference, NaN where either metric is missing
    run = comparison.groups["papo"][0]
    expected = (run.metrics["papo/val/sign_agreement"] - run.metrics["papo/val/sign_agreement_sampled_only"])
    pd.testing.assert_series_equal(run.metrics[name], expected, check_names=False)
    assert run.metrics[name].isna().sum() == 3  # steps 1, 3, 5: no same-batch validation
    assert f"| `{name}` | final | papo | 3 |" in comparison.markdown()


@pytest.mark.slow  # renders figures / runs the CLI (seconds each)
def test_asked_contrasts_held_out_ones_and_bad_ones(three_seeds_each, tmp_path, capsys):
    """``--contrast A B``: a held-out one gets final (the last evaluation) and auc rows (initial only where both
    were evaluated before training, not here) but no best and no validation panel; Welch's difference to the baseline compares the per-run differences; a metric
    subtracted from itself is an error, a metric no run logged a warning with a hint."""
    from scipy import stats

    root, written = three_seeds_each
    pair = ("val-core/gsm8k/acc/mean@1", "critic/score/mean")
    name = "val-core/gsm8k/acc/mean@1 − critic/score/mean"
    comparison, _ = _load(root, contrasts=[pair], baseline="grpo")
    assert name not in comparison.validation_metrics()
    rows = {(r.statistic, r.label): r for r in comparison.summary_rows() if r.metric == name}
    assert set(rows) == {("final", "papo"), ("final", "grpo"), ("auc", "papo"), ("auc", "grpo")}
    differences = {a: [m[6][pair[0]] - m[6][pair[1]] for m in written[a].values()] for a in ("papo", "grpo")}
    assert rows[("final", "papo")].mean == pytest.approx(np.mean(differences["papo"]), rel=1e-12)
    welch = stats.ttest_ind(differences["papo"], differences["grpo"], equal_var=False)
    assert rows[("final", "papo")].p_value == pytest.approx(welch.pvalue, rel=1e-12)
    aucs = [np.trapezoid([m[s][pair[0]] - m[s][pair[1]] for s in (2, 4, 6)], (2, 4, 6)) / 4
            for m in written["grpo"].values()]
    assert rows[("auc", "grpo")].mean == pytest.approx(np.mean(aucs), rel=1e-12)

    with pytest.raises(CompareError, match="subtracts a metric from itself"):
        _load(root, contrasts=[("actor/entropy", "actor/entropy")])
    _, caught = _load(root, contrasts=[("actor/entropi", "actor/entropy")])
    assert any("contrast actor/entropi − actor/entropy was asked for but no run logged actor/entropi" in m
               and "did you mean actor/entropy" in m for m in caught)

    out = tmp_path / "out"
    assert main([str(root), "-o", str(out), "--contrast", *pair, "--final-window", "2"]) == 0
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert f"| `{name}` | final | papo | 3 |" in summary and f"| `{name}` | best |" not in summary
    assert "papo/val/branch_dH_expand − papo/val/branch_dH_contract" in summary  # built in
    assert name in set(pd.read_csv(out / "stats.csv")["metric"])


def _run(name: str, label: str, columns: dict[str, dict[int, float]]):
    """A run built in memory (pure unit test of the contrasts' bookkeeping): ``{metric: {step: value}}``."""
    from pathlib import Path

    from papo_verl.compare import Run

    frame = pd.DataFrame(columns, dtype=float).sort_index()
    return Run(name=name, source="file", log_paths=(Path(f"{name}.jsonl"),), metrics=frame, label=label)


def test_contrast_bookkeeping_missing_steps_identical_metrics_repeats_and_a_second_comparison():
    training = {s: 1.0 for s in range(1, 7)}
    a = {"actor/entropy": training, "A": {2: 0.5, 4: 0.7, 6: 0.9}, "B": {2: 0.1, 4: 0.2},  # B missing at step 6
         "eval/pass@1": {0: 0.2, 6: 0.3}, "eval/pass@1_se": {0: 0.01, 6: 0.02}}
    same = {"actor/entropy": training, "A": {2: 0.4, 4: 0.6}, "B": {2: 0.4, 4: 0.6},  # one quantity, two names
            "eval/pass@1": {0: 0.25, 6: 0.35}, "eval/pass@1_se": {0: 0.01, 6: 0.02}}
    runs = [_run("x-seed0", "x", a), _run("x-seed1", "x", same)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CompareWarning)
        comparison = compare(runs, contrasts=[("A", "B"), ("A", "B"), ("eval/pass@1", "eval/pass@1_se")])
    messages = [str(w.message) for w in caught]
    assert comparison.contrasts == ("A − B", "eval/pass@1 − eval/pass@1_se")  # asked twice, tabulated once
    assert comparison.table_metrics().count("A − B") == 1
    # the difference exists where both were logged: steps 2 and 4, not 6
    assert runs[0].metrics["A − B"].dropna().to_dict() == pytest.approx({2: 0.4, 4: 0.5})
    # equal at every step: left out of that run with a warning, not a measured 0
    assert "A − B" not in runs[1].metrics.columns
    assert any("contrast A − B: left out for x-seed1" in m for m in messages)
    (row,) = [r for r in comparison.summary_rows() if r.metric == "A − B"]
    assert (row.statistic, row.n, row.mean, row.steps) == ("final", 1, pytest.approx(0.5), (4,))
    # a contrast with an evaluation's standard error describes the evaluation: a final row only
    assert comparison.describes_evaluation("eval/pass@1 − eval/pass@1_se")
    assert {r.statistic for r in comparison.summary_rows() if r.metric.startswith("eval/pass@1 −")} == {"final"}
    # the next comparison of the same runs starts from the logged metrics only
    again = compare(runs)
    assert again.contrasts == () and not any("−" in c for r in runs for c in r.metrics.columns)
    assert "eval/pass@1 − eval/pass@1_se" not in again.table_metrics()
