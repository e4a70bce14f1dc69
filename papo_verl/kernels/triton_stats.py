"""One-pass Triton kernel for PAPO's per-token vocabulary statistics (docs/algorithm.md §1).

For every row of ``[N, V]`` logits (any float dtype) and ``π = softmax(logits / T)`` the kernel
reads the row **once**, tile by tile, and returns ``log π_k`` (optional), ``H``, ``Σπ²`` and
``Σπ² log π`` — or, for a vocabulary shard of tensor-parallel logits, the five shift-invariant
partial sums of :mod:`papo_verl.kernels.logit_sums`. Nothing of size ``V`` is ever written.

Algorithm (one program per row; base-2 units so that the only transcendental per logit is one
``exp2``): with ``y = x · log2(e) / T``, the running maximum ``m`` and ``d = y − m``, the program
keeps four float32 scalars ``Z = Σ 2^d``, ``S₁ = Σ 2^d d``, ``S₂ = Σ 2^{2d}``, ``S₃ = Σ 2^{2d} d``.
A tile with a larger maximum ``m'`` first rescales them (online log-sum-exp): with
``δ = m − m'`` and ``a = 2^δ``::

    S₁ ← a (S₁ + δ Z),   Z ← a Z,   S₃ ← a² (S₃ + δ S₂),   S₂ ← a² S₂

then adds the tile's four sums (one fused tree reduction). At the end, in natural units
(``ln 2`` factors), ``log Z``, ``H = log Z − S₁/Z``, ``Σπ² = S₂/Z²`` and
``Σπ² log π = S₃/Z² − log Z · Σπ²`` — the same finalisation as :func:`papo_verl.kernels.logit_sums.finalize_logit_sums`.
``d`` is clamped at −256 (``2^−256`` is 0 in float32), so ``−inf`` logits contribute exact zeros
rather than ``0 · −inf = NaN``; NaN logits still propagate to NaN statistics.

Per logit: one load, one FMA, one max, one ``exp2`` and five multiply/adds, all float32 — about
10 FLOP/element against 2 bytes of bf16, so on an H200 (≈4.8 TB/s, ≈67 TFLOP/s FP32) the kernel is
bound by the read of the logits. Block sizes are autotuned per vocabulary size among configs
chosen for Hopper-class GPUs (16 or 32 logits per thread, 4–32 warps, optional software prefetch
of the next tile; all compile for sm_90a in ≤ 64 registers without spills, checked by the tests
with the ptxas bundled with triton). The full tiles run unmasked; only the ragged last tile is
masked. 16-byte vectorised loads need the row stride to be a multiple of 16 elements (true for
every common vocabulary: 32000, 32768, 151936, 152064, ...).

Gradient: none. The outputs are θ_old statistics and metrics; the PAPO loss reads them as
constants. Callers must not expect autograd to flow through them (the dispatcher in
:mod:`papo_verl.kernels` documents and enforces this by detaching the input).

Interpreter: Triton chooses between compiler and interpreter when ``@triton.jit`` runs — for its
own library functions too, at ``import triton``. To run the kernel on CPU tensors, set
``TRITON_INTERPRET=1`` before triton is first imported in the process (the tests use a child
process); :data:`INTERPRETED` records which mode this module was built in.
"""

from __future__ import annotations

import os
from typing import Optional, Union

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["INTERPRETED", "autotune_configs", "triton_logit_sums"]

#: True when this module's kernels were built for Triton's CPU interpreter (TRITON_INTERPRET=1).
try:
    INTERPRETED = bool(triton.knobs.runtime.interpret)
except AttributeError:  # Triton < 3.4 has no knobs module
    INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")

_LOG2E = 1.4426950408889634  # log2(e)


# ----------------------------------------------------------------------------------------------
# Kernel
# ----------------------------------------------------------------------------------------------
@triton.jit
def _add4(a0, a1, a2, a3, b0, b1, b2, b3):
    return a0 + b0, a1 + b1, a2 + b2, a3 + b3


