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
