"""GSM8K -> verl RL parquet (``train.parquet``, ``test.parquet``).

Source: ``openai/gsm8k`` (config ``main``), columns ``question`` and ``answer``; the answer ends with
``#### <number>``. As verl's own example, the prompt asks for the final answer after ``####`` and the
ground truth is that number without thousands separators. ``data_source="openai/gsm8k"`` routes the
reward to ``verl.utils.reward_score.gsm8k`` (strict ``#### <n>`` match, score 1.0 / 0.0).

    python examples/data_preprocess/gsm8k.py --local_dir ~/data/gsm8k
    python examples/data_preprocess/gsm8k.py --input train=train.jsonl --input test=test.parquet
"""

from __future__ import annotations

import re
import os
import sys
from typing import Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from preprocess_utils import (  # noqa: E402
    convert_splits, find_column, make_record, report_skipped, run_cli,
)

DATA_SOURCE = "openai/gsm8k"
SPLITS = ("train", "test")
INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
_FINAL = re.compile(r"#### (\-?[0-9\.\,]+)")


def extract_solution(answer: str) -> str | None:
    """The number after ``####`` with commas removed (verl's rule), or None."""
    match = _FINAL.search(answer)
    return match.group(1).replace(",", "") if match else None


def convert(rows: list[dict], split: str, source: str) -> list[dict]:
    q_col = find_column(rows, ("question",), "question", source)
    a_col = find_column(rows, ("answer",), "answer (worked solution ending in '#### <n>')", source)
    records, skipped = [], []
    for idx, row in enumerate(rows):
        question, answer = str(row[q_col]), str(row[a_col])
        ground_truth = extract_solution(answer)
        if ground_truth is None:
            skipped.append(idx)
            continue
        records.append(make_record(data_source=DATA_SOURCE, content=f"{question} {INSTRUCTION}",
                                   ground_truth=ground_truth, split=split, index=idx, question=question,
                                   solution=answer))
    report_skipped(skipped, len(rows), source, f"a '#### <number>' final answer in {a_col!r}")
    return records


def main(argv: Sequence[str] | None = None) -> dict[str, str]:
    return convert_splits(argv, description=__doc__, default_dir="~/data/gsm8k", hf_id=DATA_SOURCE, hf_config="main",
                          splits=SPLITS, convert=convert)


if __name__ == "__main__":
    sys.exit(run_cli(main))
