"""Generation throughput of the ``hf_cpu`` rollout server: batch 1 vs 32 concurrent requests.

The server runs as verl runs it (a Ray actor started by ``HFCpuReplica``, local Ray, a tiny random
Qwen2 from :mod:`papo_verl.tiny`). Three measurements, each ``--rounds`` times (best round kept):

* ``batch1``: requests sent one at a time (each waits for the previous): what an unbatched server
  does under any load;
* ``batched32``: 32 concurrent requests to the dynamically batching server;
* ``serial32``: the same 32 concurrent requests to a server with ``max_batch_size=1``.

Every request generates exactly ``--tokens`` tokens (``ignore_eos``) at temperature 1. Output:
one line per figure, the ratios last as ``ratio_<what>: <number>``. Runs on CPU in about a minute:

    python bench/hf_cpu_throughput.py [--tokens 64] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def launch(ray, model_dir: str, replica_rank: int, max_batch_size: int, threads: int, tokens: int):
    from verl.workers.config import HFModelConfig, RolloutConfig

    from papo_verl.cpu.rollout import HFCpuReplica

    rollout = RolloutConfig(name="hf_cpu", prompt_length=64, response_length=tokens, tensor_model_parallel_size=1,
                            engine_kwargs={"hf_cpu": {"max_batch_size": max_batch_size, "batch_window_ms": 10,
                                                      "max_batch_wait_ms": 50, "num_threads": threads}})
    model = HFModelConfig(path=model_dir, override_config={"attn_implementation": "sdpa"})
    replica = HFCpuReplica(replica_rank=replica_rank, config=rollout, model_config=model, gpus_per_node=1)
    asyncio.run(replica.launch_servers())
    return replica.server_handle


def measure(ray, server, prompts: list[list[int]], tokens: int, concurrent: bool) -> float:
    """Generated tokens per second for ``prompts`` (all at once if ``concurrent``, else one by one)."""
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "max_tokens": tokens, "ignore_eos": True, "logprobs": True}
    start = time.perf_counter()
    if concurrent:
        outs = ray.get([server.generate.remote(prompt_ids=p, sampling_params=params, request_id=str(i))
                        for i, p in enumerate(prompts)])
    else:
        outs = [ray.get(server.generate.remote(prompt_ids=p, sampling_params=params, request_id=str(i)))
                for i, p in enumerate(prompts)]
    elapsed = time.perf_counter() - start
    generated = sum(len(o.token_ids) for o in outs)
    assert generated == tokens * len(prompts), generated
    return generated / elapsed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of each measurement (best kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each server")
    parser.add_argument("--serial-requests", type=int, default=8, help="requests of the batch-1 measurement")
    args = parser.parse_args(argv)

    import ray

    from papo_verl.tiny import build_tiny_assets

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_assets(os.path.join(tmp, "tiny"))
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        texts = ["Compute 3 + 4.", "the answer is", "solve: 12 * 9 using each number once", "yes no think because"]
        prompts32 = [tok.apply_chat_template([{"role": "user", "content": texts[i % 4]}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False) for i in range(32)]
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            batching = launch(ray, model_dir, 0, max_batch_size=64, threads=args.threads, tokens=args.tokens)
            serial = launch(ray, model_dir, 1, max_batch_size=1, threads=args.threads, tokens=args.tokens)
            measure(ray, batching, prompts32[:4], args.tokens, concurrent=True)  # warm-up
            measure(ray, serial, prompts32[:2], args.tokens, concurrent=True)
            batch1 = max(measure(ray, batching, prompts32[: args.serial_requests], args.tokens, concurrent=False)
                         for _ in range(args.rounds))
            before = len(ray.get(batching.get_stats.remote())["batch_sizes"])
            batched32 = max(measure(ray, batching, prompts32, args.tokens, concurrent=True) for _ in range(args.rounds))
            sizes = ray.get(batching.get_stats.remote())["batch_sizes"][before:]
            serial32 = max(measure(ray, serial, prompts32, args.tokens, concurrent=True) for _ in range(args.rounds))
        finally:
            ray.shutdown()
    print(f"tokens_per_request: {args.tokens}")
    print(f"server_threads: {args.threads}")
    print(f"batched32_batch_sizes: {sizes}")
    print(f"tokens_per_s_batch1: {batch1:.1f}")
    print(f"tokens_per_s_batched32: {batched32:.1f}")
    print(f"tokens_per_s_serial32: {serial32:.1f}")
    print(f"wall_s: {time.perf_counter() - t0:.1f}")
    print(f"ratio_batched32_vs_serial32_tokens_per_s: {batched32 / serial32:.2f}")
    print(f"ratio_batched32_vs_batch1_tokens_per_s: {batched32 / batch1:.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
