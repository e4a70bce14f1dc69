"""ACCEPTANCE: papo-compare on the logs of real short CPU runs (verl's trainer, file logger).

``e2e_runs`` (session fixture of the end-to-end tests) runs a short PAPO and a short GRPO training on
CPU and returns ``{"papo": dir, "grpo": dir}``, each directory holding that run's
``<experiment>.jsonl`` and ``<experiment>.config.yaml`` (possibly the same directory for both). The
expected values below are read from those logs directly, not from papo-compare.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml

from papo_verl.compare import CompareWarning, compare, load_runs, plot_runs
from papo_verl.compare.analysis import format_mean_std
from tests.compare.helpers import REPO, png_size

pytestmark = pytest.mark.slow

PAPO_PANELS = {"papo_tilt", "papo_weights", "papo_token_share", "papo_entropy_filter", "papo_slope_snr",
               "papo_branch_response", "papo_same_batch_dH", "papo_sign_agreement"}


def _read_log(path: Path) -> dict[int, dict[str, float]]:
    steps: dict[int, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            values = {k: float(v) for k, v in record["data"].items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
            steps.setdefault(int(record["step"]), {}).update(values)
    return steps


def _run_log(directory: Path, estimator: str) -> tuple[tuple[Path, ...], dict[int, dict[str, float]]]:
    """The metrics log(s) in ``directory`` of the run whose resolved config has
    ``algorithm.adv_estimator=estimator``, as {step: {metric: value}} (nulls dropped).

    If that run was resumed in the same folder (``<experiment>-2.jsonl``, e2e's papo_resumed_run), its
    segments are merged by the documented rule: a later segment replaces the earlier ones from its first
    step on, merging metric by metric at that step.
    """
    segments: dict[str, list[tuple[int, Path]]] = {}
    for config_path in sorted(directory.glob("*.config.yaml")):
        config = yaml.safe_load(config_path.read_text())
        if config["algorithm"]["adv_estimator"] != estimator:
            continue
        stem = config_path.name.removesuffix(".config.yaml")
        experiment = config["trainer"]["experiment_name"]
        k = 1 if stem == experiment else int(stem.removeprefix(experiment + "-"))
        segments.setdefault(experiment, []).append((k, config_path.with_name(stem + ".jsonl")))
    assert len(segments) == 1, f"expected one {estimator} run in {directory}, found {segments}"
    (parts,) = segments.values()
    paths = tuple(path for _, path in sorted(parts))
    merged: dict[int, dict[str, float]] = {}
    for path in paths:
        log = _read_log(path)
        if log:
            merged = {s: v for s, v in merged.items() if s <= min(log)}
            for step, values in log.items():
                merged.setdefault(step, {}).update(values)
    assert merged, f"{paths} are empty"
    return paths, merged


def _training_steps(log: dict[int, dict[str, float]]) -> list[int]:
    return sorted(s for s, values in log.items() if any(not k.startswith("val-") for k in values))


@pytest.fixture(scope="module")
def logs(e2e_runs):
    return {algorithm: _run_log(Path(e2e_runs[algorithm]), algorithm) for algorithm in ("papo", "grpo")}


def test_real_runs_have_what_the_comparison_needs(logs):
    _, papo = logs["papo"]
    _, grpo = logs["grpo"]
    for log in (papo, grpo):
        assert any("critic/score/mean" in v for v in log.values())
        assert any("actor/entropy" in v for v in log.values())
    assert any("papo/tilt" in v and "papo/expand_weight" in v for v in papo.values())
    assert not [k for v in grpo.values() for k in v if k.startswith("papo/")]  # GRPO logs no papo/* metric


def test_papo_compare_cli_on_real_cpu_runs(e2e_runs, logs, tmp_path):
    run_dirs = sorted({str(Path(e2e_runs["papo"])), str(Path(e2e_runs["grpo"]))})
    proc = subprocess.run([sys.executable, "-m", "papo_verl.compare", *run_dirs, "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    width, height = png_size(out / "compare.png")
    assert width > 1000 and height > 300 and (out / "compare.png").stat().st_size > 30_000
    summary = (out / "summary.md").read_text()
    assert proc.stdout.strip() == summary.strip()

    horizon = min(_training_steps(log)[-1] for _, log in logs.values())
    assert f"Steps ≤ **{horizon}** (common horizon)" in summary
    table = pd.read_csv(out / "aggregate.csv")
    assert set(table["algorithm"]) == {"papo", "grpo"}
    for algorithm, (paths, log) in logs.items():
        # the runs table: algorithm from the resolved config, the log, its steps
        steps = sorted(log)
        segments = f" (+{len(paths) - 1} earlier segment(s))" if len(paths) > 1 else ""
        assert f"| file: {paths[-1].name}{segments} | {len(steps)} ({steps[0]}..{steps[-1]}) |" in summary
        mine = table[table["algorithm"] == algorithm]
        papo_metrics = {m for m in mine["metric"] if m.startswith("papo/")}
        assert bool(papo_metrics) == (algorithm == "papo")
        # every logged value of a single run is its own mean, at the steps the run logged (≤ horizon)
        for metric in ("critic/score/mean", "actor/entropy", "response_length/mean", "papo/tilt"):
            expected = {s: v[metric] for s, v in log.items() if metric in v and s <= horizon}
            rows = mine[mine["metric"] == metric].set_index("step")
            if metric.startswith("papo/") and algorithm == "grpo":
                assert rows.empty
                continue
            assert sorted(rows.index) == sorted(expected)
            for step, value in expected.items():
                assert rows.loc[step, "mean"] == pytest.approx(value, rel=1e-12, abs=1e-15)
                assert rows.loc[step, "n"] == 1 and math.isnan(rows.loc[step, "std"])
            # the summary table row: n = 1, final = the last logged value up to the horizon, no interval
            last = max(expected)
            assert (f"| `{metric}` | final | {algorithm} | 1 | {format_mean_std(expected[last], math.nan, 1)} | — "
                    f"| {last} |" in summary)
    assert "| `papo/tilt` | final | grpo |" not in summary
    assert "| `algorithm.adv_estimator` | algorithm |" in summary


def test_papo_panels_only_for_papo_on_real_cpu_runs(e2e_runs, logs, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompareWarning)
        runs = load_runs(sorted({Path(e2e_runs["papo"]), Path(e2e_runs["grpo"])}))
    assert sorted((r.label, r.label_source) for r in runs) == [("grpo", "resolved config"), ("papo", "resolved config")]
    for run in runs:
        paths, log = logs[run.label]
        assert run.log_paths == paths
        assert run.steps == sorted(log)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompareWarning)  # e.g. different horizons if the PAPO run was resumed
        comparison = compare(runs)
    result = plot_runs(comparison, tmp_path / "cmp.png", panel_dir=tmp_path / "panels")
    assert {"train_score", "entropy", "response_length"} <= set(result.panels)
    for key in ("train_score", "entropy", "response_length"):
        assert set(result.panels[key]) == {"papo", "grpo"}, key
    present = PAPO_PANELS & set(result.panels)
    assert {"papo_tilt", "papo_weights", "papo_token_share"} <= present
    for key in present:
        assert set(result.panels[key]) == {"papo"}, key
    assert result.panels["papo_weights"]["papo"] == ["papo/expand_weight", "papo/contract_weight"]
    assert all(png_size(p)[0] > 500 for p in result.files)


def test_multiseed_launcher_compares_the_logs_it_finds(e2e_runs, tmp_path):
    """examples/cpu_multiseed.sh's comparison step (COMPARE_ONLY=1 skips the nine demo runs) on real logs."""
    out = tmp_path / "multiseed"
    for algorithm in ("papo", "grpo"):
        source = Path(e2e_runs[algorithm])
        target = out / "logs" / source.name
        target.mkdir(parents=True, exist_ok=True)
        for path in [*source.glob("*.jsonl"), *source.glob("*.config.yaml")]:
            shutil.copy2(path, target / path.name)
    proc = subprocess.run(["bash", str(REPO / "examples" / "cpu_multiseed.sh"), str(out)], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO), "PYTHON": sys.executable, "COMPARE_ONLY": "1"})
    assert proc.returncode == 0, proc.stderr
    assert png_size(out / "compare" / "compare.png")[0] > 1000
    assert (out / "compare" / "compare.svg").is_file()
    summary = (out / "compare" / "summary.md").read_text()
    assert "over its last 5 logged steps" in summary and "| `algorithm.adv_estimator` | algorithm |" in summary
    assert f"comparison: {out}/compare/compare.png" in proc.stdout
