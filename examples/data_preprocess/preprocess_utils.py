"""Shared helpers of the data-preparation scripts in this folder (GSM8K, MATH, DAPO-Math-17k, AIME).

Every script reads one Hugging Face dataset, either from the hub (``datasets.load_dataset(<id>)``,
the default) or from a local file in that dataset's own format (``--input``: ``.parquet``,
``.jsonl`` or ``.json``), and writes verl's RL parquet schema::

    data_source   str     routes the reward: verl.utils.reward_score.default_compute_score
    prompt        list    [{"role": "user", "content": <question + answer-format instruction>}]
    ability       str     "math"
    reward_model  struct  {"style": "rule", "ground_truth": <final answer string>}
    extra_info    struct  {"split", "index", "question", "solution"}

All scripts write exactly :data:`VERL_SCHEMA` (same field order and types, empty strings rather than
nulls), so their outputs can be mixed in one ``data.train_files`` list: verl concatenates the files
with ``datasets.concatenate_datasets``, which needs identical features.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "DAPO_PROMPT_TEMPLATE",
    "DataFormatError",
    "VERL_SCHEMA",
    "add_common_args",
    "report_skipped",
    "find_column",
    "load_rows",
    "make_record",
    "parse_inputs",
    "run_cli",
    "write_parquet",
]

# The instruction of BytedTsinghua-SIA/DAPO-Math-17k (verbatim), answered as "Answer: <x>" and
# scored by verl's math_dapo (Minerva-style "Answer:" match, \boxed{} fallback). AIME evaluation
# uses the same template so that training and evaluation ask for the same answer format.
DAPO_PROMPT_TEMPLATE = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
    "{problem}\n\n"
    'Remember to put your answer on its own line after "Answer:".'
)


class DataFormatError(ValueError):
    """The input does not have the columns / values the dataset's own format has."""


VERL_SCHEMA = pa.schema([
    ("data_source", pa.string()),
    ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("ability", pa.string()),
    ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
    ("extra_info", pa.struct([
        ("split", pa.string()), ("index", pa.int64()), ("question", pa.string()), ("solution", pa.string()),
    ])),
])


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------
def _read_json(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if path.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    try:
        data = json.loads(text)
    except json.JSONDecodeError:  # a .json file holding JSON lines, as `datasets` also accepts
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list) and (not v or isinstance(v[0], dict))]
        if len(lists) == 1:  # {"data": [...]} (HF's `field=` layout)
            return lists[0]
    raise DataFormatError(
        f"{path}: expected a JSON array of records, JSON lines, or an object with one list of records")


def load_rows(input_path: str | None, hf_id: str, hf_config: str | None, split: str) -> list[dict]:
    """Rows (plain dicts) of a local file, or of ``split`` of the hub dataset ``hf_id``."""
    if input_path:
        path = os.path.expanduser(input_path)
        if not os.path.isfile(path):
            raise DataFormatError(f"--input {input_path}: no such file")
        if path.endswith(".parquet"):
            rows = pq.read_table(path).to_pylist()
        elif path.endswith((".jsonl", ".json")):
            rows = _read_json(path)
        else:
            raise DataFormatError(f"--input {input_path}: unsupported file type (use .parquet, .jsonl or .json)")
        source = path
    else:
        import datasets

        args = (hf_id, hf_config) if hf_config else (hf_id,)
        rows = [dict(r) for r in datasets.load_dataset(*args, split=split)]
        source = f"{hf_id}[{split}]"
    if not rows:
        raise DataFormatError(f"{source}: no rows")
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, Mapping)), None)
    if bad is not None:
        raise DataFormatError(f"{source}: row {bad} is not a record ({type(rows[bad]).__name__})")
    return rows


def find_column(rows: Sequence[Mapping], candidates: Sequence[str], what: str, source: str) -> str:
    """The first of ``candidates`` present in the rows; a clear error listing the columns otherwise."""
    columns = list(rows[0].keys())
    for name in candidates:
        if name in columns:
            return name
    raise DataFormatError(
        f"{source}: no {what} column; expected one of {list(candidates)}, found columns {columns}. "
        "Pass the dataset in its Hugging Face format (see the script's --help)."
    )


