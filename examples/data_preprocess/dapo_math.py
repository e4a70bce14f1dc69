"""DAPO-Math-17k -> verl RL parquet (``train.parquet``), deduplicated.

Source: ``BytedTsinghua-SIA/DAPO-Math-17k`` (split ``train``, file ``data/dapo-math-17k.parquet``). It is
already in verl's schema: ``prompt`` = [{"role": "user", "content": <DAPO template around the problem>}],
``reward_model.ground_truth`` = the integer answer, ``data_source`` = "math_dapo". Its ~1.79 M rows are
the ~17.9 k problems repeated (reported by users of the dataset; check the counts this script prints);
by default one row per (prompt, answer) is kept (``--no_dedup`` keeps all).

Accepted ``--input`` formats (.parquet/.jsonl/.json):

* the original: ``prompt`` (list of chat messages) + ``reward_model`` ({"ground_truth": ...});
* flat: a problem column (``problem`` | ``question`` | ``prompt`` as a string) and an answer column
  (``answer`` | ``ground_truth`` | ``solution``), e.g. open-r1/DAPO-Math-17k-Processed; the DAPO
  template is then applied to the problem.

``data_source="math_dapo"`` routes the reward to ``verl.utils.reward_score.math_dapo``: the last
"Answer: ..." line (``\\boxed{}`` as a fallback), score **+1 / -1**, plus ``acc`` (bool) and ``pred``.

    python examples/data_preprocess/dapo_math.py --local_dir ~/data/dapo-math-17k
    python examples/data_preprocess/dapo_math.py --input dapo-math-17k.parquet
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from preprocess_utils import (  # noqa: E402
    DAPO_PROMPT_TEMPLATE, DataFormatError, add_common_args, find_column, load_rows, make_record, report_skipped,
    run_cli, write_parquet,
)

DATA_SOURCE = "math_dapo"
HF_ID = "BytedTsinghua-SIA/DAPO-Math-17k"
_PREFIX, _SUFFIX = DAPO_PROMPT_TEMPLATE.split("{problem}")


def strip_template(content: str) -> str:
    """The problem inside a DAPO-template prompt (the whole text if it is not in that template)."""
    if content.startswith(_PREFIX) and content.endswith(_SUFFIX):
        return content[len(_PREFIX):len(content) - len(_SUFFIX)]
    return content


def normalize_answer(value) -> str:
    """Answers as strings; integral floats (a JSON/parquet artefact) as integers."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _user_content(messages, source: str, idx: int) -> str:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise DataFormatError(f"{source}: row {idx}: 'prompt' is neither a problem string nor a list of chat messages")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if len(users) != 1 or not isinstance(users[0].get("content"), str):
        raise DataFormatError(f"{source}: row {idx}: 'prompt' must hold exactly one user message with text content")
    return users[0]["content"]


def convert(rows: list[dict], source: str, dedup: bool = True) -> list[dict]:
    first_prompt = rows[0].get("prompt")
    chat_format = isinstance(first_prompt, (list, tuple))
    if chat_format:
        find_column(rows, ("reward_model",), "reward_model ({'ground_truth': ...})", source)
    else:
        q_col = find_column(rows, ("problem", "question", "prompt"), "problem", source)
        a_col = find_column(rows, ("answer", "ground_truth", "solution"), "answer", source)
    records, skipped, seen = [], [], set()
    for idx, row in enumerate(rows):
        if chat_format:
            content = _user_content(row["prompt"], source, idx)
            reward = row.get("reward_model") or {}
            answer = reward.get("ground_truth") if isinstance(reward, dict) else None
            style = str(reward.get("style") or "rule") if isinstance(reward, dict) else "rule"
            problem = strip_template(content)
        else:
            problem, answer, style = str(row[q_col]).strip(), row[a_col], "rule"
            content = DAPO_PROMPT_TEMPLATE.format(problem=problem)
        answer = normalize_answer(answer) if answer is not None else ""
        if not answer or not content.strip():
            skipped.append(idx)
            continue
        if dedup:
            key = (content, answer)
            if key in seen:
                continue
            seen.add(key)
        records.append(make_record(data_source=DATA_SOURCE, content=content, ground_truth=answer, split="train",
                                   index=len(records), question=problem, style=style))
    report_skipped(skipped, len(rows), source, "a problem and a ground-truth answer")
    return records


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, default_dir="~/data/dapo-math-17k", hf_id=HF_ID, hf_config=None)
    parser.add_argument("--input", metavar="PATH", help="local copy of the dataset (.parquet/.jsonl/.json)")
    parser.add_argument("--no_dedup", action="store_true", help="keep repeated (prompt, answer) rows")
    args = parser.parse_args(argv)
    rows = load_rows(args.input, args.hf_id, args.hf_config, "train")
    source = args.input or f"{args.hf_id}[train]"
    records = convert(rows, source, dedup=not args.no_dedup)
    out = os.path.join(os.path.expanduser(args.local_dir), "train.parquet")
    n = write_parquet(records, out)
    print(f"train: {len(rows)} rows read, {n} written{' (deduplicated)' if not args.no_dedup else ''} -> {out}")
    return out


if __name__ == "__main__":
    sys.exit(run_cli(main))
