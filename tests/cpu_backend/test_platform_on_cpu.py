"""Platform selection, engine mapping, the process-group fix, the vLLM rollout registration and the
environment of the vLLM server, each in a fresh interpreter that imports verl the way every Ray worker
does (the plugin loads through verl's entry point)."""

import os
import subprocess
import sys
import textwrap

import pytest

from papo_verl.cpu.detect import accelerator_evidence, cpu_backend_active, forced_platform

cpu_host_only = pytest.mark.skipif(bool(accelerator_evidence()), reason="needs a host without an accelerator")


def run_python(code, **env):
    full_env = {**os.environ, **env}
    for key in ("VERL_PLATFORM", "VERL_ENGINE_DEVICE", "VERL_ENGINE_VENDOR"):
        if key not in env:
            full_env.pop(key, None)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_activation_rules():
    assert cpu_backend_active(environ={}, has_accelerator=False)
    assert not cpu_backend_active(environ={}, has_accelerator=True)
    assert cpu_backend_active(environ={"VERL_PLATFORM": " CPU "}, has_accelerator=True)  # forced on
    assert not cpu_backend_active(environ={"VERL_PLATFORM": "nvidia"}, has_accelerator=False)  # forced off
    assert forced_platform({"VERL_PLATFORM": ""}) is None


@pytest.mark.slow  # a child python imports verl
@cpu_host_only
def test_plain_import_verl_selects_the_cpu_platform_and_the_cpu_vllm_rollout():
    out = run_python("""
        import torch
        import verl
        from verl.utils.device import (get_device_id, get_device_name, get_nccl_backend, get_resource_name,
                                       get_torch_device)
        from verl.plugin.platform import get_platform
        from verl.workers.rollout.replica import RolloutReplicaRegistry
        from verl.workers.rollout.base import get_rollout_class
        from verl.workers.engine import EngineRegistry
        from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead
        import verl.checkpoint_engine.base as ce
        import verl.utils.distributed as dist
        import verl.workers.engine_workers as engine_workers

        dev = get_torch_device()
        x = torch.ones(2).to(get_device_id())
        free, total = dev.mem_get_info()
        dev.empty_cache(); dev.synchronize(); dev.set_device(0); dev.manual_seed(3)
        state = dev.get_rng_state(); dev.set_rng_state(state)
        print("PLATFORM", type(get_platform()).__name__, get_device_name(), get_nccl_backend(), get_device_id(),
              get_resource_name(), x.device, 0 < free <= total, dev.memory_allocated() > 0)
        replica, adapter = RolloutReplicaRegistry.get("vllm"), get_rollout_class("vllm")
        from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMReplica
        from verl.workers.rollout.vllm_rollout.vllm_rollout import ServerAdapter
        print("ROLLOUT", replica.__name__, adapter.__name__, issubclass(replica, vLLMReplica),
              issubclass(adapter, ServerAdapter))
        from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
        args = dict(trainer_mode="sync", trainer_config={}, max_off_policy_threshold=None,
                    max_off_policy_strategy="drop", sampler_kwargs={})
        print("POLL", ReplayBuffer(**args).poll_interval, ReplayBuffer(**args, poll_interval=3.0).poll_interval)
        engine = EngineRegistry.get_engine_cls("language_model", "fsdp2")
        print("ENGINE", issubclass(engine, FSDPEngineWithLMHead))
        wrapped = dist.initialize_global_process_group_ray
        same = wrapped is engine_workers.initialize_global_process_group_ray is ce.initialize_global_process_group_ray
        print("PG", same, getattr(wrapped, "__papo_verl_cpu_backend_fix__", False))
    """)
    assert "PLATFORM PlatformCPU cpu gloo cpu GPU cpu True True" in out
    assert "ROLLOUT CpuVllmReplica CpuServerAdapter True True" in out
    assert "POLL 0.1 3.0" in out  # the CPU default; an explicit value is kept
    assert "ENGINE True" in out
    assert "PG True True" in out


