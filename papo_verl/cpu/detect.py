"""Is this host CPU-only, and did the user ask for the CPU backend?

The answer must be the same in every process of a run (the driver, the TaskRunner, every Ray
worker), including Ray actors that Ray hides GPUs from (``CUDA_VISIBLE_DEVICES=""``). So besides
``torch.cuda.is_available()`` the check looks at host-level evidence — the accelerator device nodes
and driver tools — which stay visible in such actors.

Pure functions of the environment; no verl import.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
from typing import Mapping, Optional

__all__ = [
    "CPU_PLATFORM",
    "PLATFORM_ENV",
    "accelerator_evidence",
    "cpu_backend_active",
    "forced_platform",
    "host_has_accelerator",
]

PLATFORM_ENV = "VERL_PLATFORM"  # honoured by verl's platform manager (_detect_platform_name)
CPU_PLATFORM = "cpu"

# Device nodes created by the NVIDIA, AMD (ROCm/KFD) and Ascend drivers; present in GPU containers too.
_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/davinci0", "/dev/davinci_manager")
_DRIVER_TOOLS = ("nvidia-smi", "rocm-smi", "npu-smi")


def accelerator_evidence() -> list[str]:
    """Reasons to believe this host has a CUDA/ROCm/Ascend accelerator (empty list: CPU-only host)."""
    evidence = []
    try:
        import torch

        if torch.cuda.is_available():
            evidence.append("torch.cuda.is_available()")
    except Exception:  # pragma: no cover - torch is a hard dependency
        pass
    evidence += [f"device node {node}" for node in _DEVICE_NODES if os.path.exists(node)]
    if glob.glob("/dev/dri/renderD*") and os.path.exists("/dev/kfd"):
        evidence.append("ROCm render nodes")
    evidence += [f"{tool} on PATH" for tool in _DRIVER_TOOLS if shutil.which(tool)]
    if importlib.util.find_spec("torch_npu") is not None:
        evidence.append("torch_npu installed")
    return evidence


def host_has_accelerator() -> bool:
    """True when any accelerator evidence is found (see :func:`accelerator_evidence`)."""
    return bool(accelerator_evidence())


def forced_platform(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The platform forced through ``VERL_PLATFORM`` (lower-cased), or None when unset."""
    value = (environ if environ is not None else os.environ).get(PLATFORM_ENV, "").strip().lower()
    return value or None


def cpu_backend_active(environ: Optional[Mapping[str, str]] = None, has_accelerator: Optional[bool] = None) -> bool:
    """Whether papo_verl's CPU backend should register itself in this process.

    * ``VERL_PLATFORM=cpu`` forces it on (even on a GPU host).
    * ``VERL_PLATFORM=<anything else>`` forces it off (the user asked for that accelerator).
    * Otherwise it is on exactly when the host has no accelerator.
    """
    forced = forced_platform(environ)
    if forced is not None:
        return forced == CPU_PLATFORM
    return not (host_has_accelerator() if has_accelerator is None else has_accelerator)