@triton.jit
def _tile_update(x, scale, m, big_z, s1, s2, s3, mask, MASKED: tl.constexpr):
    """Fold one tile ``x`` (float32 raw logits) into the running ``(m, Z, S₁, S₂, S₃)`` (base 2)."""
    if MASKED:  # lanes past V were loaded as -inf; keep them there whatever the load returned
        x = tl.where(mask, x, float("-inf"))
    # max(x) * scale == max(x * scale) for scale > 0 (rounding is monotone): one multiply saved.
    m_new = tl.maximum(m, tl.max(x, 0) * scale)
    d = tl.maximum(x * scale - m_new, -256.0, propagate_nan=tl.PropagateNan.ALL)
    e = tl.exp2(d)
    e2 = e * e
    t0, t1, t2, t3 = tl.reduce((e, e * d, e2, e2 * d), 0, _add4)
    delta = m - m_new  # <= 0
    a = tl.exp2(delta)
    a2 = a * a
    s1 = a * (s1 + delta * big_z) + t1
    big_z = a * big_z + t0
    s3 = a2 * (s3 + delta * s2) + t3
    s2 = a2 * s2 + t2
    return m_new, big_z, s1, s2, s3


@triton.jit
def _logit_sums_kernel(
    X,  # [N, V] logits, unit stride along V
    stride_xn,  # elements between rows of X
    TEMPERATURE,  # [N] float32 per-token temperatures (read only if PER_TOKEN_T)
    scale_scalar,  # log2(e) / T for a scalar temperature
    LABELS,  # [N] int label ids (read only if HAS_LABELS)
    VALID,  # [N] uint8 row mask (read only if HAS_VALID)
    OUT,  # stats: [4, N] float32 rows (log π_k, H, Σπ², Σπ² log π); partial: [N, 5] float32
    N,
    V,
    PER_TOKEN_T: tl.constexpr,
    HAS_LABELS: tl.constexpr,
    HAS_VALID: tl.constexpr,
    PARTIAL: tl.constexpr,
    BLOCK_V: tl.constexpr,
    PREFETCH: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    if PER_TOKEN_T:
        scale = 1.4426950408889634 / tl.maximum(tl.load(TEMPERATURE + row).to(tl.float32), 1e-8)
    else:
        scale = scale_scalar
    n_cols = V
    if HAS_VALID:
        row_ok = tl.load(VALID + row) != 0
        n_cols = tl.where(row_ok, V, 0)
    else:
        row_ok = row < N
    x_row = X + row * stride_xn
    offs = tl.arange(0, BLOCK_V)

    # Finite "−inf" for the running max: the first rescale multiplies zeros by 2**(−1e30) = 0.
    m = -1.0e30
    big_z = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    n_full = (n_cols // BLOCK_V) * BLOCK_V
    if PREFETCH:
        # Software pipelining: the next tile's load is issued before this tile's reductions, so
        # every warp keeps a tile in flight through the barriers. The last iteration re-reads the
        # last full tile (an L2 hit) instead of masking every load.
        x_next = tl.load(x_row + offs, mask=offs < n_full, other=0.0)
        for start in range(0, n_full, BLOCK_V):
            x = x_next.to(tl.float32)
            x_next = tl.load(x_row + tl.minimum(start + BLOCK_V, n_full - BLOCK_V) + offs)
            m, big_z, s1, s2, s3 = _tile_update(x, scale, m, big_z, s1, s2, s3, offs < BLOCK_V, False)
    else:
        for start in range(0, n_full, BLOCK_V):
            x = tl.load(x_row + start + offs).to(tl.float32)
            m, big_z, s1, s2, s3 = _tile_update(x, scale, m, big_z, s1, s2, s3, offs < BLOCK_V, False)
    if n_full < n_cols:  # ragged last tile
        cols = n_full + offs
        tail = cols < n_cols
        x = tl.load(x_row + cols, mask=tail, other=float("-inf")).to(tl.float32)
        m, big_z, s1, s2, s3 = _tile_update(x, scale, m, big_z, s1, s2, s3, tail, True)

    ln2 = 0.6931471805599453
    if PARTIAL:
        base = OUT + row * 5
        tl.store(base + 0, tl.where(row_ok, m * ln2, 0.0))
        tl.store(base + 1, tl.where(row_ok, big_z, 0.0))
        tl.store(base + 2, tl.where(row_ok, s1 * ln2, 0.0))
        tl.store(base + 3, tl.where(row_ok, s2, 0.0))
        tl.store(base + 4, tl.where(row_ok, s3 * ln2, 0.0))
    else:
        big_z = tl.where(row_ok, big_z, 1.0)  # skipped rows: finite dummies, stored as 0 below
        log_z = tl.log(big_z)
        inv_z2 = 1.0 / (big_z * big_z)
        entropy = log_z - s1 * ln2 / big_z
        sum_sq = s2 * inv_z2
        sum_sq_log = s3 * ln2 * inv_z2 - log_z * sum_sq
        if HAS_LABELS:
            label = tl.load(LABELS + row).to(tl.int64)
            in_range = (label >= 0) & (label < V) & row_ok
            x_k = tl.load(x_row + label, mask=in_range, other=float("nan")).to(tl.float32)
            log_prob = (x_k * scale - m) * ln2 - log_z
            tl.store(OUT + row, tl.where(row_ok, log_prob, 0.0))
        tl.store(OUT + N + row, tl.where(row_ok, entropy, 0.0))
        tl.store(OUT + 2 * N + row, tl.where(row_ok, sum_sq, 0.0))
        tl.store(OUT + 3 * N + row, tl.where(row_ok, sum_sq_log, 0.0))


# ----------------------------------------------------------------------------------------------
# Autotuning (GPU only; the interpreter runs one explicit config)
# ----------------------------------------------------------------------------------------------
# (BLOCK_V, num_warps): 8–32 logits per thread. Hopper needs ≳32 KiB of loads in flight per SM to
# approach peak bandwidth; a program holds one tile in registers and the SM runs 1–4 programs.
# Register use checked with ptxas for sm_90a (Triton 3.9, bf16 and fp32): 40–64 registers, no
# spills. PREFETCH holds one more tile per thread, so it is offered only at 16 logits per thread
# (48–59 registers); at 32 per thread it would exceed 64 registers and spill with 32 warps.
# (num_stages is irrelevant: Triton's pipeliner leaves these loads alone, the PTX is identical.)
_TILE_SHAPES = ((2048, 4), (4096, 4), (4096, 8), (8192, 8), (8192, 16), (16384, 16), (16384, 32), (32768, 32))


def autotune_configs() -> list:
    """The :class:`triton.Config` list searched on GPU (pruned per vocabulary size at run time)."""
    configs = []
    for block, warps in _TILE_SHAPES:
        per_thread = block // (32 * warps)
        for prefetch in (False, True) if per_thread <= 16 else (False,):
            configs.append(triton.Config({"BLOCK_V": block, "PREFETCH": prefetch}, num_warps=warps, num_stages=1))
    return configs


def _prune_configs(configs, named_args, **kwargs):
    """Drop tiles more than twice the (power-of-two rounded) vocabulary: they only add masked lanes.

    On ROCm (64-lane wavefronts, at most 1024 threads per block) configs above 16 warps cannot launch.
    """
    vocab = int(named_args["V"])
    limit = max(2048, 2 * triton.next_power_of_2(max(1, vocab)))
    kept = [c for c in configs if c.kwargs["BLOCK_V"] <= limit]
    if getattr(torch.version, "hip", None):
        kept = [c for c in kept if c.num_warps <= 16]
    return kept or configs[:1]


_autotuned_kernel = None


def _get_autotuned_kernel():
    global _autotuned_kernel
    if _autotuned_kernel is None:
        _autotuned_kernel = triton.autotune(
            configs=autotune_configs(),
            key=["V", "PER_TOKEN_T", "HAS_LABELS", "HAS_VALID", "PARTIAL"],  # + the tensors' dtypes
            prune_configs_by={"early_config_prune": _prune_configs},
        )(_logit_sums_kernel)
    return _autotuned_kernel


# ----------------------------------------------------------------------------------------------
# Host wrapper
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def triton_logit_sums(
    logits: Tensor,
    labels: Optional[Tensor] = None,
    temperature: Union[float, Tensor] = 1.0,
    *,
    valid: Optional[Tensor] = None,
    partial_sums: bool = False,
    block_v: Optional[int] = None,
    num_warps: Optional[int] = None,
    prefetch: bool = False,
) -> Tensor:
    """Launch the one-pass kernel on ``[N, V]`` logits.

    Args:
        logits: ``[N, V]`` float16/bfloat16/float32/float64 logits (CUDA, or CPU under the
            interpreter); any row stride, unit stride along V (else a contiguous copy is made).
        labels: ``[N]`` integer token ids for ``log π_k`` (ignored with ``partial_sums``); an id
            outside ``[0, V)`` gives NaN for that row (no bounds check on the host: no sync).
        temperature: Python float, 0-d/1-element tensor, or ``[N]`` per-token tensor (> 0).
        valid: ``[N]`` bool; masked rows are not read and get 0 in every output.
        partial_sums: return the ``[N, 5]`` shard partial sums ``(m, Z, Σe(z−m), Σe², Σe²(z−m))``
            (natural units, as :mod:`papo_verl.kernels.logit_sums` defines them) instead of statistics.
        block_v, num_warps, prefetch: force one config (default: autotuned on GPU; interpreted:
            ``block_v=128, num_warps=1``).

    Returns:
        ``[4, N]`` float32 ``(log π_k, H, Σπ², Σπ² log π)`` (row 0 is 0 without labels), or ``[N, 5]``.
        No gradient.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, V], got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a float tensor, got {logits.dtype}")
    x = logits.detach()
    if x.stride(-1) != 1:
        x = x.contiguous()
    n, vocab = x.shape
    device = x.device
    out = torch.zeros((n, 5) if partial_sums else (4, n), dtype=torch.float32, device=device)
    if n == 0 or vocab == 0:
        return out

    per_token_t = isinstance(temperature, Tensor) and temperature.numel() > 1
    if per_token_t:
        t_arg = temperature.detach().reshape(-1).to(device=device, dtype=torch.float32).contiguous()
        if t_arg.numel() != n:
            raise ValueError(f"temperature has {t_arg.numel()} entries for {n} tokens")
        scale = 1.0
    else:
        t_value = float(temperature.reshape(-1)[0]) if isinstance(temperature, Tensor) else float(temperature)
        if not t_value > 0:
            raise ValueError(f"temperature must be > 0, got {t_value}")
        t_arg = out  # placeholder pointer, never read
        scale = _LOG2E / t_value
    has_labels = labels is not None and not partial_sums
    label_arg = labels.detach().reshape(-1).to(device=device).contiguous() if has_labels else out
    if has_labels and label_arg.numel() != n:
        raise ValueError(f"labels has {label_arg.numel()} entries for {n} tokens")
    if has_labels and label_arg.is_floating_point():
        raise TypeError(f"labels must be integer token ids, got {label_arg.dtype}")
    has_valid = valid is not None
    valid_arg = valid.detach().reshape(-1).to(device=device, dtype=torch.bool).contiguous().view(torch.uint8) \
        if has_valid else out
    if has_valid and valid_arg.numel() != n:
        raise ValueError(f"valid has {valid_arg.numel()} entries for {n} tokens")

    args = (x, x.stride(0), t_arg, scale, label_arg, valid_arg, out, n, vocab)
    flags = dict(PER_TOKEN_T=per_token_t, HAS_LABELS=has_labels, HAS_VALID=has_valid, PARTIAL=partial_sums,
                 enable_fp_fusion=True)  # x·s − m as one FMA; explicit, as Triton 3.10 changes the default
    grid = (n,)
    if block_v is None and not INTERPRETED:
        _get_autotuned_kernel()[grid](*args, **flags)
    else:
        block = int(block_v or 128)
        if block < 1 or block & (block - 1):
            raise ValueError(f"block_v must be a power of two, got {block}")
        _logit_sums_kernel[grid](*args, **flags, BLOCK_V=block, PREFETCH=bool(prefetch),
                                 num_warps=int(num_warps or (1 if INTERPRETED else 8)))
    return out

