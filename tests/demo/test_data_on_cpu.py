"""Demo parquet files: verl's real RLHFDataset loads them, the chat template renders, the checker catches faults."""

import json
import random

import pandas as pd
import pytest

from papo_verl.demo.data import DemoDataError, check_dataset, write_parquet
from papo_verl.demo.reward import DATA_SOURCE, compute_score


@pytest.fixture()
def train_file(tmp_path, demo_problems):
    return write_parquet(demo_problems, str(tmp_path / "train.parquet"), "train")


def rl_dataset(path, tokenizer, tmp_path, max_prompt_length=64):
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    cfg = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": max_prompt_length,
                            "filter_overlong_prompts": True, "filter_overlong_prompts_workers": 1,
                            "truncation": "error", "cache_dir": str(tmp_path / "verl_cache")})
    return RLHFDataset(data_files=path, tokenizer=tokenizer, config=cfg)


def test_loads_through_verls_rlhf_dataset(train_file, demo_tokenizer, demo_problems, tmp_path):
    ds = rl_dataset(train_file, demo_tokenizer, tmp_path)
    assert len(ds) == len(demo_problems)  # nothing filtered as over-long
    row = ds[3]
    p = demo_problems[3]
    assert row["data_source"] == DATA_SOURCE
    assert list(row["raw_prompt"]) == [{"role": "user", "content": p.prompt()}]
    assert row["index"] == 3 and row["extra_info"]["split"] == "train"
    assert json.loads(row["reward_model"]["ground_truth"]) == {"numbers": list(p.numbers), "target": p.target}
    # the reward manager's view of this row scores a valid trace 1 and a wrong one 0
    trace = __import__("papo_verl.demo.task", fromlist=["sample_trace"]).sample_trace(p, random.Random(0))
    kw = dict(data_source=row["data_source"], ground_truth=row["reward_model"]["ground_truth"],
              extra_info=row["extra_info"])
    assert compute_score(solution_str=trace, **kw)["score"] == 1.0
    assert compute_score(solution_str="1+1=2", **kw)["score"] == 0.0


def test_over_long_prompts_are_what_verl_would_drop(train_file, demo_tokenizer, tmp_path):
    info = check_dataset(train_file, demo_tokenizer)
    assert len(rl_dataset(train_file, demo_tokenizer, tmp_path, info["max_prompt_tokens"])) == info["rows"]
    assert len(rl_dataset(train_file, demo_tokenizer, tmp_path, info["max_prompt_tokens"] - 1)) < info["rows"]
    with pytest.raises(DemoDataError, match="max_prompt_length"):
        check_dataset(train_file, demo_tokenizer, max_prompt_length=info["max_prompt_tokens"] - 1)


def test_chat_template_renders_as_verls_agent_loop(demo_tokenizer, demo_problems):
    from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

    from papo_verl.demo.pretrain import chat_prompt_ids, encode_example

    p = demo_problems[0]
    text = demo_tokenizer.apply_chat_template(p.messages(), add_generation_prompt=True, tokenize=False)
    assert text == f"<|im_start|>user\n{p.prompt()}<|im_end|>\n<|im_start|>assistant\n"
    builder = create_continuous_token_builder(demo_tokenizer, hf_model_type="qwen2")
    assert builder.build_initial_tokens(p.messages()) == chat_prompt_ids(demo_tokenizer, p.messages())
    ids, n_prompt = encode_example(demo_tokenizer, p.messages(), "7+9=16")
    assert ids[-1] == demo_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert demo_tokenizer.decode(ids[n_prompt:], skip_special_tokens=True) == "7+9=16"


def test_checker_accepts_good_files_and_names_faults(train_file, demo_tokenizer, demo_tokenizer_dir, tmp_path):
    assert check_dataset(train_file)["rows"] == 24
    assert check_dataset(train_file, demo_tokenizer_dir)["max_prompt_tokens"] > 10  # a folder works too
    with pytest.raises(DemoDataError, match="does not exist"):
        check_dataset(str(tmp_path / "nope.parquet"))
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DemoDataError, match="not a readable parquet"):
        check_dataset(str(tmp_path / "junk.parquet"))

    df = pd.read_parquet(train_file)
    df.drop(columns=["reward_model"]).to_parquet(tmp_path / "no_rm.parquet")
    with pytest.raises(DemoDataError, match=r"lacks verl's RL columns \['reward_model'\]"):
        check_dataset(str(tmp_path / "no_rm.parquet"))
    bad = df.copy()
    bad["data_source"] = "openai/gsm8k"
    bad.to_parquet(tmp_path / "src.parquet")
    with pytest.raises(DemoDataError, match="data_source"):
        check_dataset(str(tmp_path / "src.parquet"))
    bad = df.copy()
    bad["reward_model"] = [{"style": "rule", "ground_truth": "16"}] * len(bad)
    bad.to_parquet(tmp_path / "gt.parquet")
    with pytest.raises(DemoDataError, match="numbers"):
        check_dataset(str(tmp_path / "gt.parquet"))

    demo_tokenizer.chat_template, saved = None, demo_tokenizer.chat_template
    try:
        with pytest.raises(DemoDataError, match="chat_template"):
            check_dataset(train_file, demo_tokenizer)
    finally:
        demo_tokenizer.chat_template = saved
