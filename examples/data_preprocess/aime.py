"""AIME 2024 / 2025 -> verl RL parquet (``aime-2024.parquet``, ``aime-2025.parquet``) for evaluation.

Default sources: ``HuggingFaceH4/aime_2024`` and ``yentinglin/aime_2025`` (split ``train``, 30 problems
each), flat columns ``problem`` and ``answer``. The prompt is DAPO-Math-17k's template, so evaluation
asks for the same "Answer: <x>" format the recipes train on. ``data_source="aime<year>"`` (e.g.
"aime2024") routes the reward to ``verl.utils.reward_score.math_dapo`` (score **+1 / -1**, ``acc``);
verl reports validation metrics per data_source, so each year gets its own curves.

Accepted ``--input`` formats (.parquet/.jsonl/.json):

* flat: a problem column (``problem`` | ``Problem`` | ``question``) and an answer column
  (``answer`` | ``Answer`` | ``ground_truth``);
* verl's schema (e.g. BytedTsinghua-SIA/AIME-2024's ``aime-2024.parquet``, whose problems are repeated
  for avg@32): ``prompt`` (chat messages) + ``reward_model.ground_truth``. Repeats are removed: the
  recipes sample ``actor_rollout_ref.rollout.val_kwargs.n`` answers per problem instead.

AIME answers are integers 0..999; they are written without leading zeros ("033" -> "33"), since
math_dapo compares normalised strings.

    python examples/data_preprocess/aime.py --local_dir ~/data/aime                  # 2024 and 2025
    python examples/data_preprocess/aime.py --years 2024 --input 2024=aime_2024.jsonl
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from preprocess_utils import (  # noqa: E402
    DAPO_PROMPT_TEMPLATE, DataFormatError, find_column, load_rows, make_record, parse_inputs, report_skipped,
    run_cli, write_parquet,
)

HF_IDS = {"2024": ("HuggingFaceH4/aime_2024", "train"), "2025": ("yentinglin/aime_2025", "train")}
_PREFIX, _SUFFIX = DAPO_PROMPT_TEMPLATE.split("{problem}")


def normalize_answer(value) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if text.isdigit():
        text = str(int(text))
    return text


def _problem_of(row: dict, source: str, idx: int) -> str:
    messages = row["prompt"]
    if not isinstance(messages, (list, tuple)):
        messages = []
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if len(users) != 1 or not isinstance(users[0].get("content"), str):
        raise DataFormatError(f"{source}: row {idx}: 'prompt' must hold exactly one user message with text content")
    content = users[0]["content"]
    if content.startswith(_PREFIX) and content.endswith(_SUFFIX):
        return content[len(_PREFIX):len(content) - len(_SUFFIX)]
    return content


def convert(rows: list[dict], year: str, source: str) -> list[dict]:
    chat_format = isinstance(rows[0].get("prompt"), (list, tuple))
    if chat_format:
        find_column(rows, ("reward_model",), "reward_model ({'ground_truth': ...})", source)
    else:
        q_col = find_column(rows, ("problem", "Problem", "question"), "problem", source)
        a_col = find_column(rows, ("answer", "Answer", "ground_truth"), "answer", source)
        s_col = next((c for c in ("solution", "Solution") if c in rows[0]), None)
    records, skipped, seen = [], [], set()
    for idx, row in enumerate(rows):
        if chat_format:
            problem = _problem_of(row, source, idx).strip()
            reward = row.get("reward_model") or {}
            answer = reward.get("ground_truth") if isinstance(reward, dict) else None
            solution = ""
        else:
            problem, answer = str(row[q_col]).strip(), row[a_col]
            solution = str(row[s_col] or "") if s_col else ""
        answer = normalize_answer(answer) if answer is not None else ""
        if not problem or not answer:
            skipped.append(idx)
            continue
        if (problem, answer) in seen:
            continue
        seen.add((problem, answer))
        records.append(make_record(data_source=f"aime{year}", content=DAPO_PROMPT_TEMPLATE.format(problem=problem),
                                   ground_truth=answer, split="test", index=len(records), question=problem,
                                   solution=solution))
    report_skipped(skipped, len(rows), source, "a problem and an answer")
    return records


def main(argv: Sequence[str] | None = None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local_dir", "--local_save_dir", dest="local_dir", default="~/data/aime",
                        help="output folder (default ~/data/aime)")
    parser.add_argument("--years", nargs="+", choices=sorted(HF_IDS), default=sorted(HF_IDS),
                        help="which AIME years to write (default: all)")
    parser.add_argument("--input", action="append", metavar="YEAR=PATH",
                        help="local file for a year, in one of the formats above (repeatable; a bare PATH "
                             "when a single year is selected)")
    parser.add_argument("--hf_id", action="append", metavar="YEAR=ID",
                        help="hub dataset id for a year (repeatable); defaults: "
                             + ", ".join(f"{y}={i}" for y, (i, _) in HF_IDS.items()))
    args = parser.parse_args(argv)
    inputs = parse_inputs(args.input, args.years)
    hub = {y: i for y, (i, _) in HF_IDS.items()}
    hub.update(parse_inputs(args.hf_id, args.years, option="--hf_id"))
    out_dir = os.path.expanduser(args.local_dir)
    written = {}
    for year in args.years:
        hf_id, split = hub[year], HF_IDS[year][1]
        path = inputs.get(year)
        rows = load_rows(path, hf_id, None, split)
        records = convert(rows, year, path or f"{hf_id}[{split}]")
        out = os.path.join(out_dir, f"aime-{year}.parquet")
        n = write_parquet(records, out)
        print(f"aime {year}: {len(rows)} rows read, {n} problems written -> {out}")
        written[year] = out
    return written


if __name__ == "__main__":
    sys.exit(run_cli(main))
