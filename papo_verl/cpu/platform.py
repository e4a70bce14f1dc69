"""verl platform ``cpu``: gloo, no-op device calls and host-memory fallbacks.

Registered through verl's public ``PlatformRegistry.register("cpu")``. verl's platform manager
probes registered platforms in registration order (nvidia, huawei, amd, then this one), so on a
host with an accelerator the built-in platform still wins; ``VERL_PLATFORM=cpu`` selects it
explicitly.

Ray: the CPU platform reports its accelerator resource as ``GPU`` so verl's resource-pool
bookkeeping (which only counts ``GPU``/``NPU``) works with *logical* GPUs declared to Ray
(``ray_kwargs.ray_init.num_gpus=N`` together with ``trainer.n_gpus_per_node=N``); no process ever
touches CUDA.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Optional

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

from papo_verl.cpu.detect import cpu_backend_active

__all__ = ["CpuDeviceModule", "PlatformCPU", "register_platform", "CPU_DEVICE_MODULE"]


def _host_memory() -> tuple[int, int]:
    """(available, total) host memory in bytes."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.available), int(vm.total)
    except Exception:  # pragma: no cover - psutil is a ray dependency
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return pages * page_size, pages * page_size


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # pragma: no cover
        return 0


class CpuDeviceModule(ModuleType):
    """``torch.cpu`` plus the ``torch.cuda``-style calls verl makes on ``get_torch_device()``.

    Cache/allocator calls are no-ops; memory queries report host memory (``mem_get_info`` →
    (available, total) bytes, ``memory_allocated``/``memory_reserved`` → this process's RSS);
    RNG state calls map to torch's global CPU generator. Everything else is forwarded to
    ``torch.cpu`` (``synchronize``, ``current_stream``, ``Stream``, ``Event``, ``device_count`` …).
    """

    def __init__(self) -> None:
        super().__init__("papo_verl.cpu.device_module", "torch.cpu with no-op accelerator calls (papo_verl)")
        self.__file__ = __file__

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cpu, name)

    # --- allocator / cache: nothing to do on the host --------------------------------------------
    def empty_cache(self) -> None:
        return None

    def ipc_collect(self) -> None:
        return None

    def set_per_process_memory_fraction(self, fraction: float, device: Any = None) -> None:
        return None

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        return None

    def reset_max_memory_allocated(self, device: Any = None) -> None:
        return None

    # --- memory queries: host memory ------------------------------------------------------------
    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        return _host_memory()

    def memory_allocated(self, device: Any = None) -> int:
        return _rss()

    def memory_reserved(self, device: Any = None) -> int:
        return _rss()

    def max_memory_allocated(self, device: Any = None) -> int:
        return _rss()

    def max_memory_reserved(self, device: Any = None) -> int:
        return _rss()

    def memory_stats(self, device: Any = None) -> dict:
        return {}

    # --- device identity --------------------------------------------------------------------------
    def set_device(self, device: Any) -> None:
        return None

    def current_device(self) -> str:
        return "cpu"

    def is_available(self) -> bool:
        return True

    def get_device_name(self, device: Any = None) -> str:
        return "cpu"

    def get_device_capability(self, device: Any = None) -> tuple[None, None]:
        return (None, None)

    # --- RNG ---------------------------------------------------------------------------------------
    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def get_rng_state(self, device: Any = None) -> torch.Tensor:
        return torch.get_rng_state()

    def set_rng_state(self, new_state: torch.Tensor, device: Any = None) -> None:
        torch.set_rng_state(new_state)


CPU_DEVICE_MODULE = CpuDeviceModule()


class PlatformCPU(PlatformBase):
    """verl platform for CPU-only hosts (device ``cpu``, backend ``gloo``, logical Ray ``GPU``s)."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return CPU_DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Probed after the built-in platforms; claims the host only when papo_verl's CPU
        # backend is active (no accelerator anywhere on the host, or VERL_PLATFORM=cpu).
        return cpu_backend_active()

    def current_device(self) -> str:  # verl does tensor.to(get_device_id()): must be a device
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: Optional[int] = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[None, None]:
        return (None, None)

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"  # what Ray sets for the logical GPUs; never read by torch here

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_gpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def register_platform() -> str:
    """Register :class:`PlatformCPU` as verl platform ``cpu`` (idempotent); returns the registered name."""
    if PlatformRegistry.get("cpu") is not PlatformCPU:
        PlatformRegistry.register(platform="cpu")(PlatformCPU)
    return "platform:cpu"
