"""The hf_cpu server as verl runs it: a Ray actor launched by HFCpuReplica, fed by the trainer-side
adapter (local Ray, real tiny Qwen2).

* concurrent generate() calls are served in shared batches, and every row's log-probs equal a
  direct fp32 forward of the returned tokens (< 1e-5);
* a weight update through HFCpuServerAdapter.update_weights changes the server's log-probs to
  exactly those of the updated model, and stamps later outputs with the new global step.
"""

import asyncio

import pytest
import torch

ray = pytest.importorskip("ray")

from papo_verl.cpu.rollout import HFCpuReplica, HFCpuServerAdapter, server_actor_name  # noqa: E402

from .test_generation_on_cpu import PROMPTS, direct_log_probs  # noqa: E402


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def configs(tiny_model_dir):
    from verl.workers.config import HFModelConfig, RolloutConfig

    rollout = RolloutConfig(name="hf_cpu", prompt_length=64, response_length=12, tensor_model_parallel_size=1,
                            engine_kwargs={"hf_cpu": {"max_batch_size": 32, "batch_window_ms": 50,
                                                      "max_batch_wait_ms": 500, "num_threads": 1}})
    model = HFModelConfig(path=tiny_model_dir, override_config={"attn_implementation": "sdpa"})
    return rollout, model


@pytest.fixture(scope="module")
def server(ray_local, configs):
    rollout, model = configs
    replica = HFCpuReplica(replica_rank=0, config=rollout, model_config=model, gpus_per_node=1)
    asyncio.run(replica.launch_servers())
    assert replica.server_address == f"hf_cpu://{server_actor_name(0)}"
    yield replica.server_handle
    ray.kill(replica.server_handle)


def gather(*refs):
    return ray.get(list(refs), timeout=300)


def test_concurrent_requests_are_batched_and_log_probs_match_a_direct_forward(server, tiny_model):
    model, tok = tiny_model
    prompts = [tok.encode(p) for p in PROMPTS] * 4
    params = [{"temperature": t, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True,
               "max_tokens": m} for t, m in zip([1.0, 0.7, 0, 1.3] * 4, [12, 5, 8, 12] * 4)]
    before = ray.get(server.get_stats.remote())["batch_sizes"]
    outs = gather(*[server.generate.remote(prompt_ids=p, sampling_params=s, request_id=f"r{i}")
                    for i, (p, s) in enumerate(zip(prompts, params))])
    sizes = ray.get(server.get_stats.remote())["batch_sizes"][len(before):]
    assert sum(sizes) == 16 and max(sizes) >= 8, sizes  # 16 concurrent requests in at most a couple of batches
    for p, s, out in zip(prompts, params, outs):
        assert out.stop_reason == "completed" and 1 <= len(out.token_ids) <= s["max_tokens"]
        if len(out.token_ids) < s["max_tokens"]:
            assert out.token_ids[-1] == tok.eos_token_id
        t = s["temperature"] or 1.0
        assert torch.allclose(torch.tensor(out.log_probs), direct_log_probs(model, p, out.token_ids, t), atol=1e-5)


def test_default_max_tokens_is_the_response_length(server, tiny_model):
    _, tok = tiny_model
    out = ray.get(server.generate.remote(prompt_ids=tok.encode("5"), request_id="d", sampling_params={
        "temperature": 0, "ignore_eos": True, "logprobs": False}))
    assert len(out.token_ids) == 12 and out.log_probs is None


def test_adapter_weight_update_reaches_the_server(server, configs, tiny_model, monkeypatch):
    import copy

    rollout, model_config = configs
    model, tok = tiny_model
    prompt = tok.encode(PROMPTS[1])
    probe_before = ray.get(server.probe_log_probs.remote())

    trained = copy.deepcopy(model)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.05 * torch.randn_like(p))
    monkeypatch.setenv("RANK", "0")
    adapter = HFCpuServerAdapter(config=rollout, model_config=model_config, device_mesh=None)
    assert adapter.replica_rank == 0 and adapter.is_leader_rank
    asyncio.run(adapter.update_weights(((n, t.clone()) for n, t in trained.state_dict().items()), global_steps=7))

    probe_after = ray.get(server.probe_log_probs.remote())
    probe_ids = ray.get(server.probe_sequence.remote())
    expected = direct_log_probs(trained, probe_ids[:1], probe_ids[1:], 1.0)
    assert not torch.allclose(torch.tensor(probe_before), torch.tensor(probe_after), atol=1e-3)
    assert torch.allclose(torch.tensor(probe_after), expected, atol=1e-5)

    out = ray.get(server.generate.remote(prompt_ids=prompt, request_id="w", sampling_params={
        "temperature": 1.0, "max_tokens": 10, "ignore_eos": True}))
    assert out.extra_fields["global_steps"] == 7
    assert torch.allclose(torch.tensor(out.log_probs), direct_log_probs(trained, prompt, out.token_ids, 1.0), atol=1e-5)
    # restore the original weights for the other tests of this module
    asyncio.run(adapter.update_weights(((n, t.clone()) for n, t in model.state_dict().items()), global_steps=8))
    assert torch.allclose(torch.tensor(ray.get(server.probe_log_probs.remote())), torch.tensor(probe_before), atol=1e-6)


def test_follower_ranks_drain_the_generator_without_sending(configs, monkeypatch):
    """With 2 training ranks per replica, rank 3 belongs to replica 1 and only drains the generator."""
    from verl.workers.config import RolloutConfig

    _, model_config = configs
    monkeypatch.setenv("RANK", "3")
    follower = HFCpuServerAdapter(config=RolloutConfig(name="hf_cpu", tensor_model_parallel_size=2),
                                  model_config=model_config, device_mesh=None)
    assert (follower.replica_rank, follower.rollout_rank) == (1, 1)
    drained = []

    def weights():
        for i in range(3):
            drained.append(i)
            yield f"w{i}", torch.zeros(1)

    assert not follower.is_leader_rank
    asyncio.run(follower.update_weights(weights(), global_steps=1))  # no server named for it: must not be contacted
    assert drained == [0, 1, 2] and follower.server_handle is None


def test_bad_weight_names_and_multimodal_requests_fail_clearly(server, tiny_model):
    _, tok = tiny_model
    with pytest.raises(ray.exceptions.RayTaskError, match="no counterpart in the rollout model"):
        ray.get(server.load_weights.remote([("model.not_a_layer.weight", torch.zeros(2))]))
    with pytest.raises(ray.exceptions.RayTaskError, match="text-only"):
        ray.get(server.generate.remote(prompt_ids=tok.encode("5"), request_id="m", sampling_params={},
                                       image_data=["img"]))
    with pytest.raises(ray.exceptions.RayTaskError, match="sampling_params.n="):
        ray.get(server.generate.remote(prompt_ids=tok.encode("5"), request_id="n", sampling_params={"n": 4}))


def test_abort_rejects_until_resume(server, tiny_model):
    _, tok = tiny_model
    ray.get(server.abort_all_requests.remote(reject_request=True))
    aborted = ray.get(server.generate.remote(prompt_ids=tok.encode("5"), request_id="a", sampling_params={}))
    assert aborted.stop_reason == "aborted" and aborted.token_ids == []
    ray.get(server.resume_generation.remote())
    resumed = ray.get(server.generate.remote(prompt_ids=tok.encode("5"), request_id="b", sampling_params={
        "max_tokens": 3, "ignore_eos": True}))
    assert resumed.stop_reason == "completed" and len(resumed.token_ids) == 3
