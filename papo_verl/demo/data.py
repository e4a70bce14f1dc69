"""The demo's train/test parquet files in verl's RL schema, and a checker the runner can call.

Schema (what ``verl.utils.dataset.rl_dataset.RLHFDataset`` and the reward loop read, as in verl's
``examples/data_preprocess/gsm8k.py``)::

    data_source   "papo_demo/countdown"                      (data.reward_fn_key)
    prompt        [{"role": "user", "content": "Make 16 from ..."}]   (data.prompt_key)
    ability       "arithmetic"
    reward_model  {"style": "rule", "ground_truth": '{"numbers": [...], "target": 16}'}
    extra_info    {"split", "index", "ops", "n_solutions", "min_steps"}
"""

from __future__ import annotations

import os
from typing import Optional

__all__ = ["DemoDataError", "REQUIRED_COLUMNS", "check_dataset", "write_parquet"]

REQUIRED_COLUMNS = ("data_source", "prompt", "ability", "reward_model", "extra_info")


class DemoDataError(ValueError):
    """A dataset file is missing, unreadable or not in verl's RL schema; the message says how to fix it."""


def write_parquet(problems, path: str, split: str) -> str:
    """Write ``problems`` (:class:`~papo_verl.demo.task.Problem`) as one verl RL parquet file."""
    import pandas as pd

    from papo_verl.demo.task import problem_record

    rows = [problem_record(p, split, i) for i, p in enumerate(problems)]
    if not rows:
        raise DemoDataError(f"write_parquet: no problems for the {split!r} split")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


_FIX = "rebuild the demo data with papo_verl.demo.assets.ensure_assets(rebuild=True)"


def check_dataset(path: str, tokenizer=None, max_prompt_length: Optional[int] = None) -> dict:
    """Validate a demo parquet file; returns ``{"rows", "max_prompt_tokens" (with a tokenizer)}``.

    Checks that the file exists and reads as parquet, has verl's columns, that every prompt is a
    non-empty chat list, ``reward_model`` is a rule with a parseable ground truth, and
    ``data_source`` is the one the demo reward scores. With ``tokenizer`` (an object or a folder),
    also checks that it has a chat template, that every prompt renders and, with
    ``max_prompt_length``, fits (verl would silently drop longer prompts). Raises
    :class:`DemoDataError` naming the first problem and the fix.
    """
    from papo_verl.demo.reward import DATA_SOURCE, parse_ground_truth

    if not os.path.isfile(path):
        raise DemoDataError(f"dataset file {path!r} does not exist; {_FIX}")
    try:
        import pyarrow.parquet as pq

        df = pq.read_table(path).to_pandas()
    except Exception as exc:  # noqa: BLE001 -- any reader error means the file is unusable
        raise DemoDataError(f"dataset file {path!r} is not a readable parquet file ({type(exc).__name__}: {exc}); "
                            f"{_FIX}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DemoDataError(f"dataset file {path!r} lacks verl's RL columns {missing} (has {list(df.columns)}); "
                            f"verl needs {list(REQUIRED_COLUMNS)}; {_FIX}")
    if len(df) == 0:
        raise DemoDataError(f"dataset file {path!r} has no rows; {_FIX}")

    if tokenizer is not None and isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer))
    if tokenizer is not None and not getattr(tokenizer, "chat_template", None):
        raise DemoDataError("the tokenizer has no chat_template, so verl cannot render the chat prompts; use the "
                            "demo model folder's tokenizer (papo_verl.demo.tiny.build_tokenizer sets one)")

    max_tokens = 0
    for i, row in enumerate(df.itertuples(index=False)):
        where = f"{path!r} row {i}"
        if row.data_source != DATA_SOURCE:
            raise DemoDataError(f"{where}: data_source is {row.data_source!r}, the demo reward scores only "
                                f"{DATA_SOURCE!r}; {_FIX}")
        prompt = row.prompt
        if prompt is None or len(prompt) == 0:
            raise DemoDataError(f"{where}: prompt must be a non-empty list of chat messages; {_FIX}")
        messages = []
        for m in prompt:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise DemoDataError(f"{where}: each prompt message needs string 'role' and 'content', got {m!r}; "
                                    f"{_FIX}")
            messages.append({"role": m["role"], "content": m["content"]})
        rm = row.reward_model
        if not isinstance(rm, dict) or rm.get("style") != "rule" or "ground_truth" not in rm:
            raise DemoDataError(f"{where}: reward_model must be {{'style': 'rule', 'ground_truth': ...}}, got {rm!r}; "
                                f"{_FIX}")
        try:
            parse_ground_truth(rm["ground_truth"])
        except ValueError as exc:
            raise DemoDataError(f"{where}: {exc}") from None
        extra = row.extra_info
        if not isinstance(extra, dict) or "index" not in extra or "split" not in extra:
            raise DemoDataError(f"{where}: extra_info must be a dict with 'split' and 'index', got {extra!r}; {_FIX}")
        if tokenizer is not None:
            try:
                text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            except Exception as exc:  # noqa: BLE001
                raise DemoDataError(f"{where}: the chat template failed to render the prompt "
                                    f"({type(exc).__name__}: {exc})") from exc
            n = len(tokenizer.encode(text, add_special_tokens=False))
            max_tokens = max(max_tokens, n)
            if max_prompt_length is not None and n > max_prompt_length:
                raise DemoDataError(f"{where}: the prompt is {n} tokens, over data.max_prompt_length="
                                    f"{max_prompt_length}; verl would drop it. Raise data.max_prompt_length to at "
                                    f"least the longest prompt")
    out = {"rows": len(df)}
    if tokenizer is not None:
        out["max_prompt_tokens"] = max_tokens
    return out