@pytest.mark.slow  # a child python imports verl
def test_forcing_another_platform_leaves_verl_untouched():
    """VERL_PLATFORM=nvidia (what an accelerator host resolves to): no cpu platform, verl's own vLLM rollout,
    no patch, no distribution alias."""
    out = run_python("""
        import os
        import verl
        import papo_verl.integration.plugin
        from verl.utils.device import get_device_name
        from verl.plugin.platform import PlatformRegistry
        from verl.workers.rollout.replica import RolloutReplicaRegistry
        from verl.workers.rollout import base
        import verl.utils.distributed as dist
        import sys
        from papo_verl.cpu.vllm_compat import VllmDistributionAlias
        from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
        args = dict(trainer_mode="sync", trainer_config={}, max_off_policy_threshold=None,
                    max_off_policy_strategy="drop", sampler_kwargs={})
        print("STATE", get_device_name(), PlatformRegistry.get("cpu"), RolloutReplicaRegistry._registry["vllm"].__name__,
              base._ROLLOUT_REGISTRY[("vllm", "async")], os.environ.get("VERL_ENGINE_DEVICE"),
              hasattr(dist.initialize_global_process_group_ray, "__papo_verl_cpu_backend_fix__"),
              "preflight:cpu-backend" in papo_verl.integration.plugin.registered, "platform:cpu" in papo_verl.integration.plugin.registered,
              any(isinstance(f, VllmDistributionAlias) for f in sys.meta_path),
              ReplayBuffer(**args).poll_interval)
    """, VERL_PLATFORM="nvidia")
    assert ("STATE cuda None _load_vllm verl.workers.rollout.vllm_rollout.ServerAdapter None False True False "
            "False 2.0") in out


@pytest.mark.slow  # a child python imports verl
def test_verl_platform_cpu_forces_the_cpu_backend():
    """VERL_PLATFORM=cpu is honoured by verl's platform manager itself; the plugin then activates."""
    out = run_python("""
        import verl
        from verl.utils.device import get_device_name
        import papo_verl.integration.plugin
        print("FORCED", get_device_name(), "rollout_replica:vllm" in papo_verl.integration.plugin.registered)
    """, VERL_PLATFORM="cpu")
    assert "FORCED cpu True" in out


@pytest.mark.slow  # a child python imports verl
@cpu_host_only
def test_process_group_backend_fix_is_needed_and_works():
    """verl's own function builds 'cpu:gloo,cpu:gloo' on CPU and torch rejects it; the wrapper initialises gloo."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = run_python("""
        import torch, torch.distributed as td
        import verl
        from verl.utils.distributed import initialize_global_process_group_ray as patched
        try:
            patched.__wrapped__(timeout_second=None)
        except ValueError as err:
            print("ORIGINAL", "Duplicate device type cpu" in str(err))
        patched(timeout_second=None)
        t = torch.ones(3)
        td.all_reduce(t)
        print("PATCHED", td.is_initialized(), td.get_backend(), td.get_world_size(), t.tolist())
        td.destroy_process_group()
    """, RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    assert "ORIGINAL True" in out
    assert "PATCHED True cpu:gloo 1 [1.0, 1.0, 1.0]" in out


@cpu_host_only
@pytest.mark.slow  # starts Ray in a child python
def test_vllm_server_environment_and_caches(tmp_path):
    """The CPU platform's rollout_env_vars (verl's hook for the vLLM server's environment): caches in the
    project cache (torch's default, already in the environment when plugins load, does not count), malloc
    settings, and the Ray session's folder for vLLM's temporary files and sockets."""
    out = run_python("""
        import os, ray
        import verl
        from verl.plugin.platform import get_platform
        from papo_verl.cpu.platform import project_cache_dir
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
        try:
            env = get_platform().rollout_env_vars()
            ctx = ray.get_runtime_context()
            session = os.path.join(ctx.get_temp_dir(), ctx.get_session_name(), "vllm")
            cache = project_cache_dir()
            print("CACHES", env["VLLM_CACHE_ROOT"] == os.path.join(cache, "vllm"),
                  env["TORCHINDUCTOR_CACHE_DIR"] == os.path.join(cache, "torchinductor") == os.environ["TORCHINDUCTOR_CACHE_DIR"])
            print("SESSION", env["TMPDIR"] == env["VLLM_RPC_BASE_PATH"] == session, os.path.isdir(session))
            print("MALLOC", env["MALLOC_MMAP_THRESHOLD_"], env["MALLOC_TRIM_THRESHOLD_"])
        finally:
            ray.shutdown()
    """)
    assert "CACHES True True" in out and "SESSION True True" in out and "MALLOC 131072 131072" in out
    kept = run_python("""
        import os
        import verl
        print("KEPT", os.environ["TORCHINDUCTOR_CACHE_DIR"], os.environ["VLLM_CACHE_ROOT"])
    """, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"), VLLM_CACHE_ROOT=str(tmp_path / "vllm"))
    assert f"KEPT {tmp_path / 'inductor'} {tmp_path / 'vllm'}" in kept
