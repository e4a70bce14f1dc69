"""PAPO — Polarity-Aware Policy Optimization: the reference formulas, as whole-tensor functions.

Paper: J. Zhang, Z. Fu, J. Shen et al., "Entropy Polarity in Reinforcement Fine-Tuning: Direction,
Asymmetry, and Control", arXiv 2605.11775 (2026). Not TRL's "Perception-Aware" PAPO. The full
specification, with the [paper]/[ours] split, the controller and the validation, is docs/algorithm.md.

This module is the readable definition and the tests' oracle (every function computes in float64 when
given float64 inputs). It imports only torch and numpy. Production paths with bounded memory live in
:mod:`papo_verl.kernels` (chunked logit sums and Triton; the two-pass row-chunked advantage) and are
tested against these functions.

Equations (state ``s_t``, sampled token ``k``, ``π = softmax(z / T)``)
-----------------------------------------------------------------------
(E1) ``H_t = −Σ_a π_a log π_a``, ``ℓ_t = log π_k``                                  [paper]
(E2) ``C_t = Σ_a π_a² (log π_a + H_t)`` — state-wise distributional correction       [paper]
(E3) ``P_t = C_t − π_k (ℓ_t + H_t)`` — polarity coefficient                          [paper]
(E4) one policy-gradient step ``Δz = η A_t (e_k − π)`` changes the entropy by ``ΔH_t = η A_t P_t + O(η²)``;
     ``−η A_t π_k(ℓ_t + H_t)`` is the sampled-token term, ``η A_t C_t`` the correction  [paper]
(E5) entropy polarity ``ρ_t = A_t P_t``: ``ρ_t > 0`` expands entropy, ``ρ_t < 0`` contracts it [paper]

PAPO advantage: the paper states "preserve both branches, control by advantage reweighting"; the
concrete rule is this project's design:

(A1) base advantage: GRPO's group-relative outcome advantage ``A_i = (r_i − mean_g) / (std_g + ε)``
     (or ``r_i − mean_g``), broadcast over the response tokens.                       [ours]
(A2) branch weights ``w₊ = 1 + α g``, ``w₋ = 1 − α g`` from the tracker's tilt ``g``.  [ours]
(A3) pressure conservation: with ``M± = Σ_{t ∈ branch±} |A_t|`` over the valid tokens of the whole
     batch, ``c = (M₊ + M₋) / (w₊ M₊ + w₋ M₋)`` and ``w± ← clamp(c w±, w_min, w_max)``, so that
     ``Σ|Â_t| = Σ|A_t|`` before clamping: pressure moves between branches, the step size does not. [ours]
(A4) ``Â_t = A_t · w_{branch(t)}``, with weight 1 where ``ρ_t = 0``.                 [ours]

Deviations and implementation choices (README "Faithfulness notes", docs/algorithm.md)
-------------------------------------------------------------------------------------
* D1 — groups with zero reward variance, including groups of one response, get ``A = 0``.
  verl's ``grpo`` gives a singleton group its raw score instead; PAPO has no baseline there.
* D2 — ``correction="none"`` drops ``C_t`` (sampled-term-only ablation); ``"exact"`` is the default.
* D3 — statistics are computed in float32 from the temperature-scaled logits, whatever the logits'
  dtype, without gradient (they are θ_old quantities; the loss only reads them as constants).
* D4 — ``M±`` is a batch-global sum accumulated in float64; under data parallelism pass
  ``mass_reduce`` (an all-reduce) so every rank uses the same weights.
* D5 — the first-order identity (E4) holds for a softmax over free logits; in a network the logits
  move together, so how well polarity predicts the entropy change is measured on the step's own batch
  (``validate_every``: :mod:`papo_verl.algorithm.validation`), not assumed.
* D6 — the controller's input is ``H̄`` with its standard error (:func:`entropy_mean_stderr`), each
  prompt's response group one sampling unit. ``split="advantage_sign"`` (ablation) labels branches by
  ``sign(−A_t)`` instead of ``sign(ρ_t)``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from papo_verl.algorithm.config import CORRECTIONS, SPLITS  # the knobs' choices, defined once


def _dtype(*tensors: Optional[Tensor]) -> torch.dtype:
    """float32 (D3), or float64 when an input is float64 (the tests' oracle)."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


class LogitStats(NamedTuple):
    """Per-token statistics of ``π = softmax(logits / T)``, each ``[N]``: ``log_prob`` = ``log π_k`` (None
    without labels), ``entropy`` = ``H``, ``sum_pi_squared`` = ``Σπ²``, ``sum_pi_squared_log_pi`` =
    ``Σπ² log π``."""

    log_prob: Optional[Tensor]
    entropy: Tensor
    sum_pi_squared: Tensor
    sum_pi_squared_log_pi: Tensor


@torch.no_grad()
def logit_statistics(logits: Tensor, labels: Optional[Tensor] = None, temperature: Union[float, Tensor] = 1.0, *,
                     valid: Optional[Tensor] = None) -> LogitStats:
    """(E1) and the sums (E2) needs, from the full softmax (``[N, V]`` temporaries; the production path
    reading the logits once with bounded memory is :func:`papo_verl.kernels.logit_stats`).

    Args:
        logits: ``[N, V]`` raw logits, any float dtype. labels: ``[N]`` sampled token ids, or None.
        temperature: scalar or ``[N]``. valid: ``[N]`` bool; masked rows (any content) give 0.
    Returns:
        :class:`LogitStats`, float32 (float64 for float64 logits); ``π = 0`` entries count as 0.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, V], got shape {tuple(logits.shape)}")
    dtype = _dtype(logits)
    t = torch.as_tensor(temperature, dtype=dtype, device=logits.device).reshape(-1, 1)
    if t.numel() not in (1, logits.shape[0]):
        raise ValueError(f"temperature has {t.numel()} entries for {logits.shape[0]} tokens")
    keep = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device) if valid is None else valid.bool()
    z = torch.where(keep.unsqueeze(-1), logits.to(dtype) / t, 0.0)
    log_pi = torch.log_softmax(z, dim=-1)
    pi = log_pi.exp()
    pi_log_pi = torch.where(pi > 0, pi * log_pi, 0.0)
    if labels is not None:  # masked rows may hold any label
        labels = torch.where(keep, labels.reshape(-1).to(device=logits.device, dtype=torch.long), 0)
    log_prob = None if labels is None else log_pi.gather(1, labels.unsqueeze(-1)).squeeze(-1)
    stats = (log_prob, -pi_log_pi.sum(-1), (pi * pi).sum(-1), (pi * pi_log_pi).sum(-1))
    return LogitStats(*(None if s is None else torch.where(keep, s, 0.0) for s in stats))


def polarity_coefficient(log_prob: Tensor, entropy: Tensor, sum_pi_squared: Optional[Tensor],
                         sum_pi_squared_log_pi: Optional[Tensor], correction: str = "exact") -> Tensor:
    """(E3) ``P_t = (Σπ² log π + H Σπ²) − π_k(ℓ_t + H)``, any common shape; float32 (float64 inputs: float64).

    ``correction="none"`` returns only the sampled-token term ``−π_k(ℓ_t + H)`` (D2; the two sums may then
    be None). The same operation sequence as the row-chunked pass of :mod:`papo_verl.kernels.advantage`.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    dtype = _dtype(log_prob, entropy, sum_pi_squared, sum_pi_squared_log_pi)
    ell, h = log_prob.to(dtype), entropy.to(dtype)
    sampled = torch.exp(ell)
    lh = ell + h
    if correction == "exact":
        correction_term = torch.addcmul(sum_pi_squared_log_pi.to(dtype), h, sum_pi_squared.to(dtype))  # C_t (E2)
        return torch.addcmul(correction_term, sampled, lh, value=-1.0)
    return torch.mul(sampled, lh).neg_()


def polarity(advantages: Tensor, coefficient: Tensor) -> Tensor:
    """(E5) entropy polarity ``ρ_t = A_t P_t`` (same shape as the inputs)."""
    return advantages * coefficient


def entropy_mean_stderr(entropy: Tensor, mask: Tensor, groups: Optional[Tensor] = None) -> tuple[float, float]:
    """(D6) token-mean entropy ``H̄ = Σ h / Σ n`` of a ``[B, T]`` batch and its standard error.

    ``mask``: 1 on valid tokens (any entropy value elsewhere, NaN included, is ignored); ``groups``: optional
    ``[B]`` dense ids (:func:`group_ids`) whose clusters become the sampling units. See :func:`ratio_mean_stderr`.
    """
    valid = mask.bool()
    sums = torch.where(valid, entropy, torch.zeros((), dtype=entropy.dtype)).sum(-1, dtype=torch.float64)
    return ratio_mean_stderr(sums, valid.sum(-1).double(), groups)


def ratio_mean_stderr(sums: Tensor, counts: Tensor, groups: Optional[Tensor] = None) -> tuple[float, float]:
    """``(Σ h / Σ n, s)`` from per-response sums ``h`` and valid-token counts ``n`` (float64 ``[B]``).

    Tokens of one response (and responses of one prompt) are correlated, so the sampling units are
    responses (or the clusters of ``groups``), never tokens: with unit sums ``h_u``, ``n_u`` and residuals
    ``e_u = h_u − H̄ n_u`` over the ``U`` units with ``n_u > 0``, ``s² = U/(U−1) · Σ_u e_u² / (Σ_u n_u)²``
    (the delta-method variance of a ratio estimator); ``s = NaN`` with fewer than 2 units. The inputs are
    additive over any split of a response's tokens: micro-batches, ranks and padding do not matter.
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


def group_ids(index: Union[Sequence, np.ndarray, Tensor], device: Union[str, torch.device, None] = None) -> Tensor:
    """Dense group ids ``[B]`` (int64, 0..G−1) for arbitrary hashable labels (uids)."""
    if isinstance(index, Tensor):
        _, inverse = torch.unique(index.reshape(-1), return_inverse=True)
        return inverse.to(device or index.device)
    arr = np.asarray(index)
    if arr.dtype == object:
        arr = arr.astype(str)
    _, inverse = np.unique(arr, return_inverse=True)
    return torch.as_tensor(inverse.reshape(-1), dtype=torch.long, device=device)


def group_advantage(scores: Tensor, groups: Tensor, *, norm_by_std: bool = True, epsilon: float = 1e-6) -> Tensor:
    """(A1) outcome advantage per response, ``[B]`` float32 (float64 scores: float64).

    ``groups``: ``[B]`` dense ids; ``norm_by_std=False`` gives Dr.GRPO. Groups of one response and groups
    whose scores are all equal get exactly 0 (D1). Group sums are accumulated in float64.
    """
    x = scores.double()
    n_groups = int(groups.max().item()) + 1 if groups.numel() else 0
    count = torch.zeros(n_groups, dtype=torch.float64, device=x.device).index_add_(0, groups, torch.ones_like(x))
    mean = torch.zeros_like(count).index_add_(0, groups, x) / count
    centred = x - mean[groups]
    std = torch.sqrt(torch.zeros_like(count).index_add_(0, groups, centred * centred) / (count - 1).clamp_min(1.0))
    hi = torch.full_like(count, -torch.inf).scatter_reduce_(0, groups, x, "amax")
    lo = torch.full_like(count, torch.inf).scatter_reduce_(0, groups, x, "amin")
    degenerate = (count < 2) | (hi == lo)
    adv = centred / (std[groups] + epsilon) if norm_by_std else centred
    return torch.where(degenerate[groups], 0.0, adv).to(_dtype(scores))


def branch_masses(rho: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """(A3) ``M± = Σ_{valid, ρ≷0} |A_t|``, float64 ``[2]`` ``(M₊, M₋)``; additive over splits of the batch."""
    valid = mask.bool()
    magnitude = advantages.abs().double()
    return torch.stack([(magnitude * (valid & (rho > 0))).sum(), (magnitude * (valid & (rho < 0))).sum()])


def conserve_pressure(masses: Tensor, expand: float, contract: float, *, w_min: float = 0.2,
                      w_max: float = 5.0) -> tuple[float, float, float]:
    """(A3) rescale the tracker's ``(expand, contract) > 0`` so that ``w₊M₊ + w₋M₋ = M₊ + M₋``, then clamp.

    Returns ``(w₊, w₋, c)``: the clamped weights and the factor ``c`` (1 when both masses are 0).
    """
    if not (expand > 0 and contract > 0):
        raise ValueError(f"branch weights must be > 0, got expand={expand}, contract={contract}")
    m_plus, m_minus = (float(v) for v in masses)
    denom = expand * m_plus + contract * m_minus
    scale = (m_plus + m_minus) / denom if denom > 0 else 1.0
    return min(max(scale * expand, w_min), w_max), min(max(scale * contract, w_min), w_max), scale


def apply_branch_weights(advantages: Tensor, rho: Tensor, mask: Tensor, w_plus: float,
                         w_minus: float) -> tuple[Tensor, Tensor]:
    """(A4) ``Â_t = A_t w_{branch(t)}`` (0 at masked tokens) and the int8 branch labels: ``+1`` expanding
    (ρ > 0), ``−1`` contracting (ρ < 0), ``0`` neutral or masked."""
    valid = mask.bool()
    branch = (torch.sign(rho) * valid).to(torch.int8)
    w = lambda value: torch.tensor(value, dtype=advantages.dtype, device=advantages.device)  # noqa: E731
    weight = torch.where(branch > 0, w(w_plus), torch.where(branch < 0, w(w_minus), w(1.0)))
    return advantages * weight * valid, branch


class ReweightedAdvantage(NamedTuple):
    """What the reference :func:`papo_advantage` computes for a ``[B, T]`` batch (masked tokens hold 0)."""

    advantages: Tensor  # Â_t
    branch: Tensor  # int8 +1 / −1 / 0
    base_advantages: Tensor  # A_t
    coefficient: Tensor  # P_t
    rho: Tensor  # ρ_t = A_t P_t
    masses: Tensor  # float64 [2] (M₊, M₋) after mass_reduce
    expand_weight: float
    contract_weight: float
    scale: float


@torch.no_grad()
def papo_advantage(scores: Tensor, groups: Tensor, response_mask: Tensor, log_prob: Tensor, entropy: Tensor,
                   sum_pi_squared: Optional[Tensor], sum_pi_squared_log_pi: Optional[Tensor], expand: float,
                   contract: float, *, norm_by_std: bool = True, epsilon: float = 1e-6, correction: str = "exact",
                   split: str = "polarity", w_min: float = 0.2, w_max: float = 5.0,
                   mass_reduce: Optional[Callable[[Tensor], Tensor]] = None) -> ReweightedAdvantage:
    """(A1)–(A4) on one batch, whole-tensor (the estimator runs :func:`papo_verl.kernels.advantage.papo_advantage`).

    Args:
        scores: ``[B]`` sequence rewards; groups: ``[B]`` dense ids (whole groups only).
        response_mask: ``[B, T]``, nonzero on valid response tokens.
        log_prob, entropy, sum_pi_squared, sum_pi_squared_log_pi: ``[B, T]`` θ_old statistics (values at
            masked tokens, NaN included, are ignored).
        expand, contract: the tracker's weights (A2) before conservation.
        split: ``"polarity"``: branch = sign(ρ_t); ``"advantage_sign"`` (D6 ablation): sign(−A_t).
        mass_reduce: applied to the float64 ``[2]`` masses (an all-reduce under data parallelism, D4).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    valid = response_mask.bool()
    dtype = _dtype(scores, log_prob)
    base = group_advantage(scores, groups, norm_by_std=norm_by_std, epsilon=epsilon).to(valid.device, dtype)
    base = torch.where(valid, base.unsqueeze(-1), 0.0)
    coefficient = polarity_coefficient(log_prob, entropy, sum_pi_squared, sum_pi_squared_log_pi, correction)
    coefficient = torch.where(valid, coefficient.to(dtype), 0.0)
    rho = polarity(base, coefficient)
    direction = rho if split == "polarity" else -base
    masses = branch_masses(direction, base, valid)
    if mass_reduce is not None:
        masses = mass_reduce(masses)
    w_plus, w_minus, scale = conserve_pressure(masses, expand, contract, w_min=w_min, w_max=w_max)
    advantages, branch = apply_branch_weights(base, direction, valid, w_plus, w_minus)
    return ReweightedAdvantage(advantages, branch, base, coefficient, rho, masses, w_plus, w_minus, scale)
