"""PAPO's production paths: the per-token vocabulary statistics (dispatched here, behind
``algorithm.papo.stats_backend``) and the driver-side advantage (:mod:`papo_verl.kernels.advantage`).

PAPO needs, per response token, from the temperature-scaled logits ``z = logits / T`` and
``π = softmax(z)``: ``log π_k``, ``H``, ``Σπ²`` and ``Σπ² log π`` (docs/algorithm.md §1). Both backends read
the logits once per token and never materialise the softmax of the whole ``[N, V]`` batch:

* ``"triton"`` — :mod:`papo_verl.kernels.triton_stats`: one streaming pass per row (online
  max/log-sum-exp rescaling per vocabulary tile, float32 accumulation), any float dtype. CUDA only
  (or CPU under ``TRITON_INTERPRET=1``, for tests).
* ``"torch"`` — :func:`papo_verl.kernels.logit_sums.chunked_logit_sums`: chunked float32 torch; on
  CPU the chunk is sized to stay in cache. Works everywhere.
* ``"auto"`` (default) — Triton when the logits are on CUDA and ``triton`` imports, else torch.
  If the Triton kernel fails to compile or launch, ``auto`` falls back to torch for the rest of the
  process (logged once); an explicitly requested ``"triton"`` raises instead.

Both backends compute what :func:`papo_verl.algorithm.papo.logit_statistics` defines (the whole-tensor reference
the tests check them against). The driver-side advantage's row-chunked two-pass path is
:mod:`papo_verl.kernels.advantage`.

Which path runs is logged once per process (logger ``papo_verl``, level WARNING so that it shows
under verl's default log level), e.g.::

    papo_verl: PAPO logit statistics [stats] run on the one-pass Triton kernel (cuda; algorithm.papo.stats_backend=auto)

Gradient: **none**. Every output is computed under ``torch.no_grad()`` from detached logits: these
are θ_old statistics (the advantage's polarity) and metrics (polarity flips during the update),
which the PAPO loss reads as constants. A caller that needs a gradient through the entropy must
use verl's own differentiable entropy (the engine does when ``entropy_coeff != 0``).
"""

from __future__ import annotations

import importlib
import logging
from typing import Optional, Union

import torch
from torch import Tensor

from papo_verl.algorithm.papo import LogitStats
from papo_verl.algorithm.config import STATS_BACKENDS
from papo_verl.kernels.logit_sums import chunked_logit_sums

__all__ = ["CONFIG_KEY", "STATS_BACKENDS", "logit_partial_sums_rows", "logit_stats", "resolve_backend",
           "triton_status"]

logger = logging.getLogger("papo_verl")

CONFIG_KEY = "algorithm.papo.stats_backend"

_TRITON_MODULE = "papo_verl.kernels.triton_stats"
_triton_import_error: Optional[str] = None  # cached reason when `import triton` failed
_triton_runtime_error: Optional[str] = None  # set when the kernel failed under "auto": torch from then on
_logged: set = set()


def triton_status() -> tuple[bool, str]:
    """``(usable, reason)``: whether :mod:`papo_verl.kernels.triton_stats` imports (cached on failure)."""
    global _triton_import_error
    if _triton_import_error is None:
        try:
            _triton_module()
        except Exception as exc:  # ImportError, or a broken triton install
            _triton_import_error = f"{type(exc).__name__}: {exc}"
    if _triton_import_error is not None:
        return False, f"triton is not usable ({_triton_import_error})"
    if _triton_runtime_error is not None:
        return False, f"the Triton kernel failed earlier in this process ({_triton_runtime_error})"
    return True, "triton imports"


def _triton_module():
    return importlib.import_module(_TRITON_MODULE)


def resolve_backend(backend: str, device: Union[str, torch.device]) -> tuple[str, str]:
    """Map the configured backend and the logits' device to the path that runs.

    Returns:
        ``(path, reason)`` with ``path`` in ``{"triton", "torch"}``.

    Raises:
        ValueError: ``backend`` is not one of :data:`papo_verl.algorithm.config.STATS_BACKENDS`.
        RuntimeError: ``backend == "triton"`` but Triton is unusable here (the message names
            ``algorithm.papo.stats_backend`` and the fix).
    """
    if backend not in STATS_BACKENDS:
        raise ValueError(f"{CONFIG_KEY} must be one of {STATS_BACKENDS}, got {backend!r}")
    device = torch.device(device)
    if backend == "torch":
        return "torch", "requested"
    usable, why = triton_status()
    if backend == "triton":
        if not usable:
            raise RuntimeError(
                f"{CONFIG_KEY}=triton, but {why}. Install Triton (`pip install triton`, it ships with CUDA "
                f"builds of torch) or set {CONFIG_KEY}=auto (falls back to the chunked torch path) or torch."
            )
        if device.type != "cuda" and not _triton_module().INTERPRETED:
            raise RuntimeError(
                f"{CONFIG_KEY}=triton needs the logits on a CUDA device, got {device.type} (Triton runs CPU "
                f"tensors only in its interpreter, TRITON_INTERPRET=1, for tests). Set {CONFIG_KEY}=auto or torch."
            )
        return "triton", "requested"
    if device.type != "cuda":
        return "torch", f"the logits are on {device.type}; the Triton kernel runs on CUDA"
    if not usable:
        return "torch", f"{why}; install triton for the one-pass kernel"
    return "triton", "CUDA logits and triton available"


