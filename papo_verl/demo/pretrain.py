"""Supervised pre-training of the demo's tiny policy on synthetic solution traces (CPU, minutes).

The policy is a small ``Qwen2ForCausalLM`` made by :func:`papo_verl.demo.tiny.build_model` and trained
here with plain teacher forcing on ``chat prompt -> one valid solution + <|im_end|>``: the loss is
on the response tokens only, and each example shows a uniformly chosen distinct answer of its
problem, so the model learns a spread over the valid answers (not one favourite). The budget is
a fixed number of optimiser steps (deterministic and hashable), deliberately too small for the
model to master the task: it ends up writing well-formed steps, often with correct arithmetic,
but reaching the target only in a minority of samples, which is the starting point RL needs.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

__all__ = ["ModelConfig", "PretrainConfig", "PretrainResult", "chat_prompt_ids", "encode_example", "pretrain",
           "trace_stream"]


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the tiny Qwen2 policy (passed to :func:`papo_verl.demo.tiny.build_model`)."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 256
    vocab_size: int = 320  # BPE vocabulary trained on the task corpus (the model's equals the tokenizer's)


@dataclass(frozen=True)
class PretrainConfig:
    """AdamW with linear warm-up and cosine decay to ``min_lr_ratio * lr``; loss on response tokens.

    ``threads=1`` on purpose: for a model this small, two intra-op threads gain little on an idle
    2-core machine and lose a lot (measured 2-4x slower) as soon as anything else runs, because
    OpenMP threads spin-wait for each other.
    """

    steps: int = 800
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 1


@dataclass
class PretrainResult:
    steps: int
    losses: list  # mean loss per logging window
    first_loss: float
    final_loss: float
    wall_s: float
    n_params: int


def chat_prompt_ids(tokenizer, messages: list) -> list[int]:
    """Prompt ids exactly as verl's agent loop builds them (chat template + generation prompt)."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


def encode_example(tokenizer, messages: list, response: str) -> tuple[list[int], int]:
    """``(ids, n_prompt)``: prompt, response and the end-of-turn token the rollout stops at."""
    prompt = chat_prompt_ids(tokenizer, messages)
    resp = tokenizer.encode(response, add_special_tokens=False) + [tokenizer.eos_token_id]
    return prompt + resp, len(prompt)


def _lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def pretrain(model_dir: str, tokenizer, examples: Iterable[tuple[list, str]], cfg: PretrainConfig,
             log: Optional[Callable[[str], None]] = None, log_every: int = 50) -> PretrainResult:
    """Train the model saved in ``model_dir`` in place on ``(messages, response)`` pairs; save it back.

    ``examples`` must yield at least ``cfg.steps * cfg.batch_size`` pairs.
    """
    import torch
    from transformers import AutoModelForCausalLM

    log = log or (lambda msg: None)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads))
    try:
        torch.manual_seed(cfg.seed)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
        model.train()
        n_params = sum(p.numel() for p in model.parameters())
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
        pad = tokenizer.pad_token_id
        it = iter(examples)
        losses, window = [], []
        first_loss = None
        t0, c0 = time.time(), time.process_time()
        for step in range(cfg.steps):
            batch = []
            for _ in range(cfg.batch_size):
                try:
                    messages, response = next(it)
                except StopIteration:
                    raise ValueError(f"pretrain: the example stream ran out at step {step}; it must yield "
                                     f"steps*batch_size = {cfg.steps * cfg.batch_size} examples") from None
                batch.append(encode_example(tokenizer, messages, response))
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            attn = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (ids, n_prompt) in enumerate(batch):
                input_ids[row, :len(ids)] = torch.tensor(ids)
                labels[row, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
                attn[row, :len(ids)] = 1
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, cfg)
            loss = model(input_ids=input_ids, attention_mask=attn, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"pretrain: loss became {value} at step {step}; lower PretrainConfig.lr")
            first_loss = value if first_loss is None else first_loss
            window.append(value)
            if (step + 1) % log_every == 0 or step + 1 == cfg.steps:
                losses.append(sum(window) / len(window))
                log(f"pretrain step {step + 1}/{cfg.steps}: loss {losses[-1]:.4f}, lr {_lr_at(step, cfg):.2e}, "
                    f"{time.time() - t0:.0f}s (cpu {time.process_time() - c0:.0f}s)")
                window = []
        model.eval()
        model.save_pretrained(model_dir)
        return PretrainResult(cfg.steps, losses, first_loss, losses[-1], time.time() - t0, n_params)
    finally:
        torch.set_num_threads(prev_threads)


def trace_stream(problems: Iterable, seed: int, max_steps: Optional[int] = None):
    """``(messages, trace)`` pairs, one per problem of ``problems`` (e.g. an endless
    :func:`~papo_verl.demo.task.iter_problems`), each with a random valid answer."""
    from papo_verl.demo.task import sample_trace

    rng = random.Random(seed)
    for p in problems:
        yield p.messages(), sample_trace(p, rng, max_steps)
