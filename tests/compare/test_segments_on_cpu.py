"""A run's ``-2``, ``-3`` … log segments (papo_verl.main's reserve_run_files) merge by step, later
segments winning."""

from __future__ import annotations

import warnings

import pytest

from papo_verl.compare import CompareWarning, load_runs
from papo_verl.compare.logs import discover, merge_segments
from tests.compare.helpers import run_config, synthetic_metrics, write_file_run


def test_merge_rule_later_segment_supersedes_from_its_first_step():
    first = {1: {"a": 1.0, "v": 9.0}, 2: {"a": 2.0}, 3: {"a": 3.0}, 4: {"a": 4.0}}
    # resumed from the step-2 checkpoint: validation at step 2, then steps 3.. again
    second = {2: {"v": 20.0}, 3: {"a": 30.0}}
    merged, notes = merge_segments([first, {}, second])
    assert merged == {1: {"a": 1.0, "v": 9.0}, 2: {"a": 2.0, "v": 20.0}, 3: {"a": 30.0}}
    assert notes == ["log segment 3 restarts at step 2: it supersedes the earlier segment(s)' steps 3..4 (2 step(s))"]


def test_merge_rule_a_repeated_run_from_step_one_replaces_the_earlier_one():
    merged, notes = merge_segments([{1: {"a": 1.0}, 2: {"a": 2.0}}, {1: {"a": 10.0}}])
    assert merged == {1: {"a": 10.0}}
    assert "steps 2..2" in notes[0]


def test_resumed_run_segments_written_by_the_real_pipeline_merge(tmp_path):
    config = run_config("papo", 1, "papo-seed1", project="proj")
    first = synthetic_metrics("papo", 1, range(1, 8))
    second = synthetic_metrics("papo", 11, range(5, 11))  # resumed from the step-4 checkpoint
    third = synthetic_metrics("papo", 21, range(9, 13))   # resumed again from step 8
    paths = [write_file_run(tmp_path, config, m) for m in (first, second, third)]
    assert [p.name for p in paths] == ["papo-seed1.jsonl", "papo-seed1-2.jsonl", "papo-seed1-3.jsonl"]
    assert all(p.with_name(p.name.replace(".jsonl", ".config.yaml")).is_file() for p in paths)

    (source,) = discover(tmp_path)
    assert [p.name for p in source.segments] == ["papo-seed1.jsonl", "papo-seed1-2.jsonl", "papo-seed1-3.jsonl"]
    with pytest.warns(CompareWarning) as record:
        (run,) = load_runs([paths[1]])  # any segment names the whole run
    messages = [str(w.message) for w in record]
    assert any("log segment 2 restarts at step 5: it supersedes the earlier segment(s)' steps 6..7" in m for m in messages)
    assert any("log segment 3 restarts at step 9: it supersedes the earlier segment(s)' steps 10..10" in m for m in messages)
    assert run.name == "papo-seed1" and run.steps == list(range(1, 13))
    assert run.log_paths == tuple(paths)
    assert run.config_path == paths[2].with_name("papo-seed1-3.config.yaml")
    expected = {s: first[s]["papo/tilt"] for s in range(1, 5)}
    expected.update({s: second[s]["papo/tilt"] for s in range(5, 9)})
    expected.update({s: third[s]["papo/tilt"] for s in range(9, 13)})
    assert run.series("papo/tilt").to_dict() == expected


def test_empty_later_segment_is_skipped(tmp_path):
    config = run_config("grpo", 2, "grpo-seed2")
    metrics = synthetic_metrics("grpo", 2, range(1, 4))
    write_file_run(tmp_path, config, metrics)
    write_file_run(tmp_path, config, {})  # restarted, crashed before its first step
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompareWarning)
        (run,) = load_runs([tmp_path])
    assert run.steps == [1, 2, 3]
    assert len(run.log_paths) == 2


def test_an_experiment_named_like_a_segment_is_its_own_run(tmp_path):
    """``run-2`` is not a segment of ``run`` when its config names another experiment."""
    write_file_run(tmp_path, run_config("grpo", 1, "run", project="p"), synthetic_metrics("grpo", 1, range(1, 4)))
    write_file_run(tmp_path, run_config("papo", 1, "run-2", project="p"), synthetic_metrics("papo", 1, range(1, 4)))
    runs = load_runs([tmp_path], label_from="config")
    assert sorted((r.name, r.label, len(r.log_paths)) for r in runs) == [("run", "grpo", 1), ("run-2", "papo", 1)]
