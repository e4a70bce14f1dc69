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

PAPO advantage (PAPO.md §2); the paper states "preserve both branches, control by advantage
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
  logits move together, so polarity is a per-token prediction whose quality PAPO logs online
  (``papo/dH_corr_*``) rather than assumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CORRECTIONS",
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
]

CORRECTIONS = ("exact", "none")

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
    m = z.amax(dim=-1, keepdim=True)
    z.sub_(m)  # z ← z − m ≤ 0
    e = torch.exp(z)
    Z = e.sum(dim=-1)
    ez = torch.linalg.vecdot(e, z)
    e.square_()
    e2 = e.sum(dim=-1)
    e2z = torch.linalg.vecdot(e, z)
    return torch.stack([m.squeeze(-1), Z, ez, e2, e2z], dim=-1)


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

    At most one chunk's float32 temporaries (two ``[chunk, V]`` buffers, reused across chunks)
    exist at a time, so vocabularies of 256k work with bounded memory. Outputs carry no gradient.

    Args:
        logits: ``[N, V]`` raw logits of any float dtype (not modified).
        labels: ``[N]`` sampled token ids for ``log π_k``, or ``None``.
        temperature: scalar, or ``[N]`` per-token temperatures; statistics are those of
            ``softmax(logits / T)``.
        valid: ``[N]`` bool; masked tokens are skipped and get 0 in every output.
        chunk_size: tokens per chunk (default :func:`default_chunk_size`).

    Returns:
        :class:`LogitStats`, each field ``[N]`` float32 on the logits' device.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, V], got shape {tuple(logits.shape)}")
    n, vocab = logits.shape
    device = logits.device
    if chunk_size is None:
        chunk_size = default_chunk_size(vocab)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    per_token_t = isinstance(temperature, Tensor) and temperature.numel() > 1
    if per_token_t and temperature.reshape(-1).shape[0] != n:
        raise ValueError(f"temperature has {temperature.numel()} entries for {n} tokens")
    if isinstance(temperature, Tensor) and not per_token_t:
        temperature = float(temperature.reshape(-1)[0]) if temperature.numel() else 1.0

    rows = torch.arange(n, device=device) if valid is None else valid.reshape(-1).nonzero().squeeze(-1)
    out = torch.zeros(4, n, dtype=torch.float32, device=device)
    if rows.numel() == 0:
        return LogitStats(out[0] if labels is not None else None, out[1], out[2], out[3])

    buf = torch.empty(min(chunk_size, rows.numel()), vocab, dtype=torch.float32, device=device)
    for start in range(0, rows.numel(), chunk_size):
        idx = rows[start : start + chunk_size]
        z = buf[: idx.numel()]
        block = logits.index_select(0, idx) if valid is not None else logits[start : start + idx.numel()]
        if per_token_t:
            t = temperature.reshape(-1).index_select(0, idx).to(torch.float32).clamp_min(1e-8)
            torch.div(block, t.unsqueeze(-1), out=z)
        elif temperature != 1.0:
            torch.div(block, float(temperature), out=z)
        else:
            z.copy_(block)
        label_logit = None
        if labels is not None:
            label_logit = z.gather(1, labels.reshape(-1).index_select(0, idx).long().unsqueeze(-1)).squeeze(-1)
        log_norm, entropy, s2, s2l = finalize_logit_sums(logit_partial_sums(z))
        if label_logit is not None:
            out[0, idx] = label_logit - log_norm
        out[1, idx] = entropy
        out[2, idx] = s2
        out[3, idx] = s2l
    return LogitStats(out[0] if labels is not None else None, out[1], out[2], out[3])


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
    """(E3) ``P_t = Σπ²(log π + H) − π_k(ℓ_t + H)``; any common shape, computed in float64.

    ``correction="none"`` returns only the sampled-token term ``−π_k(ℓ_t + H)`` (ablation D2).
    Returns a tensor of the inputs' shape and float32 dtype.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    ell = log_prob.double()
    h = entropy.double()
    coeff = -torch.exp(ell) * (ell + h)
    if correction == "exact":
        coeff = coeff + sum_pi_squared_log_pi.double() + h * sum_pi_squared.double()
    return coeff.float()


def polarity(advantages: Tensor, coefficient: Tensor) -> Tensor:
    """(E5) entropy polarity ``ρ_t = A_t P_t`` (same shape as the inputs)."""
    return advantages * coefficient


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


@dataclass(frozen=True)
class PapoAdvantage:
    """Everything :func:`papo_advantage` computes; tensors are ``[B, T]`` unless noted."""

    advantages: Tensor  # Â, float32
    base_advantages: Tensor  # A broadcast over tokens, float32 (0 at masked tokens)
    coefficient: Tensor  # P_t, float32
    rho: Tensor  # ρ_t = A_t P_t, float32
    branch: Tensor  # int8 labels, +1 / −1 / 0
    masses: Tensor  # float64 [2], (M₊, M₋) over the (reduced) batch
    expand_weight: float  # w₊ after conservation and clamping
    contract_weight: float  # w₋ after conservation and clamping
    scale: float  # conservation factor c


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
    w_min: float = 0.2,
    w_max: float = 5.0,
    mass_reduce: Optional[Callable[[Tensor], Tensor]] = None,
) -> PapoAdvantage:
    """(A1)–(A4) on one batch.

    Args:
        scores: ``[B]`` sequence rewards; groups: ``[B]`` dense group ids (whole groups only).
        response_mask: ``[B, T]`` 1 for valid response tokens.
        log_prob, entropy, sum_pi_squared, sum_pi_squared_log_pi: ``[B, T]`` θ_old statistics.
        expand, contract: tracker weights before conservation.
        mass_reduce: optional function applied to the float64 ``[2]`` masses before conservation
            (an all-reduce under data parallelism, so every shard uses the same weights).
    """
    mask = response_mask.bool()
    base = group_advantage(scores, groups, norm_by_std=norm_by_std, epsilon=epsilon).unsqueeze(-1) * mask
    coeff = polarity_coefficient(log_prob, entropy, sum_pi_squared, sum_pi_squared_log_pi, correction) * mask
    rho = polarity(base, coeff)
    masses = branch_masses(rho, base, mask)
    if mass_reduce is not None:
        masses = mass_reduce(masses)
    w_plus, w_minus, scale = conserve_pressure(masses, expand, contract, w_min=w_min, w_max=w_max)
    adv, branch = apply_branch_weights(base, rho, mask, w_plus, w_minus)
    return PapoAdvantage(adv, base, coeff, rho, branch, masses, w_plus, w_minus, scale)
