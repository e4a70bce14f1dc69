"""PAPO — Polarity-Aware Policy Optimization, as pure tensor functions.

Paper: J. Zhang, Z. Fu, J. Shen et al., "Entropy Polarity in Reinforcement Fine-Tuning: Direction,
Asymmetry, and Control", arXiv 2605.11775 (2026). Not TRL's "Perception-Aware" PAPO.

This module imports only torch and numpy. verl glue lives in :mod:`papo_verl.estimator`,
:mod:`papo_verl.trainer`, :mod:`papo_verl.engine` and :mod:`papo_verl.loss`; the driver-side phase
controller lives in :mod:`papo_verl.tracker`.

Equations implemented (state ``s_t``, sampled token ``k``, ``π = softmax(z / T)``)
-----------------------------------------------------------------------------------
(E1) ``H_t = −Σ_a π_a log π_a``, ``ℓ_t = log π_k``                          [paper]
(E2) ``C_t = Σ_a π_a² (log π_a + H_t)``  — state-wise distributional correction   [paper]
(E3) ``P_t = C_t − π_k (ℓ_t + H_t)``     — polarity coefficient                   [paper]
(E4) one policy-gradient step ``Δz = η A_t (e_k − π)`` changes the entropy by
     ``ΔH_t = η A_t P_t + O(η²)``; ``−η A_t π_k(ℓ_t + H_t)`` is the sampled-token term and
     ``η A_t C_t`` the correction                                                  [paper]
(E5) entropy polarity ``ρ_t = A_t P_t``: ``ρ_t > 0`` expands entropy, ``ρ_t < 0`` contracts it [paper]

PAPO advantage (docs/algorithm.md §2); the paper states "preserve both branches, control by advantage
reweighting"; the concrete rule below is this project's design:

(A1) base advantage: group-relative outcome advantage as GRPO, ``A_i = (r_i − mean_g) / (std_g + ε)``
     (or ``r_i − mean_g`` without the std), broadcast over the response tokens.       [ours]
(A2) branch weights ``w₊ = 1 + α g``, ``w₋ = 1 − α g`` from the tracker's tilt ``g``.  [ours]
(A3) pressure conservation: with ``M± = Σ_{t ∈ branch±} |A_t|`` over the valid tokens of the whole
     batch, ``c = (M₊ + M₋) / (w₊ M₊ + w₋ M₋)`` and ``w± ← clamp(c w±, w_min, w_max)``, so that
     ``Σ|Â_t| = Σ|A_t|`` before clamping: pressure moves between branches, the step size does not change. [ours]
(A4) ``Â_t = A_t · w_{branch(t)}``, with weight 1 where ``ρ_t = 0``.                 [ours]

Deviations and implementation choices (all documented in the README's "Faithfulness notes")
------------------------------------------------------------------------------------------
* D1 — groups with zero reward variance, including groups of one response, get ``A = 0``.
  verl's ``grpo`` gives a singleton group its raw score instead; PAPO has no baseline there.
* D2 — ``correction="none"`` drops ``C_t`` (sampled-term-only ablation); ``"exact"`` is the default.
* D3 — statistics are computed in float32 from the temperature-scaled logits, whatever the logits'
  dtype, without gradient (they are θ_old quantities; the loss only reads them as constants).
* D4 — ``M±`` is a batch-global sum accumulated in float64; under data parallelism pass
  ``mass_reduce`` (an all-reduce) so every rank uses the same weights.
* D5 — the first-order identity (E4) holds for a softmax over free logits; in a network the
  logits move together, so how well polarity predicts the entropy change is measured on the step's
  own batch (``validate_every``: :mod:`papo_verl.validation`), not assumed.
* D6 — the controller's input is ``H̄`` with its standard error (:func:`entropy_mean_stderr`), each
  prompt's response group one sampling unit. ``split="advantage_sign"`` (ablation) labels branches by
  ``sign(−A_t)`` instead of ``sign(ρ_t)``.

The full specification, with the [paper]/[ours] split, the controller and the validation, is
``docs/algorithm.md``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CORRECTIONS",
    "SPLITS",
    "entropy_mean_stderr",
    "ratio_mean_stderr",
    "LogitStats",
    "PapoAdvantage",
    "apply_branch_weights",
    "branch_masses",
    "conserve_pressure",
    "default_chunk_size",
    "finalize_logit_sums",
    "group_advantage",
    "group_ids",
    "logit_partial_sums",
    "logit_statistics",
    "merge_logit_partial_sums",
    "papo_advantage",
    "polarity",
    "polarity_coefficient",
    "response_sums",
]

CORRECTIONS = ("exact", "none")
SPLITS = ("polarity", "advantage_sign")

# Elements per [chunk, V] float32 temporary when no chunk size is given: 2**22 floats = 16 MiB.
_CHUNK_ELEMENTS = 1 << 22


# ----------------------------------------------------------------------------------------------
# (E1)–(E2): per-token statistics of the temperature-scaled softmax, chunked over tokens
# ----------------------------------------------------------------------------------------------
class LogitStats(NamedTuple):
    """Per-token statistics of ``π = softmax(logits / T)``; every field has shape ``[N]``, float32.

    ``log_prob`` is ``log π_k`` of the label (``None`` when no labels were given); ``entropy`` is
    ``H``; ``sum_pi_squared`` is ``Σ_a π_a²``; ``sum_pi_squared_log_pi`` is ``Σ_a π_a² log π_a``.
    """

    log_prob: Optional[Tensor]
    entropy: Tensor
    sum_pi_squared: Tensor
    sum_pi_squared_log_pi: Tensor


def default_chunk_size(vocab_size: int) -> int:
    """Tokens per chunk so that one ``[chunk, V]`` float32 temporary holds ``2**22`` elements."""
    return max(1, _CHUNK_ELEMENTS // max(1, int(vocab_size)))


def logit_partial_sums(z: Tensor) -> Tensor:
    """Shift-invariant partial sums of one row block of float32 logits, consumed destructively.

    Args:
        z: ``[n, V]`` float32 logits already divided by the temperature. **Overwritten.**

    Returns:
        ``[n, 5]`` float32: ``(m, Z, Σ e·(z−m), Σ e², Σ e²·(z−m))`` with ``m = max z`` and
        ``e = exp(z − m)``. Sums over disjoint vocabulary shards merge exactly with
        :func:`merge_logit_partial_sums` (this is how tensor-parallel logits are reduced).
    """
    return _unnormalize_block_sums(_normalized_block_sums(z, torch.empty_like(z)))


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
    """``[n, 5]`` normalised sums of :func:`_normalized_block_sums` → the partial sums of :func:`logit_partial_sums`."""
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
        parts: ``[S, n, 5]`` outputs of :func:`logit_partial_sums`, one per shard.

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


@torch.no_grad()
def logit_statistics(
    logits: Tensor,
    labels: Optional[Tensor] = None,
    temperature: Union[float, Tensor] = 1.0,
    *,
    valid: Optional[Tensor] = None,
    chunk_size: Optional[int] = None,
) -> LogitStats:
    """(E1)–(E2) for every token, in float32, chunked over tokens.

    At most one chunk's float32 temporaries (two ``[chunk, V]`` buffers, reused across chunks, plus
    a ``[chunk, V]`` copy in the logits' dtype when ``valid`` is given) exist at a time, so
    vocabularies of 256k work with bounded memory. Outputs carry no gradient.

    Args:
        logits: ``[N, V]`` raw logits of any float dtype (not modified).
        labels: ``[N]`` sampled token ids for ``log π_k``, or ``None``.
        temperature: scalar, or ``[N]`` per-token temperatures; statistics are those of
            ``softmax(logits / T)``.
        valid: ``[N]`` bool; masked tokens are skipped and get 0 in every output.
        chunk_size: tokens per chunk (default: :func:`default_chunk_size` off CPU; on CPU about
            ``2**19`` logits per intra-op thread, so that the working set stays in cache: 3–10× faster).

    Returns:
        :class:`LogitStats`, each field ``[N]`` float32 on the logits' device.
    """
    out = _chunked_logit_sums(logits, labels, temperature, valid=valid, chunk_size=chunk_size, partial_sums=False)
    return LogitStats(out[0] if labels is not None else None, out[1], out[2], out[3])


# On CPU the chunk is sized so that each thread's share of the float32 working set (two [chunk, V]
# buffers) stays in the L2/L3 caches: 2**19 logits per intra-op thread (measured optimum 2**18–2**19
# on one core). Chunks of 2**22 logits spill to DRAM and are several times slower; scaling with the
# thread count also keeps the number of OpenMP parallel regions (one per op) down.
_CPU_CHUNK_ELEMENTS = 1 << 19


def _auto_chunk_size(vocab_size: int, device: torch.device) -> int:
    """Default tokens per chunk: cache-sized on CPU, :func:`default_chunk_size` elsewhere."""
    if device.type == "cpu":
        threads = max(1, min(torch.get_num_threads(), 8))
        return max(1, (_CPU_CHUNK_ELEMENTS * threads) // max(1, int(vocab_size)))
    return default_chunk_size(vocab_size)


@torch.no_grad()
def _chunked_logit_sums(
    logits: Tensor,
    labels: Optional[Tensor],
    temperature: Union[float, Tensor],
    *,
    valid: Optional[Tensor],
    chunk_size: Optional[int],
    partial_sums: bool,
) -> Tensor:
    """Chunked driver shared by :func:`logit_statistics` and the torch backend of :mod:`papo_verl.kernels`.

    Returns ``[4, N]`` float32 ``(log π_k, H, Σπ², Σπ² log π)`` (row 0 is 0 without labels), or with
    ``partial_sums=True`` the ``[N, 5]`` partial sums of :func:`logit_partial_sums`. Masked rows are 0.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, V], got shape {tuple(logits.shape)}")
    n, vocab = logits.shape
    device = logits.device
    if chunk_size is None:
        chunk_size = _auto_chunk_size(vocab, device)
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


