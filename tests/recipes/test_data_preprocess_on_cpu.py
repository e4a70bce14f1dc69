"""examples/data_preprocess: HF-format inputs -> verl's parquet schema, scored correctly by verl.

Each script runs on small local files in the Hugging Face dataset's own format (tests/recipes/hf_samples.py).
The output must have verl's RL schema, and ``verl.utils.reward_score.default_compute_score`` must score
the ground truth written the way a model answers ("#### 72", "\\boxed{...}", "Answer: 34") as correct,
and a wrong answer as wrong: routing by ``data_source`` is checked against verl itself.
"""

from __future__ import annotations

import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from .hf_samples import (
    AIME_ROWS, DAPO_PROBLEMS, DAPO_TEMPLATE, GSM8K_ROWS, MATH_ROWS, PREPROCESS_DIR, build_math_rl_data, dapo_hf_rows,
    load_script, write_jsonl, write_parquet,
)


@pytest.fixture(scope="module")
def score():
    from verl.utils.reward_score import default_compute_score

    return default_compute_score


def read(path) -> tuple[list[dict], object]:
    table = pq.read_table(path)
    return table.to_pylist(), table.schema


def assert_verl_schema(rows: list[dict], schema, data_source: str, split: str) -> None:
    utils = load_script("preprocess_utils")
    assert schema.equals(utils.VERL_SCHEMA)  # identical schema across scripts: mixable in data.train_files
    for i, row in enumerate(rows):
        assert row["data_source"] == data_source
        assert row["ability"] == "math"
        assert len(row["prompt"]) == 1 and row["prompt"][0]["role"] == "user" and row["prompt"][0]["content"]
        assert row["reward_model"]["ground_truth"]
        assert row["extra_info"]["split"] == split
    assert len({r["extra_info"]["index"] for r in rows}) == len(rows)


def test_gsm8k(tmp_path, score):
    gsm8k = load_script("gsm8k")
    train = write_jsonl(tmp_path / "train.jsonl", GSM8K_ROWS)
    test = write_parquet(tmp_path / "test.parquet", GSM8K_ROWS[:1])
    out = gsm8k.main(["--input", f"train={train}", "--input", f"test={test}", "--local_dir", str(tmp_path / "out")])
    assert set(out) == {"train", "test"}
    rows, schema = read(out["train"])
    assert_verl_schema(rows, schema, "openai/gsm8k", "train")
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["72", "1234", "-3"]
    assert rows[0]["prompt"][0]["content"].endswith('output the final answer after "####".')
    assert rows[1]["extra_info"]["question"] == GSM8K_ROWS[1]["question"]
    for row in rows:
        gt = row["reward_model"]["ground_truth"]
        assert score(row["data_source"], f"Let me compute.\n#### {gt}", gt) == 1.0
        assert score(row["data_source"], "Let me compute.\n#### 999999", gt) == 0.0
    assert len(read(out["test"])[0]) == 1


def test_math(tmp_path, score, capsys):
    math_dataset = load_script("math_dataset")
    no_box = {"problem": "Say hi.", "solution": "Hi.", "level": "Level 1", "type": "Algebra"}
    src = write_jsonl(tmp_path / "math.jsonl", MATH_ROWS + [no_box])
    out = math_dataset.main(["--input", f"test={src}", "--local_dir", str(tmp_path / "out")])
    assert set(out) == {"test"}  # only the splits given
    assert "skipped 1 of 4 rows" in capsys.readouterr().err
    rows, schema = read(out["test"])
    assert_verl_schema(rows, schema, "DigitalLearningGmbH/MATH-lighteval", "test")
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["\\frac{1}{2}", "\\frac{\\sqrt{3}}{2}", "4"]
    assert rows[0]["prompt"][0]["content"].endswith("output the final answer within \\boxed{}.")
    for row in rows:
        gt = row["reward_model"]["ground_truth"]
        assert score(row["data_source"], f"So the answer is $\\boxed{{{gt}}}$.", gt) == 1.0
        assert score(row["data_source"], "So the answer is $\\boxed{7}$.", gt) == 0.0
    # verl's MATH equivalence, not string equality: \frac12 is \frac{1}{2}.
    assert score(rows[0]["data_source"], "$\\boxed{\\frac12}$", rows[0]["reward_model"]["ground_truth"]) == 1.0


