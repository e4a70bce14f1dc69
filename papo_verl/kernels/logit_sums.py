"""Chunked torch path for PAPO's per-token vocabulary statistics (the ``"torch"`` backend of :mod:`papo_verl.kernels`).

For ``[N, V]`` logits it computes what :func:`papo_verl.algorithm.papo.logit_statistics` defines —
``log π_k``, ``H``, ``Σπ²``, ``Σπ² log π`` of ``π = softmax(logits / T)`` — in float32 (D3), in chunks of
tokens so that at most two ``[chunk, V]`` float32 buffers (reused) exist at a time; or, for a vocabulary
shard of tensor-parallel logits, the **partial sums** ``[n, 5]`` float32 ``(m, Z, Σ e·(z−m), Σ e², Σ e²·(z−m))``
with ``z = logits / T``, ``m = max z`` and ``e = exp(z − m)`` over the shard. Partial sums of disjoint
vocabulary shards merge exactly (:func:`merge_logit_partial_sums`, then :func:`finalize_logit_sums`). The
Triton kernel (:mod:`papo_verl.kernels.triton_stats`) returns the same quantities in one streaming pass per row.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

__all__ = ["auto_chunk_size", "chunked_logit_sums", "default_chunk_size", "finalize_logit_sums",
           "merge_logit_partial_sums"]

# Elements per [chunk, V] float32 temporary when no chunk size is given: 2**22 floats = 16 MiB.
_CHUNK_ELEMENTS = 1 << 22


def default_chunk_size(vocab_size: int) -> int:
    """Tokens per chunk so that one ``[chunk, V]`` float32 temporary holds ``2**22`` elements."""
    return max(1, _CHUNK_ELEMENTS // max(1, int(vocab_size)))


# exp(−128) underflows to 0 in float32 and 0 · (−128) = 0: clamping z − m here changes no finite
# result, but turns −inf logits (masked vocabulary entries) into exact zeros instead of 0 · −inf = NaN.
_EXP_FLOOR = -128.0


def _normalized_block_sums(z: Tensor, work: Tensor) -> Tensor:
    """The single-block core of every torch statistics path (one softmax, three fused reductions).

    Args:
        z: ``[n, V]`` float32 temperature-scaled logits; overwritten with ``max(z − m, −128)``.
        work: ``[n, V]`` float32 workspace (overwritten), e.g. a reused buffer.

    Returns:
        ``[n, 5]`` float32 normalised sums ``(m, log Z, Σ π·(z−m), Σ π², Σ π²·(z−m))`` with
        ``π = softmax(z)``. ``log Z = −log max π`` (the maximal logit has ``e = 1``), so one softmax
        (ATen's fused max/exp/sum kernel, faster than ``torch.exp`` on CPU) replaces exp + sum.
        No ``bmm``/``matmul``: on CUDA they could run in TF32.
    """
    m = z.amax(dim=-1, keepdim=True)
    z.sub_(m).clamp_min_(_EXP_FLOOR)
    pi = torch.softmax(z, dim=-1, out=work)
    log_z = torch.log(pi.amax(dim=-1)).neg_()
    pz = torch.linalg.vecdot(pi, z)
    pi.square_()
    p2 = pi.sum(dim=-1)
    p2z = torch.linalg.vecdot(pi, z)
    return torch.stack([m.squeeze(-1), log_z, pz, p2, p2z], dim=-1)


def _unnormalize_block_sums(sums: Tensor) -> Tensor:
    """``[n, 5]`` normalised sums of :func:`_normalized_block_sums` → the partial sums (module docstring)."""
    m, log_z, pz, p2, p2z = sums.unbind(-1)
    big_z = torch.exp(log_z)
    z2 = big_z * big_z
    return torch.stack([m, big_z, big_z * pz, z2 * p2, z2 * p2z], dim=-1)


def _finalize_normalized_sums(sums: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`finalize_logit_sums` for normalised sums: ``(m + log Z, H, Σπ², Σπ² log π)``, each ``[n]``."""
    m, log_z, pz, p2, p2z = sums.unbind(-1)
    return m + log_z, log_z - pz, p2, p2z - log_z * p2


def merge_logit_partial_sums(parts: Tensor) -> Tensor:
    """Merge partial sums of disjoint vocabulary shards.

    Args:
        parts: ``[S, n, 5]`` partial sums (module docstring), one per shard.

    Returns:
        ``[n, 5]`` partial sums of the concatenated vocabulary (the online log-sum-exp rescaling).
    """
    m = parts[..., 0]
    m_all = m.amax(dim=0)
    shift = m - m_all  # ≤ 0
    s1 = torch.exp(shift)
    s2 = s1 * s1
    Z = (s1 * parts[..., 1]).sum(0)
    ez = (s1 * (parts[..., 2] + parts[..., 1] * shift)).sum(0)
    e2 = (s2 * parts[..., 3]).sum(0)
    e2z = (s2 * (parts[..., 4] + parts[..., 3] * shift)).sum(0)
    return torch.stack([m_all, Z, ez, e2, e2z], dim=-1)


def finalize_logit_sums(sums: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Turn ``[n, 5]`` partial sums into ``(log Z + m, H, Σπ², Σπ² log π)``, each ``[n]``.

    ``H = log Z − Σe(z−m)/Z``, ``Σπ² = Σe²/Z²``, ``Σπ² log π = Σe²(z−m)/Z² − log Z · Σπ²``; both
    terms of each sum have the same sign, so nothing cancels catastrophically in float32.
    """
    m, Z, ez, e2, e2z = sums.unbind(-1)
    log_z = torch.log(Z)
    inv_z2 = 1.0 / (Z * Z)
    entropy = log_z - ez / Z
    s2 = e2 * inv_z2
    s2l = e2z * inv_z2 - log_z * s2
    return log_z + m, entropy, s2, s2l


# On CPU the chunk is sized so that each thread's share of the float32 working set (two [chunk, V]
# buffers) stays in the L2/L3 caches: 2**19 logits per intra-op thread (measured optimum 2**18–2**19
# on one core). Chunks of 2**22 logits spill to DRAM and are several times slower; scaling with the
# thread count also keeps the number of OpenMP parallel regions (one per op) down.
_CPU_CHUNK_ELEMENTS = 1 << 19


def auto_chunk_size(vocab_size: int, device: torch.device) -> int:
    """Default tokens per chunk: cache-sized on CPU, :func:`default_chunk_size` elsewhere."""
    if device.type == "cpu":
        threads = max(1, min(torch.get_num_threads(), 8))
        return max(1, (_CPU_CHUNK_ELEMENTS * threads) // max(1, int(vocab_size)))
    return default_chunk_size(vocab_size)


@torch.no_grad()
def chunked_logit_sums(
    logits: Tensor,
    labels: Optional[Tensor],
    temperature: Union[float, Tensor],
    *,
    valid: Optional[Tensor],
    chunk_size: Optional[int],
    partial_sums: bool,
) -> Tensor:
    """The torch backend of :func:`papo_verl.kernels.logit_stats` and :func:`papo_verl.kernels.logit_partial_sums_rows`.

    Args:
        logits: ``[N, V]`` raw logits of any float dtype (not modified).
        labels: ``[N]`` sampled token ids for ``log π_k``, or ``None``.
        temperature: scalar, or ``[N]`` per-token temperatures; statistics are those of ``softmax(logits / T)``.
        valid: ``[N]`` bool; masked tokens are skipped and get 0 in every output.
        chunk_size: tokens per chunk (default :func:`auto_chunk_size`: on CPU about ``2**19`` logits per
            intra-op thread, so that the working set stays in cache, 3–10× faster; elsewhere
            :func:`default_chunk_size`). At most two ``[chunk, V]`` float32 buffers (reused across chunks),
            plus a ``[chunk, V]`` copy in the logits' dtype when ``valid`` is given, exist at a time.
        partial_sums: return the partial sums instead of the statistics.

    Returns:
        ``[4, N]`` float32 ``(log π_k, H, Σπ², Σπ² log π)`` (row 0 is 0 without labels), or with
        ``partial_sums=True`` the ``[N, 5]`` partial sums (module docstring). Masked rows are 0.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, V], got shape {tuple(logits.shape)}")
    n, vocab = logits.shape
    device = logits.device
    if chunk_size is None:
        chunk_size = auto_chunk_size(vocab, device)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    per_token_t = isinstance(temperature, Tensor) and temperature.numel() > 1
    if per_token_t and temperature.reshape(-1).shape[0] != n:
        raise ValueError(f"temperature has {temperature.numel()} entries for {n} tokens")
    if isinstance(temperature, Tensor) and not per_token_t:
        temperature = float(temperature.reshape(-1)[0]) if temperature.numel() else 1.0
    if per_token_t:
        temperature = temperature.reshape(-1).to(device=device, dtype=torch.float32).clamp_min(1e-8)
    if labels is not None:
        labels = labels.reshape(-1).to(device=device, dtype=torch.long)
    if valid is not None:
        valid = valid.reshape(-1).to(device=device, dtype=torch.bool)

    rows = None if valid is None else valid.nonzero().squeeze(-1)
    n_rows = n if rows is None else rows.numel()
    out = torch.zeros((n, 5) if partial_sums else (4, n), dtype=torch.float32, device=device)
    if n_rows == 0 or vocab == 0:
        return out

    chunk = min(chunk_size, n_rows)
    z_buf = torch.empty(chunk, vocab, dtype=torch.float32, device=device)
    work_buf = torch.empty(chunk, vocab, dtype=torch.float32, device=device)
    gather_buf = None
    if rows is not None and logits.dtype != torch.float32:
        gather_buf = torch.empty(chunk, vocab, dtype=logits.dtype, device=device)
    for start in range(0, n_rows, chunk):
        stop = min(start + chunk, n_rows)
        k = stop - start
        z = z_buf[:k]
        if rows is None:
            idx = slice(start, stop)
            z.copy_(logits[start:stop])
        else:
            idx = rows[start:stop]
            if gather_buf is None:
                torch.index_select(logits, 0, idx, out=z)
            else:
                z.copy_(torch.index_select(logits, 0, idx, out=gather_buf[:k]))
        if per_token_t:
            z.div_(temperature[idx].unsqueeze(-1))
        elif temperature != 1.0:
            z.div_(float(temperature))  # division, as verl scales its logits: identical rounding
        label_logit = None
        if labels is not None and not partial_sums:
            label_logit = z.gather(1, labels[idx].unsqueeze(-1)).squeeze(-1)
        sums = _normalized_block_sums(z, work_buf[:k])
        if partial_sums:
            out[idx] = _unnormalize_block_sums(sums)
            continue
        log_norm, entropy, s2, s2l = _finalize_normalized_sums(sums)
        if label_logit is not None:
            out[0, idx] = label_logit - log_norm
        out[1, idx] = entropy
        out[2, idx] = s2
        out[3, idx] = s2l
    return out

