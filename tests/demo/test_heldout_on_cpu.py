"""Held-out evaluation from verl's validation dumps: pass@k, distinct correct answers, their errors."""

import json
import math
from itertools import combinations

import numpy as np
import pytest

from papo_verl.compare.logs import read_file_logger_records
from papo_verl.demo.heldout import heldout_metrics, heldout_series, main, write_heldout_log

# 2 2 6 3 -> 16: several different correct answers
GTS = json.dumps({"numbers": [2, 2, 6, 3], "target": 16})
ANSWERS = {
    "a": "6 * 3 = 18\n18 - 2 = 16",            # (6*3) - 2
    "a_swapped": "3 * 6 = 18\n18 - 2 = 16",    # the same answer up to commutativity
    "b": "2 * 2 = 4\n6 + 4 = 10\n10 + 3 = 13",  # wrong: 13
    "c": "6 + 2 = 8\n2 * 8 = 16",              # 2 * (6 + 2)
    "junk": "make it sixteen",
}


def record(gts, key, correct):
    return {"input": "Make ...", "output": ANSWERS[key] + "<|im_end|>", "gts": gts, "score": float(correct),
            "acc": float(correct), "step": 5}


def test_pass_at_k_and_distinct_answers_match_a_brute_force():
    other = json.dumps({"numbers": [4, 5, 3, 2], "target": 17})
    samples = {GTS: ["a", "a_swapped", "b", "c"], other: ["junk", "junk", "junk", "junk"]}
    correct = {"a": True, "a_swapped": True, "b": False, "c": True, "junk": False}
    records = [record(g, k, correct[k]) for g, keys in samples.items() for k in keys]
    m = heldout_metrics(records, ks=(1, 2, 4, 16))
    assert m["eval/n_problems"] == 2 and m["eval/n_samples"] == 4 and "eval/pass@16" not in m
    for k in (1, 2, 4):  # brute force: the share of k-subsets with a correct sample
        per_problem = []
        for keys in samples.values():
            subsets = list(combinations(keys, k))
            per_problem.append(np.mean([any(correct[x] for x in s) for s in subsets]))
        assert m[f"eval/pass@{k}"] == pytest.approx(np.mean(per_problem))
        assert m[f"eval/pass@{k}_se"] == pytest.approx(np.std(per_problem, ddof=1) / math.sqrt(2))
    # "a" and "a_swapped" are one answer: 2 distinct correct answers, 0 for the unsolved problem
    assert m["eval/distinct_correct"] == 1.0 and m["eval/distinct_correct_se"] == pytest.approx(1.0)


def test_dumps_become_a_file_logger_series(tmp_path, capsys):
    dumps = tmp_path / "validation"
    dumps.mkdir()
    for step, keys in ((0, ["b", "b"]), (10, ["a", "c"])):
        with open(dumps / f"{step}.jsonl", "w") as fh:
            for key in keys:
                fh.write(json.dumps(record(GTS, key, key != "b")) + "\n")
    (dumps / "notes.txt").write_text("ignored")
    series = heldout_series(dumps, ks=(1, 2))
    assert list(series) == [0, 10]
    assert series[0]["eval/pass@1"] == 0.0 and series[10]["eval/distinct_correct"] == 2.0
    out = tmp_path / "papo-seed0.eval.jsonl"
    assert main([str(dumps), "-o", str(out)]) == 0
    records, notes = read_file_logger_records(out)  # papo-compare's reader reads back exactly the series
    written = heldout_series(dumps)  # main's ks: the default HELD_OUT_KS
    assert [step for step, _ in records] == list(written) == [0, 10] and not notes
    for step, data in records:
        assert data.keys() == written[step].keys()
        assert all(v == written[step][k] or (math.isnan(v) and math.isnan(written[step][k])) for k, v in data.items())
    assert set(json.loads(out.read_text().splitlines()[0])) == {"step", "data"}  # verl's file-logger record
    assert main([str(dumps), "-o", str(out)]) == 2  # never overwritten
    assert "nothing is overwritten" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="validation_data_dir"):
        write_heldout_log(tmp_path / "missing", tmp_path / "x.jsonl")


def test_uneven_sample_counts_are_an_error():
    records = [record(GTS, "a", True), record(GTS, "b", False), record(json.dumps({"numbers": [1, 2], "target": 3}),
                                                                        "junk", False)]
    with pytest.raises(ValueError, match="different numbers of samples"):
        heldout_metrics(records)