def test_dapo_math_original_format_is_deduplicated(tmp_path, score):
    dapo = load_script("dapo_math")
    src = write_parquet(tmp_path / "dapo-math-17k.parquet", dapo_hf_rows(repeats=3))
    rows, schema = read(dapo.main(["--input", str(src), "--local_dir", str(tmp_path / "out")]))
    assert_verl_schema(rows, schema, "math_dapo", "train")
    assert len(rows) == len(DAPO_PROBLEMS)  # 9 rows in, one per problem out
    for row, (problem, answer) in zip(rows, DAPO_PROBLEMS):
        assert row["prompt"][0]["content"] == DAPO_TEMPLATE.format(problem=problem)  # kept verbatim
        assert row["extra_info"]["question"] == problem
        assert row["reward_model"] == {"style": "rule-lighteval/MATH_v2", "ground_truth": answer}
        right = score(row["data_source"], f"Some reasoning.\nAnswer: {answer}", answer)
        assert right["score"] == 1.0 and right["acc"] is True
        wrong = score(row["data_source"], "Some reasoning.\nAnswer: 1000", answer)
        assert wrong["score"] == -1.0 and wrong["acc"] is False  # math_dapo: +1 / -1, acc separate
        assert score(row["data_source"], f"so it is \\boxed{{{answer}}}", answer)["acc"] is True
    kept = read(dapo.main(["--input", str(src), "--local_dir", str(tmp_path / "all"), "--no_dedup"]))[0]
    assert len(kept) == 3 * len(DAPO_PROBLEMS)


def test_dapo_math_flat_format_gets_the_dapo_template(tmp_path, score):
    dapo = load_script("dapo_math")
    # e.g. open-r1/DAPO-Math-17k-Processed: the problem in `prompt` (a string), the answer in `solution`.
    src = write_jsonl(tmp_path / "flat.jsonl", [{"prompt": p, "solution": a} for p, a in DAPO_PROBLEMS])
    rows, _ = read(dapo.main(["--input", str(src), "--local_dir", str(tmp_path / "out")]))
    assert [r["prompt"][0]["content"] for r in rows] == [DAPO_TEMPLATE.format(problem=p) for p, _ in DAPO_PROBLEMS]
    for row in rows:
        gt = row["reward_model"]["ground_truth"]
        assert score(row["data_source"], f"Answer: {gt}", gt)["acc"] is True


def test_aime(tmp_path, score):
    aime = load_script("aime")
    flat = write_jsonl(tmp_path / "aime24.jsonl", AIME_ROWS)  # HuggingFaceH4/aime_2024 columns
    # BytedTsinghua-SIA/AIME-2024 style: verl schema, every problem repeated.
    repeated = [{"data_source": "math_dapo",
                 "prompt": [{"content": DAPO_TEMPLATE.format(problem=r["problem"]), "role": "user"}],
                 "ability": "MATH", "reward_model": {"ground_truth": str(r["answer"]), "style": "rule"},
                 "extra_info": {"index": k}} for k in range(4) for r in AIME_ROWS]
    verl_fmt = write_parquet(tmp_path / "aime-2025.parquet", repeated)
    out = aime.main(["--input", f"2024={flat}", "--input", f"2025={verl_fmt}", "--local_dir", str(tmp_path / "out")])
    for year in ("2024", "2025"):
        rows, schema = read(out[year])
        assert_verl_schema(rows, schema, f"aime{year}", "test")
        assert [r["reward_model"]["ground_truth"] for r in rows] == ["33", "204"]  # "033" -> "33"; int -> str
        assert [r["extra_info"]["question"] for r in rows] == [r["problem"] for r in AIME_ROWS]
        for row in rows:
            gt = row["reward_model"]["ground_truth"]
            assert row["prompt"][0]["content"] == DAPO_TEMPLATE.format(problem=row["extra_info"]["question"])
            assert score(row["data_source"], f"...\nAnswer: {gt}", gt)["acc"] is True
            assert score(row["data_source"], "...\nAnswer: 5", gt)["score"] == -1.0


