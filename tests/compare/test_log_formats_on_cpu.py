"""papo-compare reads the three log formats as verl's real writers produce them.

verl's ``Tracking`` with the ``file`` backend (FileLogger, orjson), the ``tensorboard`` backend
(torch's SummaryWriter) and the ``wandb`` backend (``wandb.init`` in offline mode) write a few steps;
the values read back must be the values logged (float32 for tensorboard), NaN/None must be "not
logged", and the config, name and seed must come from the right place.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from papo_verl.compare import CompareWarning, load_runs
from papo_verl.compare.logs import CompareError, discover, read_file_logger_records, read_file_logger_segment
from tests.compare.helpers import (
    run_config,
    synthetic_metrics,
    write_file_run,
    write_tensorboard_run,
    write_wandb_run,
)

STEPS = range(1, 6)


def _expected(metrics: dict[int, dict[str, float]], metric: str) -> dict[int, float]:
    return {s: v[metric] for s, v in metrics.items() if metric in v and not math.isnan(v[metric])}


def _load_one(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompareWarning)
        (run,) = load_runs([path], **kwargs)
    return run


def test_file_logger_values_config_and_seed(tmp_path):
    metrics = synthetic_metrics("papo", 3, STEPS, nan_step=4)
    log = write_file_run(tmp_path, run_config("papo", 3, "papo-seed3", project="proj"), metrics)
    assert log == tmp_path / "proj" / "papo-seed3.jsonl"
    assert log.with_name("papo-seed3.config.yaml").is_file()

    run = _load_one(tmp_path)
    assert (run.source, run.name, run.project, run.label, run.seed, run.seed_source) == \
        ("file", "papo-seed3", "proj", "papo", 3, "data.seed")
    assert run.config_path == log.with_name("papo-seed3.config.yaml")
    assert run.config["algorithm"]["adv_estimator"] == "papo"
    assert run.steps == list(STEPS)
    for metric in ("critic/score/mean", "papo/tilt", "papo/dH_predicted", "val-core/gsm8k/acc/mean@1"):
        assert run.series(metric).to_dict() == _expected(metrics, metric)  # exact: orjson round-trips floats
    # NaN is written as null by orjson and read as "not logged at that step"
    assert sorted(run.series("actor/entropy").index) == [1, 2, 3, 5]
    raw = [json.loads(line) for line in log.read_text().splitlines()]
    assert raw[3]["step"] == 4 and raw[3]["data"]["actor/entropy"] is None


def test_file_logger_segment_reader_merges_same_step_and_skips_non_numbers(tmp_path):
    log = tmp_path / "x.jsonl"
    log.write_text('{"step": 1, "data": {"a": 1.5, "s": "text", "l": [1, 2], "b": true}}\n'
                   '{"step": 1, "data": {"c": 2}}\n'
                   '{"step": 2, "data": {"a": null}}\n'
                   '{"step": 3, "data": {"a": 3')  # the run was killed while writing this line
    segment, notes = read_file_logger_segment(log)
    assert sorted(segment) == [1, 2]
    assert segment[1] == {"a": 1.5, "b": 1.0, "c": 2.0}
    assert list(segment[2]) == ["a"] and math.isnan(segment[2]["a"])
    assert notes == ["x.jsonl: skipped the incomplete last line 4 (the run stopped while writing it)"]
    # the records underneath: every complete line in order, values as written
    records, record_notes = read_file_logger_records(log)
    assert records == [(1, {"a": 1.5, "s": "text", "l": [1, 2], "b": True}), (1, {"c": 2}), (2, {"a": None})]
    assert record_notes == notes


def test_tensorboard_values_are_the_logged_float32(tmp_path):
    metrics = synthetic_metrics("grpo", 2, STEPS, nan_step=2)
    run_dir = write_tensorboard_run(tmp_path / "tensorboard_log" / "proj" / "grpo-seed2", "proj", "grpo-seed2", metrics)
    assert list(run_dir.glob("events.out.tfevents.*"))

    run = _load_one(tmp_path)
    assert (run.source, run.name, run.project, run.label, run.seed, run.seed_source, run.config) == \
        ("tensorboard", "grpo-seed2", "proj", "grpo", 2, "experiment name", None)
    assert run.steps == list(STEPS)
    for metric in ("critic/score/mean", "response_length/mean", "val-core/gsm8k/acc/mean@1"):
        expected = {s: float(np.float32(v)) for s, v in _expected(metrics, metric).items()}
        assert run.series(metric).to_dict() == expected
    assert sorted(run.series("actor/entropy").index) == [1, 3, 4, 5]  # NaN logged at step 2


def test_tensorboard_run_uses_a_config_beside_its_directory(tmp_path):
    config = run_config("dapo", 7, "dapo-x", project="proj")
    run_dir = write_tensorboard_run(tmp_path / "proj" / "dapo-x", "proj", "dapo-x", synthetic_metrics("grpo", 7, STEPS))
    from omegaconf import OmegaConf

    (tmp_path / "proj" / "dapo-x.config.yaml").write_text(OmegaConf.to_yaml(config, resolve=True))
    run = _load_one(run_dir)
    assert (run.label, run.seed, run.seed_source) == ("dapo", 7, "data.seed")


@pytest.mark.slow  # wandb starts its service process to write the offline run
def test_wandb_offline_logs_are_not_read_and_the_fix_is_named(tmp_path):
    """wandb has no stable reader for its .wandb store: papo-compare says to log with the file logger too."""
    run_dir = write_wandb_run(tmp_path / "wb", run_config("papo", 5, "papo-wb", project="proj"),
                              synthetic_metrics("papo", 5, STEPS))
    log = next(run_dir.glob("run-*.wandb"))
    for path in (tmp_path, log):
        with pytest.raises(CompareError, match=r"does not read wandb's offline logs .*trainer\.logger=\[console,file,"):
            discover(path)


@pytest.mark.slow  # wandb starts its service process to write the offline run
def test_one_run_logged_by_three_backends_counts_once_from_the_file_log(tmp_path):
    config = run_config("papo", 1, "papo-all", project="proj")
    metrics = synthetic_metrics("papo", 1, STEPS)
    write_file_run(tmp_path / "files", config, metrics)
    write_tensorboard_run(tmp_path / "tensorboard_log" / "proj" / "papo-all", "proj", "papo-all", metrics)
    write_wandb_run(tmp_path / "wb", config, metrics)  # beside the file log: not read, no error
    assert {s.kind for s in discover(tmp_path)} == {"file", "tensorboard"}
    with pytest.warns(CompareWarning, match=r"run papo-all \(proj\) was found as a file log and as a tensorboard log"):
        runs = load_runs([tmp_path])
    assert [(r.source, r.name) for r in runs] == [("file", "papo-all")]


def test_directory_search_ignores_other_jsonl_files(tmp_path):
    """Rollout dumps (trainer.rollout_data_dir) are *.jsonl too, but not metrics logs."""
    write_file_run(tmp_path, run_config("grpo", 1, "grpo-seed1"), synthetic_metrics("grpo", 1, STEPS))
    dumps = tmp_path / "rollouts"
    dumps.mkdir()
    (dumps / "1.jsonl").write_text(json.dumps({"input": "q", "output": "a", "score": 1.0, "step": 1}) + "\n")
    runs = load_runs([tmp_path])
    assert [r.name for r in runs] == ["grpo-seed1"]
