"""pass@1, pass@k, distinct correct answers and token entropy of a policy folder on the demo task.

Sampling mirrors verl's rollout settings for the demo: temperature 1, no top-k, no top-p, stop at
``<|im_end|>``, at most ``max_new_tokens`` tokens. Token entropy is that of softmax(logits / T) at
each generated position (the quantity verl logs as ``actor/entropy``), averaged over the generated
tokens of all samples.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

__all__ = ["EvalResult", "evaluate_policy", "load_problems", "pass_at_k"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples with ``c`` correct (Chen et al., 2021)."""
    if k > n:
        raise ValueError(f"pass_at_k: k={k} exceeds the number of samples n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


@dataclass
class EvalResult:
    n_problems: int
    n_samples: int
    temperature: float
    pass_at: dict  # {k: pass@k}
    mean_entropy: float  # nats per generated token
    well_formed: float  # share of samples that parse as steps
    distinct_correct: float  # mean number of distinct correct answers per problem
    solvable_distinct: float  # mean number of distinct valid answers per problem (solver)
    mean_response_tokens: float
    truncated: float  # share of samples that hit max_new_tokens without <|im_end|>
    examples: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pass_at"] = {str(k): v for k, v in self.pass_at.items()}
        return d

    def summary(self) -> str:
        ks = ", ".join(f"pass@{k} {v:.3f}" for k, v in sorted(self.pass_at.items()))
        return (f"{ks}; entropy {self.mean_entropy:.3f} nats/token; well-formed {self.well_formed:.3f}; "
                f"distinct correct {self.distinct_correct:.2f} of {self.solvable_distinct:.2f}; "
                f"{self.mean_response_tokens:.1f} tokens/response ({self.n_problems} problems x {self.n_samples})")


def load_problems(parquet_path: str) -> list[dict]:
    """``[{"messages", "numbers", "target", "ops", "n_solutions"}]`` from a demo parquet file."""
    import pandas as pd

    from papo_verl.demo.reward import ALL_OPS, parse_ground_truth

    df = pd.read_parquet(parquet_path)
    out = []
    for row in df.itertuples(index=False):
        numbers, target = parse_ground_truth(row.reward_model["ground_truth"])
        extra = row.extra_info if isinstance(row.extra_info, dict) else {}
        out.append({"messages": [dict(m) for m in row.prompt], "numbers": numbers, "target": target,
                    "ops": extra.get("ops") or ALL_OPS, "n_solutions": extra.get("n_solutions")})
    return out


def evaluate_policy(model_dir: str, problems, n_samples: int = 8, temperature: float = 1.0,
                    max_new_tokens: int = 24, seed: int = 0, batch_size: int = 256,
                    ks: Sequence[int] = (1, 2, 4, 8), threads: Optional[int] = None,
                    n_examples: int = 4) -> EvalResult:
    """Sample ``n_samples`` responses per problem with HF ``generate`` and score them exactly.

    ``problems``: a parquet path (as written by :mod:`papo_verl.demo.data`), a list of
    :class:`~papo_verl.demo.task.Problem`, or the dicts of :func:`load_problems`.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from papo_verl.demo.assets import check_model_dir
    from papo_verl.demo.pretrain import chat_prompt_ids
    from papo_verl.demo.reward import check_solution

    if isinstance(problems, (str, os.PathLike)):
        problems = load_problems(os.fspath(problems))
    items = [p if isinstance(p, dict) else {"messages": p.messages(), "numbers": list(p.numbers), "target": p.target,
                                            "ops": p.ops, "n_solutions": p.n_solutions} for p in problems]
    if not items:
        raise ValueError("evaluate_policy: no problems to evaluate")
    ks = sorted(k for k in set(ks) | {n_samples} if k <= n_samples)  # pass@n_samples always
    check_model_dir(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prev_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
        model.eval()
        eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        requests = [chat_prompt_ids(tokenizer, it["messages"]) for it in items for _ in range(n_samples)]
        texts: list = [None] * len(requests)
        n_tokens: list = [0] * len(requests)
        truncated: list = [False] * len(requests)
        ent_sum, ent_count = 0.0, 0
        torch.manual_seed(seed)
        for start in range(0, len(requests), batch_size):
            chunk = requests[start:start + batch_size]
            width = max(len(ids) for ids in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attn = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, ids in enumerate(chunk):  # left padding for batched generation
                input_ids[row, width - len(ids):] = torch.tensor(ids)
                attn[row, width - len(ids):] = 1
            with torch.no_grad():
                out = model.generate(input_ids=input_ids, attention_mask=attn, do_sample=True,
                                     temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                                     eos_token_id=eos, pad_token_id=pad, output_logits=True,
                                     return_dict_in_generate=True)
            seqs = out.sequences[:, width:]
            logits = torch.stack(out.logits, dim=1).float() / temperature  # (B, T, V)
            logp = torch.log_softmax(logits, dim=-1)
            ent = -(logp.exp() * logp).sum(-1)  # (B, T)
            for row in range(len(chunk)):
                toks = seqs[row].tolist()
                length = toks.index(eos) + 1 if eos in toks else len(toks)
                truncated[start + row] = eos not in toks
                n_tokens[start + row] = length
                ent_sum += float(ent[row, :length].sum())
                ent_count += length
                texts[start + row] = tokenizer.decode(toks[:length], skip_special_tokens=True)
    finally:
        torch.set_num_threads(prev_threads)

    pass_sums = {k: 0.0 for k in ks}
    well, distinct, solvable = 0, 0, 0.0
    examples = []
    for i, it in enumerate(items):
        verdicts = [check_solution(texts[i * n_samples + j], it["numbers"], it["target"], it["ops"])
                    for j in range(n_samples)]
        c = sum(v.correct for v in verdicts)
        for k in ks:
            pass_sums[k] += pass_at_k(n_samples, c, k)
        well += sum(v.well_formed for v in verdicts)
        distinct += len({v.key for v in verdicts if v.correct})
        solvable += it.get("n_solutions") or 0
        if len(examples) < n_examples:
            examples.append({"prompt": it["messages"][-1]["content"],
                             "responses": [texts[i * n_samples + j] for j in range(min(4, n_samples))],
                             "correct": [v.correct for v in verdicts[:4]]})
    n = len(items)
    return EvalResult(
        n_problems=n, n_samples=n_samples, temperature=temperature,
        pass_at={k: pass_sums[k] / n for k in ks},
        mean_entropy=ent_sum / max(1, ent_count),
        well_formed=well / (n * n_samples), distinct_correct=distinct / n, solvable_distinct=solvable / n,
        mean_response_tokens=sum(n_tokens) / len(n_tokens), truncated=sum(truncated) / len(truncated),
        examples=examples,
    )


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``python -m papo_verl.demo.evaluate MODEL_DIR TEST_PARQUET [-n 8] [--max-new-tokens 24]``."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("model_dir")
    ap.add_argument("parquet")
    ap.add_argument("-n", "--samples", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = ap.parse_args(argv)
    res = evaluate_policy(args.model_dir, args.parquet, n_samples=args.samples, temperature=args.temperature,
                          max_new_tokens=args.max_new_tokens, seed=args.seed)
    print(json.dumps(res.to_dict(), indent=2) if args.json else res.summary())


if __name__ == "__main__":
    main()