@pytest.mark.parametrize("script,args,message", [
    ("gsm8k", ["--input", "train={bad}"], "no question column; expected one of ['question'], found columns ['q', 'a']"),
    ("math_dataset", ["--input", "train={bad}"], "no problem column"),
    ("dapo_math", ["--input", "{bad}"], "no problem column"),
    ("aime", ["--years", "2024", "--input", "{bad}"], "no problem column"),
    ("gsm8k", ["--input", "{bad}"], "say which split"),
    ("gsm8k", ["--input", "valid={bad}"], "unknown split 'valid'"),
    ("dapo_math", ["--input", "{missing}"], "no such file"),
])
def test_missing_columns_and_bad_inputs_give_clear_errors(tmp_path, capsys, script, args, message):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"q": "1 + 1?", "a": "2"}])
    argv = [a.format(bad=bad, missing=tmp_path / "missing.parquet") for a in args]
    argv += ["--local_dir", str(tmp_path / "out")]
    utils = load_script("preprocess_utils")
    assert utils.run_cli(load_script(script).main, argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_script_runs_as_a_command(tmp_path):
    src = write_jsonl(tmp_path / "aime.jsonl", AIME_ROWS)
    proc = subprocess.run([sys.executable, str(PREPROCESS_DIR / "aime.py"), "--years", "2024", "--input", str(src),
                           "--local_dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(read(tmp_path / "out" / "aime-2024.parquet")[0]) == 2
    proc = subprocess.run([sys.executable, str(PREPROCESS_DIR / "aime.py"), "--years", "2024", "--input",
                           str(tmp_path / "nope.jsonl")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr


def test_outputs_load_together_in_verls_dataset(tmp_path, monkeypatch):
    """verl's RLHFDataset reads the files (mixed in one list) and keeps every prompt under max_prompt_length."""
    import datasets
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from papo_verl.demo.tiny import build_tokenizer

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    files = build_math_rl_data(tmp_path / "data")
    gsm8k = load_script("gsm8k").main(["--input", f"train={write_jsonl(tmp_path / 'g.jsonl', GSM8K_ROWS)}",
                                       "--local_dir", str(tmp_path / "gsm8k")])["train"]
    math = load_script("math_dataset").main(["--input", f"train={write_jsonl(tmp_path / 'm.jsonl', MATH_ROWS)}",
                                             "--local_dir", str(tmp_path / "math")])["train"]
    tokenizer = build_tokenizer(str(tmp_path / "tok"))
    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 4096, "filter_overlong_prompts": True,
                               "filter_overlong_prompts_workers": 1, "truncation": "error", "return_raw_chat": True,
                               "cache_dir": str(tmp_path / "verl-cache")})
    paths = [str(files["train"]), str(files["aime2024"]), gsm8k, math]
    dataset = RLHFDataset(paths, tokenizer, config)
    assert len(dataset) == len(DAPO_PROBLEMS) + len(AIME_ROWS) + len(GSM8K_ROWS) + len(MATH_ROWS)
    sources = {dataset[i]["data_source"] for i in range(len(dataset))}
    assert sources == {"math_dapo", "aime2024", "openai/gsm8k", "DigitalLearningGmbH/MATH-lighteval"}
    item = dataset[0]
    assert item["raw_prompt"] == item["prompt"] and item["reward_model"]["ground_truth"] == DAPO_PROBLEMS[0][1]