# ----------------------------------------------------------------------------------------------
# (E3)–(E5): polarity
# ----------------------------------------------------------------------------------------------
def polarity_coefficient(
    log_prob: Tensor,
    entropy: Tensor,
    sum_pi_squared: Tensor,
    sum_pi_squared_log_pi: Tensor,
    correction: str = "exact",
) -> Tensor:
    """(E3) ``P_t = (Σπ² log π + H Σπ²) − π_k(ℓ_t + H)``; any common shape, float32.

    ``correction="none"`` returns only the sampled-token term ``−π_k(ℓ_t + H)`` (ablation D2).
    The statistics are float32 θ_old quantities; the arithmetic here adds at most a few float32
    roundings, far below their own error, and is the same operation sequence as the chunked pass of
    :func:`papo_advantage`.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    ell, h = log_prob.float(), entropy.float()
    sampled = torch.exp(ell)
    lh = ell + h
    if correction == "exact":
        return torch.addcmul(torch.addcmul(sum_pi_squared_log_pi.float(), h, sum_pi_squared.float()), sampled, lh,
                             value=-1.0)
    return torch.mul(sampled, lh).neg_()


def polarity(advantages: Tensor, coefficient: Tensor) -> Tensor:
    """(E5) entropy polarity ``ρ_t = A_t P_t`` (same shape as the inputs)."""
    return advantages * coefficient


# ----------------------------------------------------------------------------------------------
# The controller's input: the batch's token-mean entropy and its standard error
# ----------------------------------------------------------------------------------------------
def entropy_mean_stderr(entropy: Tensor, mask: Tensor, groups: Optional[Tensor] = None) -> tuple[float, float]:
    """Token-mean entropy ``H̄ = Σ_i h_i / Σ_i n_i`` of a batch and its ratio-estimator standard error.

    Args:
        entropy: ``[B, T]`` per-token entropies (any value at masked tokens, NaN included, is ignored).
        mask: ``[B, T]`` 1 on valid response tokens; rows without any (padding rows) are not samples.
        groups: optional ``[B]`` dense cluster ids (:func:`group_ids`): the sampling units become the
            clusters (e.g. the ``n`` responses of one prompt), else each response is a unit.

    Returns:
        ``(H̄, s)``, floats; see :func:`ratio_mean_stderr`.
    """
    return ratio_mean_stderr(*response_sums(entropy, mask), groups)


def ratio_mean_stderr(sums: Tensor, counts: Tensor, groups: Optional[Tensor] = None) -> tuple[float, float]:
    """``(Σ h / Σ n, s)`` from per-response sums ``h`` and valid-token counts ``n`` (float64 ``[B]``).

    Tokens of one response (and responses of one prompt) are correlated, so the sampling units are
    responses (or the clusters of ``groups``), never tokens: with unit sums ``h_u``, ``n_u`` and
    residuals ``e_u = h_u − H̄ n_u`` over the ``U`` units with ``n_u > 0``,
    ``s² = U/(U−1) · Σ_u e_u² / (Σ_u n_u)²`` (the delta-method variance of a ratio estimator).
    ``s = NaN`` with fewer than 2 units. The inputs are additive over any split of a response's tokens,
    so the result does not depend on micro-batches, ranks or padding.
    """
    h, n = sums, counts
    if groups is not None:
        n_units = int(groups.max().item()) + 1 if groups.numel() else 0
        h = torch.zeros(n_units, dtype=torch.float64, device=h.device).index_add_(0, groups.to(h.device), h)
        n = torch.zeros_like(h).index_add_(0, groups.to(n.device), n)
    units = n > 0
    h, n = h[units], n[units]
    total = float(n.sum())
    if total == 0:
        return math.nan, math.nan
    mean = float(h.sum()) / total
    count = int(units.sum())
    if count < 2:
        return mean, math.nan
    residual = h - mean * n
    return mean, math.sqrt(count / (count - 1) * float((residual * residual).sum())) / total


# ----------------------------------------------------------------------------------------------
# (A1): group-relative base advantage, vectorised
# ----------------------------------------------------------------------------------------------
def group_ids(index: Union[Sequence, np.ndarray, Tensor], device: Union[str, torch.device, None] = None) -> Tensor:
    """Dense group ids ``[B]`` (int64, 0..G−1) for arbitrary hashable labels (uids), vectorised."""
    if isinstance(index, Tensor):
        _, inverse = torch.unique(index.reshape(-1), return_inverse=True)
        return inverse.to(device or index.device)
    arr = np.asarray(index)
    if arr.dtype == object:
        arr = arr.astype(str)
    _, inverse = np.unique(arr, return_inverse=True)
    return torch.as_tensor(inverse.reshape(-1), dtype=torch.long, device=device)


def group_advantage(
    scores: Tensor,
    groups: Tensor,
    *,
    norm_by_std: bool = True,
    epsilon: float = 1e-6,
) -> Tensor:
    """(A1) Outcome advantage per response, ``[B]`` float32.

    Args:
        scores: ``[B]`` sequence rewards.
        groups: ``[B]`` dense group ids (:func:`group_ids`).
        norm_by_std: divide by the (unbiased) group std, as GRPO; ``False`` gives Dr.GRPO.
        epsilon: added to the std.

    Groups of size 1 and groups whose scores are all equal get exactly 0 (D1). Group sums are
    accumulated in float64, so results do not depend on the order of samples beyond float32 rounding.
    """
    x = scores.double()
    n_groups = int(groups.max().item()) + 1 if groups.numel() else 0
    count = torch.zeros(n_groups, dtype=torch.float64, device=x.device).index_add_(0, groups, torch.ones_like(x))
    mean = torch.zeros_like(count).index_add_(0, groups, x) / count
    centred = x - mean[groups]
    sq = torch.zeros_like(count).index_add_(0, groups, centred * centred)
    std = torch.sqrt(sq / (count - 1).clamp_min(1.0))
    hi = torch.full_like(count, -torch.inf).scatter_reduce_(0, groups, x, "amax")
    lo = torch.full_like(count, torch.inf).scatter_reduce_(0, groups, x, "amin")
    degenerate = (count < 2) | (hi == lo)
    adv = centred / (std[groups] + epsilon) if norm_by_std else centred
    return torch.where(degenerate[groups], torch.zeros_like(adv), adv).float()


# ----------------------------------------------------------------------------------------------
# (A2)–(A4): pressure-conserving branch reweighting
# ----------------------------------------------------------------------------------------------
def branch_masses(rho: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """``M± = Σ_{valid, ρ≷0} |A_t|`` as a float64 ``[2]`` tensor ``(M₊, M₋)``; additive over any split."""
    valid = mask.bool()
    mag = advantages.abs().double()
    plus = (mag * (valid & (rho > 0))).sum()
    minus = (mag * (valid & (rho < 0))).sum()
    return torch.stack([plus, minus])


def conserve_pressure(
    masses: Tensor,
    expand: float,
    contract: float,
    *,
    w_min: float = 0.2,
    w_max: float = 5.0,
) -> tuple[float, float, float]:
    """(A3) Rescale ``(expand, contract)`` so that ``w₊M₊ + w₋M₋ = M₊ + M₋``, then clamp.

    Args:
        masses: float64 ``[2]`` ``(M₊, M₋)`` from :func:`branch_masses` (summed over the whole batch).
        expand, contract: the tracker's weights before conservation; both must be > 0.

    Returns:
        ``(w₊, w₋, c)``: the clamped weights and the conservation factor ``c`` (1 when both masses are 0).
    """
    if not (expand > 0 and contract > 0):
        raise ValueError(f"branch weights must be > 0, got expand={expand}, contract={contract}")
    m_plus, m_minus = (float(v) for v in masses)
    denom = expand * m_plus + contract * m_minus
    scale = (m_plus + m_minus) / denom if denom > 0 else 1.0
    w_plus = min(max(scale * expand, w_min), w_max)
    w_minus = min(max(scale * contract, w_min), w_max)
    return w_plus, w_minus, scale


def apply_branch_weights(advantages: Tensor, rho: Tensor, mask: Tensor, w_plus: float, w_minus: float) -> tuple[Tensor, Tensor]:
    """(A4) ``Â_t = A_t w_{branch(t)}`` and the branch labels.

    Returns:
        ``(Â, branch)``: ``Â`` like ``advantages`` (0 at masked tokens); ``branch`` int8 of the same
        shape, ``+1`` expanding (ρ > 0), ``−1`` contracting (ρ < 0), ``0`` neutral or masked.
    """
    valid = mask.bool()
    branch = (torch.sign(rho) * valid).to(torch.int8)
    weight = torch.where(branch > 0, w_plus, torch.where(branch < 0, w_minus, 1.0)).to(advantages.dtype)
    return advantages * weight * valid, branch


# per-response aggregates of one PAPO batch (columns of PapoAdvantage.row_stats, float64 [B, 6])
ROW_VALID, ROW_P_POS, ROW_P_NEG, ROW_P_SUM, ROW_P_ABS_SUM, ROW_SAMPLED_DISAGREE = range(6)


class PapoAdvantage:
    """Everything :func:`papo_advantage` computes for a ``[B, T]`` batch.

    Materialised: ``advantages`` (Â, float32), ``branch`` (int8: +1 expanding, −1 contracting, 0
    neutral or masked), ``row_advantages`` (``[B]`` A per response), ``row_stats`` (float64
    ``[B, 6]`` per-response aggregates: valid tokens, tokens with P > 0 / P < 0, ΣP, Σ|P|, tokens where
    the sampled-term-only sign disagrees), ``masses`` (float64 ``[2]``), the final weights and ``scale``.
    ``base_advantages``, ``coefficient`` and ``rho`` are computed from the inputs when first asked for.
    """

    def __init__(self, advantages, branch, row_advantages, row_stats, masses, expand_weight, contract_weight, scale,
                 inputs, correction, coefficient=None, split="polarity"):
        self.advantages: Tensor = advantages
        self.branch: Tensor = branch
        self.row_advantages: Tensor = row_advantages
        self.row_stats: Tensor = row_stats
        self.masses: Tensor = masses
        self.expand_weight: float = expand_weight
        self.contract_weight: float = contract_weight
        self.scale: float = scale
        self._inputs = inputs  # (response_mask, log_prob, entropy, Σπ², Σπ² log π)
        self._correction = correction
        self.split = split
        self._given_coefficient = coefficient
        self._cache: dict = {}

    def finite(self) -> bool:
        """False when a non-finite input on a valid token (or a non-finite score) reached the result."""
        return bool(torch.isfinite(self.row_stats).all() and torch.isfinite(self.row_advantages).all())

    @property
    def base_advantages(self) -> Tensor:
        """``A_t``: the base advantage broadcast over valid tokens, ``[B, T]`` float32."""
        if "base" not in self._cache:
            self._cache["base"] = self.row_advantages.unsqueeze(-1) * self._inputs[0].bool()
        return self._cache["base"]

    @property
    def coefficient(self) -> Tensor:
        """``P_t`` on valid tokens (0 elsewhere), ``[B, T]`` float32."""
        if "coeff" not in self._cache:
            mask, *stats = self._inputs
            given = self._given_coefficient
            coeff = given.float() if given is not None else polarity_coefficient(*stats, self._correction)
            self._cache["coeff"] = torch.where(mask.bool(), coeff, torch.zeros((), dtype=coeff.dtype))
        return self._cache["coeff"]

    @property
    def rho(self) -> Tensor:
        """``ρ_t = A_t P_t``, ``[B, T]`` float32."""
        return polarity(self.base_advantages, self.coefficient)


# Elements per chunk of the advantage passes: the float32 temporaries of a chunk (≈ 1 MiB each)
# stay in cache; whole-batch temporaries (4096 × 4096 tokens: 64 MiB each) cost DRAM traffic and
# page faults per operation.
_ADV_CHUNK_ELEMENTS = 1 << 18


def response_sums(values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row sums of ``values`` over the 0/1 ``mask`` (``[B, T]``) and the valid-token counts, float64 ``[B]``.

    Chunked over rows (cache-sized temporaries), accumulated in float64, so the sums do not depend on
    padding or on how a response's tokens were split. Non-finite values where the mask is 0 (padding)
    are ignored.
    """
    n_rows, n_cols = mask.shape
    sums = torch.empty(n_rows, dtype=torch.float64, device=mask.device)
    counts = torch.empty(n_rows, dtype=torch.float64, device=mask.device)
    zero = torch.zeros((), dtype=values.dtype, device=mask.device)
    for r0, r1 in _row_chunks(n_rows, n_cols):
        valid = mask[r0:r1].bool()
        sums[r0:r1] = torch.where(valid, values[r0:r1], zero).sum(-1, dtype=torch.float64)
        counts[r0:r1] = valid.sum(-1)
    return sums, counts


