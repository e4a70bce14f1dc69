"""``python -m papo_verl.compare``: outputs, exit status and every error message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from papo_verl.compare.cli import main
from tests.compare.helpers import (
    REPO,
    png_size,
    run_config,
    synthetic_metrics,
    write_file_run,
    write_plain_file_log,
    write_tensorboard_run,
)


@pytest.fixture(scope="module")
def two_algorithms(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for algorithm in ("papo", "grpo"):
        for seed in (1, 2):
            write_file_run(root / algorithm, run_config(algorithm, seed, f"{algorithm}-seed{seed}"),
                           synthetic_metrics(algorithm, seed, range(1, 6)))
    return root


def _module(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "papo_verl.compare", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.slow  # renders figures / runs the CLI (seconds each)
def test_python_dash_m_writes_every_output(two_algorithms, tmp_path):
    proc = _module(str(two_algorithms / "papo"), str(two_algorithms / "grpo"), "--svg", "-o", "report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "report"
    assert png_size(out / "compare.png")[0] > 1000
    assert (out / "compare.svg").read_text().lstrip().startswith("<?xml")
    panels = sorted(p.stem for p in (out / "panels").glob("*.png"))
    assert "papo_tilt" in panels and "entropy" in panels and "train_score" in panels
    assert sorted(p.stem for p in (out / "panels").glob("*.svg")) == panels
    summary = (out / "summary.md").read_text()
    assert proc.stdout.strip() == summary.strip()
    assert "| papo | 1 (data.seed) | papo-seed1 | file: papo-seed1.jsonl | 5 (1..5) |" in summary
    assert "| grpo | 2 (data.seed) | grpo-seed2 | file: grpo-seed2.jsonl | 5 (1..5) |" in summary
    assert "| `papo/tilt` | final | papo | 2 |" in summary and "| `papo/tilt` | final | grpo |" not in summary
    assert "| `algorithm.adv_estimator` | algorithm | papo | grpo |" in summary
    assert f"papo-compare: wrote {Path('report') / 'summary.md'}, {Path('report') / 'aggregate.csv'}" in proc.stderr
    assert "warning" not in proc.stderr  # one base config, same horizons, seeds from the configs


@pytest.mark.slow  # renders figures / runs the CLI (seconds each)
def test_help_lists_the_options(tmp_path):
    proc = _module("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for option in ("--out", "--svg", "--label-from", "--label-regex", "--max-step", "--final-window", "--metric",
                   "--skip-invalid"):
        assert option in proc.stdout


@pytest.mark.slow  # renders figures / runs the CLI (seconds each)
def test_extra_metric_gets_a_panel_and_a_row(two_algorithms, tmp_path, capsys):
    assert main([str(two_algorithms), "-o", str(tmp_path), "--metric", "critic/rewards/mean"]) == 0
    assert (tmp_path / "panels" / "critic_rewards_mean.png").is_file()
    assert "| `critic/rewards/mean` | final | papo | 2 |" in capsys.readouterr().out


@pytest.mark.slow  # renders figures / runs the CLI (seconds each)
def test_extra_metric_no_run_logged_is_warned_with_the_close_names(two_algorithms, tmp_path, capsys):
    assert main([str(two_algorithms), "-o", str(tmp_path), "--metric", "critic/reward/mean"]) == 0
    captured = capsys.readouterr()
    warning = ("metric critic/reward/mean was asked for but no run logged it: it is not plotted or tabulated; "
               "did you mean critic/rewards/mean")
    assert f"papo-compare: warning: {warning}" in captured.err
    assert warning in captured.out  # and in summary.md's warnings
    assert not (tmp_path / "panels" / "critic_reward_mean.png").exists()


# ---- errors -----------------------------------------------------------------------------------------

def _error(args, capsys) -> str:
    assert main([str(a) for a in args]) == 2
    *warning_lines, last = capsys.readouterr().err.strip().split("\n")
    assert all(w.startswith("papo-compare: warning: ") for w in warning_lines), warning_lines
    assert last.startswith("papo-compare: error: "), last
    return last.removeprefix("papo-compare: error: ")


def test_missing_path(tmp_path, capsys):
    assert _error([tmp_path / "nope"], capsys) == f"no such file or directory: {tmp_path / 'nope'}"


def test_directory_without_runs(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("nothing here")
    assert _error([tmp_path, "-o", tmp_path / "out"], capsys).startswith(f"no runs found under {tmp_path} (looked for")


def test_config_without_its_metrics_log(tmp_path, capsys):
    write_file_run(tmp_path, run_config("papo", 1, "papo-seed1", project="p"), synthetic_metrics("papo", 1, range(1, 3)))
    (tmp_path / "p" / "papo-seed1.jsonl").unlink()
    config = tmp_path / "p" / "papo-seed1.config.yaml"
    expected = f"run without a metrics log: {config} has no papo-seed1.jsonl beside it"
    assert _error([tmp_path], capsys).startswith(expected)
    assert _error([config], capsys).startswith(expected)


def test_run_that_logged_no_step(tmp_path, capsys):
    write_file_run(tmp_path, run_config("papo", 1, "papo-seed1", project="p"), {})
    message = _error([tmp_path], capsys)
    assert message.startswith(f"run papo-seed1: its metrics log has no logged step ({tmp_path / 'p' / 'papo-seed1.jsonl'})")


@pytest.mark.parametrize("content, expected", [
    ('{"step": 1, "data": {"a": 1}}\n{"step": 2, "data": {"a": \n{"step": 3, "data": {"a": 3}}\n',
     "line 2: not valid JSON"),
    ('{"step": 1, "data": {"a": 1}}\n["not", "a", "record"]\n', "line 2: not a verl file-logger record"),
    ('{"step": "x", "data": {"a": 1}}\n', 'line 1: step \'x\' is not an integer'),
])
def test_damaged_file_logger_lines(tmp_path, capsys, content, expected):
    log = tmp_path / "run.jsonl"
    log.write_text(content)
    assert _error([log], capsys).startswith(f"{log} {expected}")


def test_undecodable_file(tmp_path, capsys):
    log = tmp_path / "run.jsonl"
    log.write_bytes(b'{"step": 1, "data": {"a": 1}}\n\xff\xfe\x00garbage\n')
    assert _error([log], capsys).startswith(f"cannot read {log}: 'utf-8' codec can't decode byte 0xff")


def test_unparsable_config(tmp_path, capsys):
    log = write_file_run(tmp_path, run_config("grpo", 1, "grpo-seed1"), synthetic_metrics("grpo", 1, range(1, 3)))
    config = log.with_name("grpo-seed1.config.yaml")
    config.write_text("trainer: [unclosed\n")
    assert _error([tmp_path], capsys).startswith(f"cannot parse the resolved config {config}:")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without read permission")
def test_unreadable_file(tmp_path, capsys):
    log = write_plain_file_log(tmp_path / "run.jsonl", synthetic_metrics("grpo", 1, range(1, 3)))
    log.chmod(0)
    try:
        assert _error([log], capsys) == f"cannot read {log}: Permission denied"
    finally:
        log.chmod(0o644)


def test_not_a_tensorboard_event_file(tmp_path, capsys):
    bad = tmp_path / "tb" / "events.out.tfevents.1700000000.host.1.0"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not a tfrecord " * 20)
    assert _error([tmp_path], capsys) == f"{bad} is not a readable tensorboard event file (no event could be decoded)"


def test_unsupported_file(tmp_path, capsys):
    other = tmp_path / "metrics.csv"
    other.write_text("step,a\n1,2\n")
    assert _error([other], capsys).startswith(f"{other}: not a metrics log papo-compare can read")


def test_runs_without_a_common_metric(tmp_path, capsys):
    write_plain_file_log(tmp_path / "a-seed1.jsonl", {1: {"x/one": 1.0}, 2: {"x/one": 2.0}})
    write_plain_file_log(tmp_path / "b-seed1.jsonl", {1: {"y/two": 1.0}, 2: {"y/two": 2.0}})
    assert _error([tmp_path], capsys) == "the runs have no metric in common (a-seed1: x/one; b-seed1: y/two)"


def test_runs_without_a_common_step(tmp_path, capsys):
    write_plain_file_log(tmp_path / "a-seed1.jsonl", {s: {"critic/score/mean": 0.1 * s} for s in (1, 2, 3)})
    write_plain_file_log(tmp_path / "b-seed1.jsonl", {s: {"critic/score/mean": 0.1 * s} for s in (10, 11)})
    assert _error([tmp_path], capsys) == "the runs have no step in common (a-seed1: steps 1..3, b-seed1: steps 10..11)"


@pytest.mark.slow  # renders figures / runs the CLI (seconds each)
def test_skip_invalid_keeps_the_good_runs(tmp_path, capsys):
    write_file_run(tmp_path, run_config("papo", 1, "papo-seed1", project="p"), synthetic_metrics("papo", 1, range(1, 4)))
    broken = tmp_path / "p" / "broken.jsonl"
    broken.write_text('{"step": 1, "data": {"a": 1}}\n{oops}\n{"step": 2, "data": {"a": 1}}\n')
    assert main([str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    capsys.readouterr()
    assert main([str(tmp_path), "-o", str(tmp_path / "out"), "--skip-invalid"]) == 0
    captured = capsys.readouterr()
    assert f"papo-compare: warning: skipped a run: {broken} line 2: not valid JSON" in captured.err
    assert "| papo | 1 (data.seed) | papo-seed1 |" in captured.out
    assert "skipped a run" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.slow  # renders figures / runs the CLI (seconds each)
def test_tensorboard_and_file_runs_compare_together(tmp_path, capsys):
    write_tensorboard_run(tmp_path / "tensorboard_log" / "p" / "papo-seed1", "p", "papo-seed1",
                          synthetic_metrics("papo", 1, range(1, 5)))
    write_file_run(tmp_path / "files", run_config("grpo", 2, "grpo-seed2", project="p"),
                   synthetic_metrics("grpo", 2, range(1, 7)))
    assert main([str(tmp_path), "-o", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "papo-compare: warning: run papo-seed1: no resolved config" in captured.err
    assert "horizons differ between algorithms (grpo ends at step 6, papo ends at step 4)" in captured.err
    assert "| papo | 1 (experiment name) | papo-seed1 | tensorboard: " in captured.out
    assert "| grpo | 2 (data.seed) | grpo-seed2 | file: grpo-seed2.jsonl" in captured.out