def parse_inputs(values: Sequence[str] | None, splits: Sequence[str], option: str = "--input") -> dict[str, str]:
    """``--input SPLIT=PATH`` (repeatable); with a single split a bare ``--input PATH`` is accepted."""
    out: dict[str, str] = {}
    for value in values or ():
        split, sep, path = value.partition("=")
        if not sep:
            if len(splits) != 1:
                raise DataFormatError(
                    f"{option} {value}: say which split, e.g. {option} {splits[0]}={value} (splits: {list(splits)})")
            split, path = splits[0], value
        if split not in splits:
            raise DataFormatError(f"{option} {value}: unknown split {split!r} (splits: {list(splits)})")
        if split in out:
            raise DataFormatError(f"{option}: split {split!r} given twice")
        out[split] = path
    return out


def report_skipped(skipped: Sequence[int], total: int, source: str, why: str) -> None:
    """Rows without a usable answer are left out with a warning; a source with none usable is an error."""
    if not skipped:
        return
    if len(skipped) == total:
        raise DataFormatError(f"{source}: no row has {why}; is this the dataset's own format?")
    shown = ", ".join(str(i) for i in skipped[:10]) + (", ..." if len(skipped) > 10 else "")
    print(f"warning: {source}: skipped {len(skipped)} of {total} rows without {why} (rows {shown})", file=sys.stderr)


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
def make_record(*, data_source: str, content: str, ground_truth: str, split: str, index: int,
                question: str = "", solution: str = "", style: str = "rule", ability: str = "math") -> dict:
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": content}],
        "ability": ability,
        "reward_model": {"style": style, "ground_truth": ground_truth},
        "extra_info": {"split": split, "index": int(index), "question": question, "solution": solution},
    }


def write_parquet(records: Iterable[dict], path: str) -> int:
    records = list(records)
    if not records:
        raise DataFormatError(f"{path}: nothing to write (0 rows)")
    table = pa.Table.from_pylist(records, schema=VERL_SCHEMA)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pq.write_table(table, path)
    return table.num_rows


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def add_common_args(parser: argparse.ArgumentParser, *, default_dir: str, hf_id: str, hf_config: str | None) -> None:
    parser.add_argument("--local_dir", "--local_save_dir", dest="local_dir", default=default_dir,
                        help=f"output folder (default {default_dir})")
    parser.add_argument("--hf_id", default=hf_id, help=f"hub dataset id when no --input is given (default {hf_id})")
    parser.add_argument("--hf_config", default=hf_config, help=f"hub dataset config name (default {hf_config})")


def run_cli(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> int:
    """Run ``main``; a :class:`DataFormatError` becomes a one-line message and exit status 2."""
    try:
        main(argv)
    except DataFormatError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def convert_splits(argv: Sequence[str] | None, *, description: str, default_dir: str, hf_id: str,
                   hf_config: str | None, splits: Sequence[str],
                   convert: Callable[[list[dict], str, str], list[dict]]) -> dict[str, str]:
    """The CLI of a dataset whose splits each become ``<local_dir>/<split>.parquet`` (GSM8K, MATH).

    ``convert(rows, split, source)`` turns the rows of one split (HF format) into verl records.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, default_dir=default_dir, hf_id=hf_id, hf_config=hf_config)
    parser.add_argument("--input", action="append", metavar="SPLIT=PATH",
                        help="local file of a split in the HF format (.parquet/.jsonl/.json); repeatable. "
                             "With --input only the given splits are written; without it both come from the hub.")
    args = parser.parse_args(argv)
    inputs = parse_inputs(args.input, splits)
    out_dir = os.path.expanduser(args.local_dir)
    written = {}
    for split in (list(inputs) if inputs else list(splits)):
        path = inputs.get(split)
        rows = load_rows(path, args.hf_id, args.hf_config, split)
        out = os.path.join(out_dir, f"{split}.parquet")
        n = write_parquet(convert(rows, split, path or f"{args.hf_id}[{split}]"), out)
        print(f"{split}: {n} rows -> {out}")
        written[split] = out
    return written
