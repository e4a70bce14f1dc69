"""<experiment>.eval.jsonl (a held-out evaluation written after the run) is merged into that run."""

from __future__ import annotations

import json
import warnings

import pytest

from papo_verl.compare import CompareWarning, compare, load_runs
from tests.compare.helpers import run_config, synthetic_metrics, write_file_run


def test_eval_file_joins_its_run_without_replacing_logged_values(tmp_path):
    logs = {}
    for algorithm in ("papo", "grpo"):
        metrics = synthetic_metrics(algorithm, 1, range(1, 7))
        path = write_file_run(tmp_path, run_config(algorithm, 1, f"{algorithm}-seed1"), metrics)
        logs[algorithm] = (path, metrics)
    papo_log, papo_metrics = logs["papo"]
    held_out = {0: {"eval/pass@1": 0.2, "eval/distinct_correct": 1.5},
                3: {"eval/pass@1": 0.3, "eval/distinct_correct": 1.7, "critic/score/mean": -99.0},
                6: {"eval/pass@1": 0.4, "eval/distinct_correct": 1.2}}
    with open(papo_log.with_name("papo-seed1.eval.jsonl"), "w") as fh:
        for step, data in held_out.items():
            fh.write(json.dumps({"step": step, "data": data}) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompareWarning)
        runs = load_runs([tmp_path])
    assert sorted(r.name for r in runs) == ["grpo-seed1", "papo-seed1"]  # the eval file is not a run
    papo = next(r for r in runs if r.name == "papo-seed1")
    assert papo.series("eval/pass@1").to_dict() == {0: 0.2, 3: 0.3, 6: 0.4}
    assert papo.series("critic/score/mean")[3] == pytest.approx(papo_metrics[3]["critic/score/mean"])  # not replaced
    assert papo.training_steps == list(range(1, 7))  # held-out steps (0) are not training steps
    comparison = compare(runs, baseline="grpo")
    rows = {(r.metric, r.statistic): r for r in comparison.summary_rows() if r.label == "papo"}
    assert rows[("eval/pass@1", "final")].mean == 0.4 and rows[("eval/pass@1", "best")].mean == 0.4
    assert rows[("eval/pass@1", "auc")].mean == pytest.approx((0.5 * (0.2 + 0.3) * 3 + 0.5 * (0.3 + 0.4) * 3) / 6)
    assert rows[("eval/distinct_correct", "best")].mean == 1.7
    # the first evaluation (step 0, before training) is the placebo row: its value and step
    assert rows[("eval/pass@1", "initial")].mean == 0.2 and rows[("eval/pass@1", "initial")].steps == (0,)
    assert rows[("eval/distinct_correct", "initial")].mean == 1.5
    assert ("critic/score/mean", "initial") not in rows  # training metrics have no placebo row


def _write_eval(log_path, held_out: dict[int, dict[str, float]]) -> None:
    with open(log_path.with_name(log_path.stem + ".eval.jsonl"), "w") as fh:
        for step, data in held_out.items():
            fh.write(json.dumps({"step": step, "data": data}) + "\n")


def test_initial_row_is_the_evaluation_before_training_compared_by_welch(tmp_path):
    """The placebo row: each run's evaluation before its first training step, compared with the baseline's
    by Welch's test; a run whose first evaluation comes after training started has no such row."""
    from scipy import stats

    before = {("papo", 1): 0.21, ("papo", 2): 0.18, ("grpo", 1): 0.20, ("grpo", 2): 0.16, ("grpo", 3): 0.17}
    for (algorithm, seed), start in before.items():
        path = write_file_run(tmp_path, run_config(algorithm, seed, f"{algorithm}-seed{seed}"),
                              synthetic_metrics(algorithm, seed, range(1, 7)))
        _write_eval(path, {0: {"eval/pass@1": start}, 6: {"eval/pass@1": start + 0.1 * seed}})
    # papo-seed3 was evaluated only after training had started: no initial value, but a final one
    path = write_file_run(tmp_path, run_config("papo", 3, "papo-seed3"), synthetic_metrics("papo", 3, range(1, 7)))
    _write_eval(path, {3: {"eval/pass@1": 0.5}, 6: {"eval/pass@1": 0.6}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompareWarning)
        comparison = compare(load_runs([tmp_path]), baseline="grpo")
    rows = {(r.metric, r.statistic, r.label): r for r in comparison.summary_rows()}
    papo, grpo = rows[("eval/pass@1", "initial", "papo")], rows[("eval/pass@1", "initial", "grpo")]
    assert papo.n == 2 and rows[("eval/pass@1", "final", "papo")].n == 3
    assert sorted(papo.values) == [0.18, 0.21] and papo.steps == (0,) and grpo.n == 3
    welch = stats.ttest_ind([0.21, 0.18], [0.20, 0.16, 0.17], equal_var=False)
    interval = welch.confidence_interval(0.95)
    assert papo.diff == pytest.approx(0.195 - 0.53 / 3, rel=1e-12) and papo.p_value == pytest.approx(welch.pvalue)
    assert (papo.diff_low, papo.diff_high) == pytest.approx((interval.low, interval.high))
    csv = comparison.stats_table()
    initial = csv[(csv.metric == "eval/pass@1") & (csv.statistic == "initial")].set_index("algorithm")
    assert initial.loc["papo", "p_value"] == pytest.approx(welch.pvalue) and initial.loc["grpo", "n"] == 3
    assert "initial = the evaluation before the first training step" in comparison.markdown()



def test_standard_errors_and_sizes_of_an_evaluation_get_a_final_row_only(tmp_path):
    for algorithm in ("papo", "grpo"):
        for seed in (1, 2):
            path = write_file_run(tmp_path, run_config(algorithm, seed, f"{algorithm}-seed{seed}"),
                                  synthetic_metrics(algorithm, seed, range(1, 4)))
            _write_eval(path, {step: {"eval/pass@1": 0.1 * step + 0.01 * seed, "eval/pass@1_se": 0.01 + 0.001 * seed,
                                      "eval/n_problems": 256.0} for step in (0, 3)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompareWarning)
        comparison = compare(load_runs([tmp_path]), baseline="grpo")
    rows = {(r.metric, r.statistic, r.label): r for r in comparison.summary_rows()}
    for metric in ("eval/pass@1_se", "eval/n_problems"):
        assert {key[1] for key in rows if key[0] == metric} == {"final"}, metric
        assert rows[(metric, "final", "papo")].diff is None  # described, not compared
    assert rows[("eval/pass@1_se", "final", "papo")].mean == pytest.approx(0.0115)
    assert {key[1] for key in rows if key[0] == "eval/pass@1"} == {"final", "best", "auc", "initial"}
    assert rows[("eval/pass@1", "final", "papo")].diff == pytest.approx(0.0)
