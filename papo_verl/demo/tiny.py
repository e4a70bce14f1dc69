"""Tiny Hugging Face assets built locally (no hub access): a Qwen2-compatible tokenizer and model.

* :func:`build_tokenizer` trains a byte-level BPE with exactly the normalizer and pre-tokenizer that
  transformers' ``Qwen2Tokenizer`` rebuilds on load (NFC, Qwen's split regex, ByteLevel), adds the
  ChatML special tokens and a chat template, and saves it with ``save_pretrained``. verl's agent
  loop relies on Qwen properties such as ``"\\n"`` being a single token.
* :func:`build_model` saves a randomly initialised ``Qwen2ForCausalLM``; it loads through the
  ordinary ``AutoModelForCausalLM.from_pretrained(folder)`` path, like any downloaded model.

Used by the tests (a real tiny model for every pipeline test) and by the CPU demo, which pre-trains
such a model on its task before RL.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterable, Optional

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "build_model", "build_tiny_assets", "build_tokenizer", "default_corpus"]

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# ChatML, as Qwen2.5: every turn is "<|im_start|>{role}\n{content}<|im_end|>\n".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def default_corpus() -> list[str]:
    """A small corpus with digits, arithmetic, ChatML roles and plain English words."""
    lines = []
    for a in range(0, 60, 7):
        for b in range(1, 40, 9):
            lines.append(f"{a} + {b} = {a + b}. {a} * {b} = {a * b}. {a} - {b} = {a - b}.")
    words = ("the answer is user assistant system solve compute target numbers reach using each once "
             "step result final equals yes no think because so then")
    lines += [words] * 20
    lines += ["<|im_start|>user\nSolve: 3 + 4<|im_end|>\n<|im_start|>assistant\nThe answer is 7<|im_end|>\n"] * 10
    return lines


def build_tokenizer(out_dir: str, corpus: Optional[Iterable[str]] = None, vocab_size: int = 400):
    """Train and save a Qwen2-compatible byte-level BPE with a ChatML chat template; returns the tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AutoTokenizer, Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(list(corpus if corpus is not None else default_corpus()), trainer=trainer)
    with tempfile.TemporaryDirectory() as tmp:  # the trained merges, read back through the BPE model's serialiser
        merges_file = next(f for f in tok.model.save(tmp) if f.endswith("merges.txt"))
        with open(merges_file, encoding="utf-8") as fh:
            merges = [tuple(line.rstrip("\n").split(" ")) for line in fh if line.strip() and not line.startswith("#")]
    hf = Qwen2Tokenizer(vocab=tok.get_vocab(), merges=merges, unk_token="<|endoftext|>", eos_token="<|im_end|>",
                        pad_token="<|endoftext|>", additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    hf.chat_template = CHAT_TEMPLATE
    os.makedirs(out_dir, exist_ok=True)
    hf.save_pretrained(out_dir)
    loaded = AutoTokenizer.from_pretrained(out_dir)
    if len(loaded.encode("\n", add_special_tokens=False)) != 1:
        raise RuntimeError("tiny tokenizer: '\\n' must be a single token (verl's Qwen boundary handling)")
    return loaded


def build_model(out_dir: str, tokenizer, *, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 2,
                num_kv_heads: int = 1, intermediate_size: int = 128, max_position_embeddings: int = 512,
                seed: int = 0, tie_word_embeddings: bool = True):
    """Save a randomly initialised ``Qwen2ForCausalLM`` (float32) sized to ``tokenizer``; returns it.

    The defaults give attention heads of 32 dimensions, the smallest vLLM-CPU has kernels for. The
    model's vocabulary is exactly the tokenizer's: verl masks the logits of ids >= len(tokenizer) in
    its vLLM rollout but not in the trainer, so padded ids would make the two disagree.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    vocab = len(tokenizer)
    config = Qwen2Config(
        vocab_size=vocab, hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads, intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=tie_word_embeddings,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.float32)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id).save_pretrained(out_dir)
    return model


def build_tiny_assets(out_dir: str, corpus: Optional[Iterable[str]] = None, vocab_size: int = 400, **model_kw) -> str:
    """Tokenizer and random model in one folder (what ``actor_rollout_ref.model.path`` points at)."""
    tokenizer = build_tokenizer(out_dir, corpus, vocab_size=vocab_size)
    build_model(out_dir, tokenizer, **model_kw)
    return out_dir
