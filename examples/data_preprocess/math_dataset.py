"""MATH (``DigitalLearningGmbH/MATH-lighteval``) -> verl RL parquet (``train.parquet``, ``test.parquet``).

Source columns: ``problem``, ``solution`` (worked solution with the final answer in ``\\boxed{}``),
``level``, ``type``. As verl's own example, the prompt asks for the answer within ``\\boxed{}`` and the
ground truth is the content of the solution's last ``\\boxed{}`` (verl's ``last_boxed_only_string`` /
``remove_boxed``). ``data_source="DigitalLearningGmbH/MATH-lighteval"`` routes the reward to
``verl.utils.reward_score.math_reward`` (last ``\\boxed{}`` + ``is_equiv``, score 1.0 / 0.0).
Note: that scale differs from math_dapo's +1/-1 (DAPO-Math-17k, AIME); do not mix them in one run
without a custom reward function.

    python examples/data_preprocess/math_dataset.py --local_dir ~/data/math
    python examples/data_preprocess/math_dataset.py --input train=math_train.parquet --input test=math_test.jsonl
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from preprocess_utils import (  # noqa: E402
    convert_splits, find_column, make_record, report_skipped, run_cli,
)

DATA_SOURCE = "DigitalLearningGmbH/MATH-lighteval"
SPLITS = ("train", "test")
INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."


def extract_solution(solution: str) -> str | None:
    """Content of the last ``\\boxed{...}`` of a MATH solution, as verl extracts it; None if there is none."""
    from verl.utils.reward_score.math_reward import last_boxed_only_string, remove_boxed

    boxed = last_boxed_only_string(solution)
    if boxed is None:
        return None
    if boxed.startswith("\\fbox{") and boxed.endswith("}"):  # found as a fallback; remove_boxed rejects it
        return boxed[len("\\fbox{"):-1]
    try:
        return remove_boxed(boxed)
    except AssertionError:
        return None


def convert(rows: list[dict], split: str, source: str) -> list[dict]:
    p_col = find_column(rows, ("problem",), "problem", source)
    s_col = find_column(rows, ("solution",), "solution (with the final answer in \\boxed{})", source)
    records, skipped = [], []
    for idx, row in enumerate(rows):
        problem, solution = str(row[p_col]), str(row[s_col])
        ground_truth = extract_solution(solution)
        if ground_truth is None:
            skipped.append(idx)
            continue
        records.append(make_record(data_source=DATA_SOURCE, content=f"{problem} {INSTRUCTION}",
                                   ground_truth=ground_truth, split=split, index=idx, question=problem,
                                   solution=solution))
    report_skipped(skipped, len(rows), source, f"a \\boxed{{...}} final answer in {s_col!r}")
    return records


def main(argv: Sequence[str] | None = None) -> dict[str, str]:
    return convert_splits(argv, description=__doc__, default_dir="~/data/math", hf_id=DATA_SOURCE, hf_config="default",
                          splits=SPLITS, convert=convert)


if __name__ == "__main__":
    sys.exit(run_cli(main))
