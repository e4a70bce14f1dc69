"""ensure_assets: builds a complete entry, reuses a finished one, rebuilds on a recipe change, clear errors."""

import json
import os

import pytest

from papo_verl.demo import assets as assets_mod
from papo_verl.demo.assets import (DemoAssetError, DemoRecipe, check_model_dir, default_cache_dir, ensure_assets,
                                   recipe_key)
from papo_verl.demo.pretrain import ModelConfig, PretrainConfig
from papo_verl.demo.task import TaskConfig

TINY = DemoRecipe(
    task=TaskConfig(n_numbers=(3,), min_solutions=2, target_min=5, target_max=30),
    n_test=4, n_train=6, vocab_size=300,
    model=ModelConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32,
                      max_position_embeddings=128),
    pretrain=PretrainConfig(steps=2, batch_size=4, warmup_steps=1, threads=1),
    eval_samples=2, eval_max_new_tokens=8,
)


def test_recipe_key_tracks_every_part_of_the_recipe():
    base = recipe_key(TINY)
    assert recipe_key(TINY) == base and len(base) == 20
    variants = [TINY.replace(n_test=5), TINY.replace(task=TaskConfig(n_numbers=(3,), min_solutions=3)),
                TINY.replace(model=ModelConfig(hidden_size=32)), TINY.replace(pretrain=PretrainConfig(steps=3)),
                TINY.replace(data_seed=1), TINY.replace(trace_max_steps=None), TINY.replace(eval_samples=4)]
    keys = {recipe_key(r) for r in variants}
    assert base not in keys and len(keys) == len(variants)


def test_builds_once_then_reuses_and_rebuilds_on_change(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from papo_verl.demo.data import check_dataset

    logs = []
    a = ensure_assets(str(tmp_path), recipe=TINY, log=logs.append)
    assert a.built and a.entry_dir == str(tmp_path / a.key)
    assert any("pre-training" in m for m in logs) and any("pass@1" in m for m in logs)
    # a normal HF folder, verl-schema data, the reward file verl will load
    model = AutoModelForCausalLM.from_pretrained(a.model_dir)
    assert model.config.model_type == "qwen2"
    assert AutoTokenizer.from_pretrained(a.model_dir).chat_template
    assert check_dataset(a.train_parquet, a.model_dir)["rows"] == 6
    assert check_dataset(a.test_parquet, a.model_dir, max_prompt_length=a.max_prompt_tokens)["rows"] == 4
    assert os.path.basename(a.reward_path) == "reward.py" and a.reward_name == "compute_score"
    assert set(a.figures["pass_at"]) == {"1", "2"} and a.figures["mean_entropy"] > 0
    assert a.pretrain["n_params"] > 0 and len(a.pretrain["losses"]) >= 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".build-")]  # no temp folder left

    manifest = tmp_path / a.key / "manifest.json"
    stamp = manifest.stat().st_mtime_ns

    def must_not_build(*args, **kwargs):
        raise AssertionError("a finished entry was rebuilt")

    monkeypatch.setattr(assets_mod, "build_entry", must_not_build)
    b = ensure_assets(str(tmp_path), recipe=TINY, log=logs.append)
    assert not b.built and b.model_dir == a.model_dir and b.figures == a.figures
    assert manifest.stat().st_mtime_ns == stamp
    monkeypatch.undo()

    c = ensure_assets(str(tmp_path), recipe=TINY.replace(data_seed=7), log=logs.append)
    assert c.built and c.key != a.key and os.path.isdir(a.entry_dir)  # the old entry is untouched

    d = ensure_assets(str(tmp_path), recipe=TINY, rebuild=True, log=logs.append)
    assert d.built and d.key == a.key and json.loads(manifest.read_text())["key"] == a.key
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".build-", ".old-"))]


def test_failed_build_leaves_no_entry(tmp_path, monkeypatch):
    def broken(recipe, out, log):
        (out / "partial").write_text("x")
        raise RuntimeError("boom")

    monkeypatch.setattr(assets_mod, "build_entry", broken)
    with pytest.raises(RuntimeError, match="boom"):
        ensure_assets(str(tmp_path), recipe=TINY, log=lambda m: None)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_cache_dir_default_and_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PAPO_DEMO_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == str(tmp_path / "c")
    monkeypatch.delenv("PAPO_DEMO_CACHE")
    assert default_cache_dir().endswith(os.path.join(".cache", "papo_demo"))


def test_model_dir_checks_name_the_fault(tmp_path, demo_tokenizer_dir):
    with pytest.raises(DemoAssetError, match="does not exist"):
        check_model_dir(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DemoAssetError, match="config.json"):
        check_model_dir(str(tmp_path / "empty"))

    from transformers import AutoTokenizer

    from papo_verl.demo import tiny

    folder = tmp_path / "m"
    tok = AutoTokenizer.from_pretrained(demo_tokenizer_dir)
    tok.chat_template = None
    tok.save_pretrained(str(folder))
    tiny.build_model(str(folder), tok, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1,
                     intermediate_size=32)
    for name in os.listdir(folder):  # drop the chat template wherever save_pretrained put it
        if name.endswith(".jinja"):
            os.remove(folder / name)
    with pytest.raises(DemoAssetError, match="chat_template"):
        check_model_dir(str(folder))
