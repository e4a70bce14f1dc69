"""Held-out evaluation of a training run from verl's own validation dumps.

verl's validation generates ``val_kwargs.n`` answers to every held-out problem and, with
``trainer.validation_data_dir`` set, writes them as ``<dir>/<step>.jsonl`` (``input``, ``output``,
``gts``, ``score`` and the reward's extra values such as ``acc``). This module scores those samples
per problem and step:

* ``eval/pass@k`` for k ∈ {1, 4, 16} (k ≤ n): the unbiased estimator of Chen et al. (2021) per problem,
  averaged over problems, with ``eval/pass@k_se``, its standard error over problems;
* ``eval/distinct_correct``: the number of genuinely different correct answers among the n samples
  (distinct up to commutativity/associativity, :func:`papo_verl.demo.reward.answer_key`), averaged over
  problems, with its standard error: where preserved entropy should pay;
* ``eval/n_problems`` and ``eval/n_samples``: the size the errors refer to.

``python -m papo_verl.demo.heldout VALIDATION_DIR -o RUN.eval.jsonl`` writes them in verl's file-logger
format (``{"step": s, "data": {...}}`` per line); papo-compare merges ``<experiment>.eval.jsonl`` into
the run whose log ``<experiment>.jsonl`` lies beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from papo_verl.demo.evaluate import pass_at_k
from papo_verl.demo.reward import ALL_OPS, _TRAILING_SPECIAL, check_solution, parse_ground_truth

__all__ = ["HELD_OUT_KS", "heldout_metrics", "heldout_series", "main", "write_heldout_log"]

HELD_OUT_KS = (1, 4, 16)
_STEP_FILE = re.compile(r"^(\d+)\.jsonl$")


def heldout_metrics(records: Iterable[dict], ks: Sequence[int] = HELD_OUT_KS) -> dict[str, float]:
    """``eval/*`` metrics of one validation dump (its records: ``gts``, ``output`` and ``acc`` or ``score``).

    Every problem must have the same number of samples n (verl's ``val_kwargs.n``); k > n is skipped.
    """
    samples: dict[str, list[str]] = defaultdict(list)
    correct: dict[str, list[bool]] = defaultdict(list)
    for record in records:
        key = record["gts"] if isinstance(record["gts"], str) else json.dumps(record["gts"], sort_keys=True)
        samples[key].append(record["output"] if isinstance(record["output"], str) else "")
        value = record.get("acc", record.get("score"))
        correct[key].append(value is not None and float(value) >= 1.0)
    if not samples:
        raise ValueError("heldout_metrics: the validation dump has no records")
    sizes = {len(v) for v in samples.values()}
    if len(sizes) != 1:
        raise ValueError(f"heldout_metrics: problems have different numbers of samples {sorted(sizes)}; "
                         "verl's validation gives every problem val_kwargs.n samples")
    (n,) = sizes
    per_k = {k: [] for k in ks if k <= n}
    distinct = []
    for key, texts in samples.items():
        numbers, target = parse_ground_truth(key)
        c = sum(correct[key])
        for k in per_k:
            per_k[k].append(pass_at_k(n, c, k))
        answers = set()
        for text, ok in zip(texts, correct[key]):
            if ok:
                verdict = check_solution(_TRAILING_SPECIAL.sub("", text), numbers, target, ALL_OPS)
                answers.add(verdict.key if verdict.correct else text)
        distinct.append(len(answers))
    problems = len(samples)
    out: dict[str, float] = {"eval/n_problems": float(problems), "eval/n_samples": float(n)}

    def mean_se(values: list) -> tuple[float, float]:
        array = np.asarray(values, dtype=float)
        se = float(array.std(ddof=1) / math.sqrt(len(array))) if len(array) > 1 else math.nan
        return float(array.mean()), se

    for k, values in per_k.items():
        out[f"eval/pass@{k}"], out[f"eval/pass@{k}_se"] = mean_se(values)
    out["eval/distinct_correct"], out["eval/distinct_correct_se"] = mean_se(distinct)
    return out


def heldout_series(validation_dir: os.PathLike, ks: Sequence[int] = HELD_OUT_KS) -> dict[int, dict[str, float]]:
    """``{step: eval metrics}`` for every ``<step>.jsonl`` dump in ``validation_dir``."""
    directory = Path(validation_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"no validation dumps: {directory} is not a directory (set "
                                "trainer.validation_data_dir for the run)")
    out = {}
    for path in sorted(directory.iterdir(), key=lambda p: p.name):
        match = _STEP_FILE.match(path.name)
        if not match:
            continue
        with open(path, encoding="utf-8") as fh:
            out[int(match[1])] = heldout_metrics((json.loads(line) for line in fh if line.strip()), ks)
    if not out:
        raise FileNotFoundError(f"no validation dumps (<step>.jsonl) in {directory}")
    return dict(sorted(out.items()))


def write_heldout_log(validation_dir: os.PathLike, out_path: os.PathLike, ks: Sequence[int] = HELD_OUT_KS) -> Path:
    """Write :func:`heldout_series` as a file-logger JSONL at ``out_path`` (never over an existing file)."""
    out_path = Path(out_path)
    series = heldout_series(validation_dir, ks)
    if out_path.exists():
        raise FileExistsError(f"{out_path} exists; nothing is overwritten (remove it to recompute)")
    tmp = out_path.with_name(out_path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for step, metrics in series.items():
            fh.write(json.dumps({"step": step, "data": metrics}) + "\n")
    os.replace(tmp, out_path)
    return out_path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m papo_verl.demo.heldout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("validation_dir", help="a run's trainer.validation_data_dir (<step>.jsonl dumps)")
    parser.add_argument("-o", "--out", required=True, help="output JSONL, e.g. <log dir>/<experiment>.eval.jsonl")
    args = parser.parse_args(argv)
    try:
        path = write_heldout_log(args.validation_dir, args.out)
    except (OSError, ValueError) as err:
        print(f"papo_verl.demo.heldout: error: {err}", file=sys.stderr)
        return 2
    for step, metrics in heldout_series(args.validation_dir).items():
        print(step, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