def _log_once(what: str, path: str, device: torch.device, backend: str, reason: str) -> None:
    key = (what, path, device.type, backend, reason)
    if key in _logged:
        return
    _logged.add(key)
    name = "the one-pass Triton kernel" if path == "triton" else "the chunked torch path"
    logger.warning("papo_verl: PAPO logit statistics [%s] run on %s (%s; %s=%s: %s)",
                   what, name, device.type, CONFIG_KEY, backend, reason)


def _run(what: str, logits: Tensor, labels: Optional[Tensor], temperature, valid: Optional[Tensor],
         backend: str, chunk_size: Optional[int], partial_sums: bool) -> Tensor:
    global _triton_runtime_error
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, V], got shape {tuple(logits.shape)}")
    path, reason = resolve_backend(backend, logits.device)
    logits = logits.detach()
    if path == "triton":
        try:
            out = _triton_module().triton_logit_sums(logits, labels, temperature, valid=valid,
                                                     partial_sums=partial_sums)
            _log_once(what, path, logits.device, backend, reason)
            return out
        except (ValueError, TypeError, torch.cuda.OutOfMemoryError):
            raise  # bad inputs or out of memory: the torch path would not do better
        except Exception as exc:  # compilation / launch failure (driver, architecture, Triton version)
            if backend == "triton":
                raise RuntimeError(f"{CONFIG_KEY}=triton: the Triton kernel failed ({type(exc).__name__}: {exc}); "
                                   f"set {CONFIG_KEY}=auto or torch to use the chunked torch path") from exc
            _triton_runtime_error = f"{type(exc).__name__}: {exc}"
            path, reason = "torch", f"the Triton kernel failed ({_triton_runtime_error}); falling back"
    out = chunked_logit_sums(logits, labels, temperature, valid=valid, chunk_size=chunk_size,
                             partial_sums=partial_sums)
    _log_once(what, path, logits.device, backend, reason)
    return out


@torch.no_grad()
def logit_stats(
    logits: Tensor,
    labels: Optional[Tensor] = None,
    temperature: Union[float, Tensor] = 1.0,
    *,
    valid: Optional[Tensor] = None,
    backend: str = "auto",
    chunk_size: Optional[int] = None,
) -> LogitStats:
    """``log π_k``, ``H``, ``Σπ²``, ``Σπ² log π`` of ``softmax(logits / T)`` for every row, one read of the logits.

    Args:
        logits: ``[N, V]`` raw logits of any float dtype (not modified; gradient not propagated).
        labels: ``[N]`` sampled token ids for ``log π_k``, or ``None`` (then ``log_prob`` is ``None``).
        temperature: scalar, or ``[N]`` per-token temperatures (> 0).
        valid: ``[N]`` bool; masked rows are skipped and get 0 in every output.
        backend: ``"auto"``, ``"triton"`` or ``"torch"`` (``algorithm.papo.stats_backend``).
        chunk_size: tokens per chunk of the torch path (ignored by Triton); default cache-sized on
            CPU, :func:`papo_verl.kernels.logit_sums.default_chunk_size` on GPU.

    Returns:
        :class:`papo_verl.algorithm.papo.LogitStats`, each field ``[N]`` float32 on the logits' device, no gradient.
    """
    out = _run("stats", logits, labels, temperature, valid, backend, chunk_size, partial_sums=False)
    return LogitStats(out[0] if labels is not None else None, out[1], out[2], out[3])


@torch.no_grad()
def logit_partial_sums_rows(
    logits: Tensor,
    temperature: Union[float, Tensor] = 1.0,
    *,
    valid: Optional[Tensor] = None,
    backend: str = "auto",
    chunk_size: Optional[int] = None,
) -> Tensor:
    """Shift-invariant partial sums of each row of a vocabulary shard (tensor-parallel logits).

    Args:
        logits: ``[N, V_shard]`` logits of one vocabulary shard, any float dtype.
        temperature, valid, backend, chunk_size: as :func:`logit_stats`.

    Returns:
        ``[N, 5]`` float32 ``(m, Z, Σe(z−m), Σe², Σe²(z−m))`` with ``z = logits / T``, ``m = max z``,
        ``e = exp(z − m)`` over the shard; 0 on masked rows; no gradient. Shards merge exactly with
        :func:`papo_verl.kernels.logit_sums.merge_logit_partial_sums`, or across ranks with a MAX all-reduce of ``m``
        followed by a SUM all-reduce of the sums rescaled by ``exp(m − m_max)`` (and ``exp(2(m − m_max))``
        for the squared terms); :func:`~papo_verl.kernels.logit_sums.finalize_logit_sums` then gives the statistics.
    """
    return _run("partial sums", logits, None, temperature, valid, backend, chunk_size, partial_sums=True)
