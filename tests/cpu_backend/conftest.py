"""Fixtures of the CPU-backend tests: one tiny random Qwen2 (papo_verl.demo.tiny) per session."""

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A local HF folder (tokenizer with ChatML template + random 2-layer Qwen2, float32)."""
    from papo_verl.demo.tiny import build_tiny_assets

    return build_tiny_assets(str(tmp_path_factory.mktemp("tiny_qwen2")))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """(model, tokenizer) loaded in float32 with sdpa attention, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    return model.eval(), AutoTokenizer.from_pretrained(tiny_model_dir)