def _row_chunks(n_rows: int, n_cols: int):
    rows = max(1, _ADV_CHUNK_ELEMENTS // max(1, n_cols))
    for r0 in range(0, n_rows, rows):
        yield r0, min(n_rows, r0 + rows)


@torch.no_grad()
def papo_advantage(
    scores: Tensor,
    groups: Tensor,
    response_mask: Tensor,
    log_prob: Tensor,
    entropy: Tensor,
    sum_pi_squared: Tensor,
    sum_pi_squared_log_pi: Tensor,
    expand: float,
    contract: float,
    *,
    norm_by_std: bool = True,
    epsilon: float = 1e-6,
    correction: str = "exact",
    split: str = "polarity",
    w_min: float = 0.2,
    w_max: float = 5.0,
    mass_reduce: Optional[Callable[[Tensor], Tensor]] = None,
    with_row_stats: bool = True,
    coefficient: Optional[Tensor] = None,
) -> PapoAdvantage:
    """(A1)–(A4) on one batch.

    Args:
        scores: ``[B]`` sequence rewards; groups: ``[B]`` dense group ids (whole groups only).
        response_mask: ``[B, T]`` 1 for valid response tokens.
        log_prob, entropy, sum_pi_squared, sum_pi_squared_log_pi: ``[B, T]`` θ_old statistics
            (any value at masked tokens, NaN included, is ignored; a non-finite value on a valid
            token makes the result non-finite, see :meth:`PapoAdvantage.finite`).
        expand, contract: tracker weights before conservation.
        split: ``"polarity"``: branch = sign(ρ_t); ``"advantage_sign"`` (ablation): branch = sign(−A_t)
            on valid tokens, whatever ``P_t`` (the polarity statistics are still computed for the metrics).
        mass_reduce: optional function applied to the float64 ``[2]`` masses before conservation
            (an all-reduce under data parallelism, so every shard uses the same weights).
        with_row_stats: also collect the per-response aggregates that :func:`papo_verl.metrics.
            advantage_metrics` needs (ΣP, Σ|P|, valid tokens, sampled-term disagreements).
        coefficient: optional ``[B, T]`` polarity coefficients ``P_t`` already computed by the actor
            (same ``correction``); then ``sum_pi_squared`` and ``sum_pi_squared_log_pi`` may be None,
            and ``log_prob``/``entropy`` are read only for the sampled-term metric.

    Two passes over row chunks. Pass 1 computes ``P_t`` and keeps only the labels
    ``b_t = sign(ρ_t) = sign(A_b) sign(P_t)`` on valid tokens and per-response counts of ``P ≷ 0``. Since
    ``A`` is constant over a response, ``M± = Σ_b |A_b| · #{t : b_t = ±1}`` comes from the counts.
    Pass 2 writes ``Â_t = A_b w(b_t)`` as ``mask·c0_b + b·c1_b + |b|·c2_b`` with per-response
    ``c0 = A_b``, ``c1 = A_b (w₊ − w₋)/2``, ``c2 = A_b((w₊ + w₋)/2 − 1)``. Masking is a multiplication (no ``where``: several times slower on
    CPU); if padding holds non-finite garbage the aggregates show it and the inputs are cleaned first.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if response_mask.dim() != 2:
        raise ValueError(f"response_mask must be [B, T], got shape {tuple(response_mask.shape)}")
    stats_in = (log_prob, entropy, sum_pi_squared, sum_pi_squared_log_pi)
    if coefficient is None and (sum_pi_squared is None or sum_pi_squared_log_pi is None):
        raise ValueError("papo_advantage needs sum_pi_squared and sum_pi_squared_log_pi, or the coefficient")
    row_adv = group_advantage(scores, groups, norm_by_std=norm_by_std, epsilon=epsilon).to(response_mask.device)
    branch, row_stats = _branch_labels(response_mask, stats_in, coefficient, row_adv, correction, split, with_row_stats)
    if not torch.isfinite(row_stats).all():
        # NaN/inf somewhere: padding garbage is set to 0 and the pass repeated; what remains is real
        valid = response_mask.bool()
        zero = torch.zeros((), dtype=torch.float32, device=response_mask.device)
        clean = lambda t: None if t is None else torch.where(valid, t.float(), zero)  # noqa: E731
        stats_in, coefficient = tuple(clean(t) for t in stats_in), clean(coefficient)
        branch, row_stats = _branch_labels(response_mask, stats_in, coefficient, row_adv, correction, split,
                                           with_row_stats)
    return _reweight(branch, row_stats, row_adv, response_mask, stats_in, coefficient, expand, contract, correction,
                     split, w_min=w_min, w_max=w_max, mass_reduce=mass_reduce)


def _branch_labels(response_mask: Tensor, stats_in: tuple, coefficient: Optional[Tensor], row_adv: Tensor,
                    correction: str, split: str, with_row_stats: bool):
    """Pass 1: the branch labels on valid tokens (int8 ``[B, T]``: ``sign(A_b)·sign(P_t)``, or ``−sign(A_b)``
    with ``split="advantage_sign"``) and the float64 ``[B, 6]`` row aggregates (counts of ``P > 0`` and
    ``P < 0``, ...)."""
    n_rows, n_cols = response_mask.shape
    device = response_mask.device
    branch = torch.empty(n_rows, n_cols, dtype=torch.int8, device=device)
    sign_adv = torch.sign(row_adv).unsqueeze(-1)
    row_stats = torch.zeros(n_rows, 6, dtype=torch.float64, device=device)
    exact = correction == "exact"
    log_prob, entropy, sum_pi_squared, sum_pi_squared_log_pi = stats_in
    work = torch.empty(min(n_rows, max(1, _ADV_CHUNK_ELEMENTS // max(1, n_cols))), n_cols, dtype=torch.float32,
                       device=device) if coefficient is not None else None
    for r0, r1 in _row_chunks(n_rows, n_cols):
        m = response_mask[r0:r1]
        m = m if m.dtype == torch.float32 else m.to(torch.float32)  # 0/1 response mask
        lh = None
        if coefficient is None:
            ell, h = log_prob[r0:r1].float(), entropy[r0:r1].float()
            lh = ell + h
            coeff = torch.exp(ell)
            if exact:
                coeff = torch.addcmul(sum_pi_squared_log_pi[r0:r1].float(), h, sum_pi_squared[r0:r1].float()).addcmul_(
                    coeff, lh, value=-1.0)
            else:
                coeff.mul_(lh).neg_()
            coeff.mul_(m)
        else:
            coeff = torch.mul(coefficient[r0:r1], m, out=work[: r1 - r0])
        s = torch.sign(coeff)
        stats = row_stats[r0:r1]
        net = s.sum(-1)  # #(P > 0) − #(P < 0); integer-valued float32 sums, exact below 2**24 tokens
        if split == "polarity":
            branch[r0:r1] = s * sign_adv[r0:r1]  # sign(ρ) = sign(A) sign(P)
        else:
            branch[r0:r1] = -sign_adv[r0:r1] * m  # penalised samples expand, reinforced ones contract
        if with_row_stats and exact:
            # the sampled-term-only coefficient −π_k(ℓ + H) has the sign of −(ℓ + H): agreement ⇔ s·(ℓ + H) < 0
            if lh is None:
                lh = log_prob[r0:r1].float() + entropy[r0:r1].float()
            stats[:, ROW_SAMPLED_DISAGREE] = -(s * lh < 0).sum(-1)  # minus the agreements; + nonzero below
        nonzero = s.abs_().sum(-1)
        stats[:, ROW_P_POS] = 0.5 * (nonzero + net)
        stats[:, ROW_P_NEG] = 0.5 * (nonzero - net)
        # float32 row sums of P: the metrics' ΣP, and the finiteness check (sign() maps NaN to 0)
        stats[:, ROW_P_SUM] = coeff.sum(-1)
        stats[:, ROW_VALID] = m.sum(-1)
        if with_row_stats:
            stats[:, ROW_P_ABS_SUM] = coeff.abs_().sum(-1)
            if exact:
                stats[:, ROW_SAMPLED_DISAGREE] += nonzero
    return branch, row_stats


def branch_token_counts(row_stats: Tensor, row_advantages: Tensor, split: str = "polarity") -> tuple[Tensor, Tensor]:
    """Per-response token counts ``(n₊, n₋)`` of the expanding and contracting branches, float64 ``[B]``.

    ``A`` is constant over a response: under ``split="polarity"`` its tokens with ``P > 0`` expand when
    ``A_b > 0`` and contract when ``A_b < 0`` (the reverse for ``P < 0``); under ``"advantage_sign"`` all
    its valid tokens expand when ``A_b < 0`` and contract when ``A_b > 0``. ``A_b = 0`` rows count in neither.
    """
    positive, negative = row_advantages > 0, row_advantages < 0
    zero = torch.zeros_like(row_stats[:, ROW_VALID])
    if split == "polarity":
        p_pos, p_neg = row_stats[:, ROW_P_POS], row_stats[:, ROW_P_NEG]
        return (torch.where(positive, p_pos, torch.where(negative, p_neg, zero)),
                torch.where(positive, p_neg, torch.where(negative, p_pos, zero)))
    valid = row_stats[:, ROW_VALID]
    return torch.where(negative, valid, zero), torch.where(positive, valid, zero)


def _reweight(branch, row_stats, row_adv, response_mask, stats_in, coefficient, expand, contract, correction, split,
              *, w_min, w_max, mass_reduce) -> PapoAdvantage:
    """Masses, conservation and pass 2: ``Â = mask·c0 + b·c1 + |b|·c2`` from the branch labels ``b``."""
    n_rows, n_cols = response_mask.shape
    device = response_mask.device
    magnitude = row_adv.abs().double()
    n_plus, n_minus = branch_token_counts(row_stats, row_adv, split)
    masses = torch.stack([(magnitude * n_plus).sum(), (magnitude * n_minus).sum()])
    if mass_reduce is not None:
        masses = mass_reduce(masses)
    w_plus, w_minus, scale = conserve_pressure(masses, expand, contract, w_min=w_min, w_max=w_max)

    # w(b) = 1 + b (w₊ − w₋)/2 + |b| ((w₊ + w₋)/2 − 1) for b ∈ {−1, 0, 1}
    c0 = row_adv.unsqueeze(-1)
    c1 = (row_adv * (0.5 * (w_plus - w_minus))).unsqueeze(-1)
    c2 = (row_adv * (0.5 * (w_plus + w_minus) - 1.0)).unsqueeze(-1)
    advantages = torch.empty(n_rows, n_cols, dtype=torch.float32, device=device)
    for r0, r1 in _row_chunks(n_rows, n_cols):
        b = branch[r0:r1].float()
        m = response_mask[r0:r1]
        m = m if m.dtype == torch.float32 else m.to(torch.float32)
        out = torch.mul(m, c0[r0:r1], out=advantages[r0:r1])
        out.addcmul_(b, c1[r0:r1]).addcmul_(b.abs_(), c2[r0:r1])
    inputs = (response_mask, *stats_in)
    return PapoAdvantage(advantages, branch, row_adv, row_stats, masses, w_plus, w_minus, scale, inputs, correction,
                         coefficient, split)
