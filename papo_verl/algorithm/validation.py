"""Validation of polarity on the step's own batch (docs/algorithm.md §4): the driver's side, pure torch.

Every ``validate_every`` steps the PAPO trainer asks the actor (:mod:`papo_verl.integration.engine`) for

* the **branch response** at θ_old: ``r_S = −∇H̄·∇L_S``, the first-order change of the batch's
  token-mean entropy ``H̄`` caused by a unit SGD step on the policy-gradient loss
  ``L_S = −(1/N) Σ_{t∈S} A_t log π_t`` of one token subset ``S`` alone. The worker returns it for all
  tokens, for ρ > 0 and for A > 0; the other subsets follow by linearity (tokens with A = 0 carry no
  gradient; the negligible tokens with A ≠ 0 and P_t exactly 0 count with "contract");
* the **same batch at θ_new**, after the step's optimizer updates: its token entropies, and
  ``∇H̄(θ_old)·(θ_new − θ_old)``, the first-order prediction of the realised change.

:func:`branch_response_metrics` and :func:`same_batch_metrics` turn them into ``papo/val/*`` metrics
(glossary in :mod:`papo_verl.algorithm.metrics`); :class:`ValidationHistory` keeps the across-step pairs.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

__all__ = ["ValidationHistory", "branch_response_metrics", "same_batch_metrics"]

_P = "papo/val/"


def branch_response_metrics(values: Tensor, expand_weight: float, contract_weight: float,
                            split: str = "polarity") -> dict[str, float]:
    """``papo/val/*`` branch responses from the worker's ``[r_all, r_expand, r_positive, H̄]`` (nats per unit step).

    ``branch_dH_applied`` is the response of the step PAPO applied: the configured ``split``'s expanding
    branch weighted by ``expand_weight`` plus its contracting branch by ``contract_weight``.
    """
    r_all, r_expand, r_positive, mean_entropy = (float(v) for v in values)
    out = {
        _P + "branch_dH_expand": r_expand,
        _P + "branch_dH_contract": r_all - r_expand,
        _P + "sign_split_dH_neg_adv": r_all - r_positive,
        _P + "sign_split_dH_pos_adv": r_positive,
        _P + "branch_dH_grpo": r_all,
        _P + "entropy_before": mean_entropy,
    }
    if split == "polarity":
        expanding, contracting = out[_P + "branch_dH_expand"], out[_P + "branch_dH_contract"]
    else:
        expanding, contracting = out[_P + "sign_split_dH_neg_adv"], out[_P + "sign_split_dH_pos_adv"]
    out[_P + "branch_dH_applied"] = expand_weight * expanding + contract_weight * contracting
    return out


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")  # undefined for a constant or tiny sample
    return float(np.corrcoef(x, y)[0, 1])


def same_batch_metrics(
    entropy_before: Tensor,
    entropy_after: Tensor,
    log_prob: Tensor,
    base_advantages: Tensor,
    advantages: Tensor,
    coefficient: Tensor,
    mask: Tensor,
    first_order: Optional[float] = None,
) -> dict[str, float]:
    """Measured vs predicted entropy change of the same batch's tokens across one training step.

    Args (all ``[B, T]``, response-aligned; values at masked tokens are ignored):
        entropy_before, entropy_after: token entropies ``H_t`` at θ_old and θ_new.
        log_prob: ``log π_k`` at θ_old.
        base_advantages, advantages: ``A_t`` and the applied ``Â_t``.
        coefficient: ``P_t`` at θ_old (the configured ``correction``).
        first_order: ``∇H̄(θ_old)·(θ_new − θ_old)`` from the worker (nats), if measured.

    Per token the prediction is ``Â_t P_t`` (first order, own state only; the step size is unknown, so
    it is compared by sign and correlation), against the sampled-term-only ``−Â_t π_k(ℓ_t + H_t)``.
    Correlations and agreements use the valid tokens with ``A_t ≠ 0`` (those the update moved).
    """
    from scipy.stats import spearmanr

    valid = mask.bool()
    delta = (entropy_after.double() - entropy_before.double())[valid]
    adv = advantages.double()[valid]
    predicted = adv * coefficient.double()[valid]
    ell, h = log_prob.double()[valid], entropy_before.double()[valid]
    sampled = -adv * torch.exp(ell) * (ell + h)
    moved = (base_advantages[valid] != 0) & torch.isfinite(delta)
    out = {
        _P + "dH_measured": float(delta.mean()) if delta.numel() else float("nan"),
        _P + "dH_predicted": float(predicted.mean()) if predicted.numel() else float("nan"),
    }
    if first_order is not None:
        out[_P + "dH_first_order"] = float(first_order)
    d, p, q = (t[moved].numpy() for t in (delta, predicted, sampled))
    out[_P + "token_corr_pearson"] = _pearson(d, p)
    out[_P + "token_corr_spearman"] = float(spearmanr(d, p).statistic) if len(d) >= 3 else float("nan")
    changed = d != 0
    out[_P + "sign_agreement"] = float(np.mean(np.sign(d[changed]) == np.sign(p[changed]))) if changed.any() else math.nan
    out[_P + "sign_agreement_sampled_only"] = (float(np.mean(np.sign(d[changed]) == np.sign(q[changed])))
                                              if changed.any() else math.nan)
    return out


class ValidationHistory:
    """The last ``window`` validation steps' ``(dH_predicted, dH_measured)`` pairs and their correlation."""

    def __init__(self, window: int = 20) -> None:
        if window < 3:
            raise ValueError(f"window must be >= 3, got {window}")
        self.window = window
        self.pairs: deque[tuple[float, float]] = deque(maxlen=window)

    def add(self, predicted: float, measured: float) -> dict[str, float]:
        """Record one step's pair; returns ``papo/val/dH_corr_*`` once 3 pairs exist."""
        if math.isfinite(predicted) and math.isfinite(measured):
            self.pairs.append((float(predicted), float(measured)))
        if len(self.pairs) < 3:
            return {}
        from scipy.stats import spearmanr

        pred, meas = (np.asarray(v, dtype=np.float64) for v in zip(*self.pairs))
        return {_P + "dH_corr_pearson": _pearson(pred, meas),
                _P + "dH_corr_spearman": float(spearmanr(pred, meas).statistic),
                _P + "dH_corr_window": float(len(self.pairs))}

    def state_dict(self) -> dict[str, Any]:
        return {"window": self.window, "pairs": [list(p) for p in self.pairs]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pairs = deque((tuple(map(float, p)) for p in state["pairs"]), maxlen=self.window)
