"""What building one agent loop costs in verl's agent-loop worker: Hydra's ``instantiate`` vs the CPU backend's
direct construction (``papo_verl.cpu.compat.instantiate_directly``).

verl 0.9.1's ``AgentLoopWorker._run_agent_loop`` builds a new agent loop for every response (128 per demo step,
4096 per held-out evaluation of the pre-registered protocol) with ``hydra.utils.instantiate(config={"_target_":
...}, trainer_config=DictConfigWrap(config), server_manager=..., tokenizer=..., ...)``. On CPU the agent-loop worker
is one process on one core, and ``timing_s/gen`` waits for it. This script builds verl's real
``SingleTurnAgentLoop`` with the arguments the worker passes (the demo's resolved trainer config, the demo's
tokenizer) both ways, interleaved, and prints per-call process CPU time (robust to other load on the machine):

    python bench/agent_loop_construction.py [--calls 300] [--config outputs/demo/<run>/logs/papo_demo/papo-seed0.config.yaml]

Without ``--config`` it composes ``papo_trainer_cpu`` with the demo's assets (built once, cached).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def demo_config(config_path):
    from omegaconf import OmegaConf

    if config_path:
        return OmegaConf.load(config_path)
    from hydra import compose, initialize_config_dir

    from papo_verl.demo import ensure_assets
    from papo_verl.demo.run import demo_overrides

    assets = ensure_assets()
    config_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "papo_verl", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        config = compose("papo_trainer_cpu", overrides=[*assets.verl_overrides(),
                                                        *demo_overrides("papo", 0, 1, "bench", "/tmp/bench")[:-1]])
    OmegaConf.resolve(config)  # as verl's TaskRunner does before it hands the config to the workers
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--config", default=None, help="a resolved trainer config (a run's <experiment>.config.yaml)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    import hydra
    from transformers import AutoTokenizer
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap, _agent_loop_registry
    from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

    from benchinfo import git_commit
    from papo_verl.cpu.compat import instantiate_directly

    config = demo_config(args.config)
    tokenizer = AutoTokenizer.from_pretrained(config.actor_rollout_ref.model.path)
    entry = _agent_loop_registry["single_turn_agent"]
    kwargs = dict(trainer_config=DictConfigWrap(config=config), server_manager=object(), tokenizer=tokenizer,
                  processor=None, hf_model_type="qwen2", dataset_cls=object, data_config=DictConfigWrap(config.data),
                  tools=ToolListWrap([]))
    ways = {"hydra": hydra.utils.instantiate, "direct": instantiate_directly}
    for build in ways.values():  # warm-up, and both build the same class
        assert type(build(config=entry, **kwargs)) is SingleTurnAgentLoop
    times = {name: [] for name in ways}
    for _ in range(args.calls):
        for name, build in ways.items():
            start = time.process_time()
            build(config=entry, **kwargs)
            times[name].append(time.process_time() - start)
    print(f"commit: {git_commit()}; torch threads 1")
    per_call = {name: statistics.mean(t) * 1e3 for name, t in times.items()}
    for name, ms in per_call.items():
        print(f"{name:>7}: {ms:.3f} ms CPU per agent loop ({args.calls} calls); "
              f"{ms * 128 / 1e3:.2f} s per demo step of 128 responses, {ms * 4096 / 1e3:.1f} s per 256 x 16 evaluation")
    print(f"ratio_hydra_vs_direct_agent_loop_cpu_time: {per_call['hydra'] / per_call['direct']:.3f}")


if __name__ == "__main__":
    main()
