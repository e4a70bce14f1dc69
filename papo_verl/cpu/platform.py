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
        return False  # verl then syncs weights to vLLM through POSIX shared memory (bucketed_weight_transfer)

    def rollout_env_vars(self) -> dict[str, str]:
        """Environment of verl's vLLM server actors (and so of vLLM's engine processes) on CPU.

        The cache folders of :func:`redirect_caches`, :data:`VLLM_MALLOC_ENV`, and the Ray session's
        ``vllm`` folder as the engine's temporary folder and IPC socket folder
        (:func:`papo_verl.cpu.vllm_compat.session_runtime_dir`).
        """
        from papo_verl.cpu.vllm_compat import session_runtime_dir

        runtime_dir = session_runtime_dir()
        env = {key: os.environ[key] for key in CACHE_ENV if key in os.environ}
        env.update({key: os.environ.get(key, value) for key, value in VLLM_MALLOC_ENV.items()})
        return {**env, "TMPDIR": runtime_dir, "VLLM_RPC_BASE_PATH": runtime_dir}

    def cudart(self) -> Any:
        return None


def project_cache_dir() -> str:
    """``$PAPO_CACHE_DIR``; else ``<checkout>/.cache`` for a source checkout; else ``~/.cache/papo_verl``."""
    if os.environ.get("PAPO_CACHE_DIR"):
        return os.environ["PAPO_CACHE_DIR"]
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.isfile(os.path.join(checkout, "setup.py")) and os.path.isdir(os.path.join(checkout, "papo_verl")):
        return os.path.join(checkout, ".cache")
    return os.path.join(os.path.expanduser("~"), ".cache", "papo_verl")


CACHE_ENV = ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR")


def redirect_caches(environ: Optional[dict] = None) -> str:
    """Point vLLM's and torch.compile's caches into :func:`project_cache_dir` (a value already set wins).

    ``VLLM_CACHE_ROOT`` and ``TORCHINDUCTOR_CACHE_DIR`` (vLLM compiles its sampler with torch.compile
    even in eager mode; a cold compile costs ~10 s and a C++ compiler at ~0.5 GiB) would otherwise
    land in ``~/.cache/vllm`` and ``/tmp/torchinductor_<user>``. Set in every process of a run when
    the plugin loads, before anything compiles; the workers of a local Ray cluster inherit the
    driver's values.
    """
    environ = os.environ if environ is None else environ
    cache = project_cache_dir()
    environ.setdefault("VLLM_CACHE_ROOT", os.path.join(cache, "vllm"))
    # importing torch._dynamo (verl imports it through tensordict, before any plugin) already wrote torch's
    # default into the environment: that value counts as unset
    if environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, _torch_default_inductor_cache()):
        environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(cache, "torchinductor")
    return f"caches:{cache}"


def _torch_default_inductor_cache() -> Optional[str]:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        return os.path.abspath(default_cache_dir())
    except Exception:  # pragma: no cover - a torch without it: only an explicit value is kept
        return None


# glibc keeps freed memory of vLLM's start-up (model warm-up) in the heap of the engine process (~0.4 GiB
# for the demo policy); a fixed mmap threshold returns large blocks to the system when they are freed
VLLM_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def register_platform() -> str:
    """Register :class:`PlatformCPU` as verl platform ``cpu`` (idempotent); returns the registered name."""
    if PlatformRegistry.get("cpu") is not PlatformCPU:
        PlatformRegistry.register(platform="cpu")(PlatformCPU)
    return "platform:cpu"
