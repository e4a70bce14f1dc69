"""CPU backend: run verl 0.9's real v1 trainer (Ray, TransferQueue, FSDP2 over gloo, agent loop,
weight sync) on a machine without an accelerator.

Loaded by :mod:`papo_verl.plugin` (first of its components, so the platform is registered before
anything asks verl for the device). :func:`register` always adds the pre-Ray accelerator check; the
backend itself activates only when the host has no accelerator or ``VERL_PLATFORM=cpu`` is set —
on a CUDA host nothing else changes. When active it registers:

* verl platform ``cpu`` (public ``PlatformRegistry``; :mod:`papo_verl.cpu.platform`);
* the engine-device mapping ``VERL_ENGINE_DEVICE=cuda``/``VERL_ENGINE_VENDOR=nvidia`` (verl's own
  overrides; the FSDP2 engines are device-agnostic);
* the ``"cpu:gloo"`` process-group fix (version-guarded wrap; :mod:`papo_verl.cpu.compat`);
* rollout backend ``hf_cpu``: ``RolloutReplicaRegistry.register("hf_cpu", ...)`` (public) and the
  worker-side adapter in ``_ROLLOUT_REGISTRY`` (private, version-guarded; :mod:`papo_verl.cpu.rollout`).

The CPU settings of a run (``rollout.name=hf_cpu``, FSDP2, sdpa, logical GPUs for Ray, fp32, small
worker counts) live in ``papo_verl/config/papo_trainer_cpu.yaml``.
"""

from __future__ import annotations

from typing import Optional

from papo_verl.cpu.detect import cpu_backend_active, host_has_accelerator

__all__ = ["ROLLOUT_NAME", "activate", "cpu_backend_active", "host_has_accelerator", "register"]

ROLLOUT_NAME = "hf_cpu"
ADAPTER_FQN = "papo_verl.cpu.rollout.HFCpuServerAdapter"


def _load_replica_class():
    from papo_verl.cpu.rollout import HFCpuReplica

    return HFCpuReplica


def activate(verl_version: Optional[str] = None) -> list[str]:
    """Register the CPU platform, engine mapping, process-group fix and ``hf_cpu``; returns the names.

    Raises ``UnsupportedVerlInternals`` on a verl other than 0.9.x, and ``RuntimeError`` when verl's
    platform was already resolved to another device in this process (something asked for the
    device before this plugin loaded).
    """
    from verl.plugin.platform import get_platform
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    from papo_verl.cpu.compat import (
        map_engine_device,
        patch_process_group_backend,
        register_rollout_adapter,
        require_verl_internals,
    )
    from papo_verl.cpu.platform import register_platform

    # refuse before changing anything: the backend is all-or-nothing
    require_verl_internals("initialize_global_process_group_ray and _ROLLOUT_REGISTRY", verl_version)
    names = [register_platform(), map_engine_device(), patch_process_group_backend(verl_version),
             register_rollout_adapter(ROLLOUT_NAME, ADAPTER_FQN, verl_version)]
    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica_class)
    names.append(f"rollout_replica:{ROLLOUT_NAME}")
    platform = get_platform()
    if platform.device_name != "cpu":
        raise RuntimeError(
            f"verl's platform was resolved to {type(platform).__name__} ({platform.device_name}) before "
            "papo_verl's CPU backend registered the cpu platform (an import asked verl for the device first). "
            "Make papo_verl.plugin the first verl plugin to load, e.g. VERL_USE_EXTERNAL_MODULES=papo_verl.plugin."
        )
    return names


def register() -> list[str]:
    """Plugin component entry: the pre-Ray check always; the backend when :func:`cpu_backend_active`."""
    from papo_verl import preflight
    from papo_verl.cpu.checks import check_cpu_backend

    preflight.register_check(check_cpu_backend)
    names = ["preflight:cpu-backend"]
    if cpu_backend_active():
        names += activate()
    return names
