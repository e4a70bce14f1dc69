"""Per-step ``papo/*`` metrics of one batch's advantages, and the glossary of every logged metric.

Pure torch. Shares are over the valid response tokens of the whole batch (token-averaged), never
averaged per micro-batch. The glossary below is the single source for the README's metrics table
and is checked by the tests: every metric papo_verl logs must be explained here.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from papo_verl.algo import PapoAdvantage

__all__ = ["METRICS_GLOSSARY", "advantage_metrics"]

# name -> (averaging, meaning). "token": over valid response tokens of the batch; "step": one value per step.
METRICS_GLOSSARY: dict[str, tuple[str, str]] = {
    # driver: tracker (papo_verl.tracker)
    "papo/entropy": ("token", "H̄_k: token-mean entropy (nats) of θ_old over the batch's valid response tokens; the tracker's input."),
    "papo/entropy_level": ("step", "m_k: EMA of H̄ (β = level_momentum), nats."),
    "papo/entropy_trend": ("step", "d_k: EMA of H̄_k − H̄_{k−1} (β = trend_momentum), nats per step; < 0 while entropy falls."),
    "papo/entropy_ref": ("step", "H_ref: mean H̄ of the warm-up steps, nats; logged once warm-up is over."),
    "papo/entropy_target": ("step", "H*(progress): the schedule's target entropy (only with target_knots), nats."),
    "papo/tilt": ("step", "g_k ∈ [−1, 1]: > 0 moves pressure to entropy-expanding tokens, < 0 to contracting ones."),
    "papo/tracker_warmup": ("step", "1 while the tracker is in warm-up (weights neutral), else 0."),
    "papo/tracker_rejected": ("step", "Cumulative count of rejected (non-finite or negative) entropy observations."),
    # driver: advantage (papo_verl.algo via the registered estimator)
    "papo/expand_weight": ("step", "w₊ applied to ρ > 0 tokens, after pressure conservation and clamping."),
    "papo/contract_weight": ("step", "w₋ applied to ρ < 0 tokens, after pressure conservation and clamping."),
    "papo/expand_weight_raw": ("step", "w₊ = 1 + α g before conservation."),
    "papo/contract_weight_raw": ("step", "w₋ = 1 − α g before conservation."),
    "papo/conservation_scale": ("step", "c = (M₊ + M₋)/(w₊M₊ + w₋M₋): factor that keeps Σ|Â| = Σ|A|."),
    "papo/clamped": ("step", "1 if w_min/w_max clamped a weight this step (Σ|Â| then differs from Σ|A|), else 0."),
    "papo/token_share_expand": ("token", "Share of valid tokens with ρ > 0 (entropy-expanding branch)."),
    "papo/token_share_contract": ("token", "Share of valid tokens with ρ < 0 (entropy-contracting branch)."),
    "papo/token_share_neutral": ("token", "Share of valid tokens with ρ = 0 (zero advantage, e.g. zero-variance groups)."),
    "papo/adv_mass_share_expand": ("token", "Σ_{ρ>0}|A| / Σ|A| before reweighting."),
    "papo/adv_mass_share_expand_reweighted": ("token", "Σ_{ρ>0}|Â| / Σ|Â| after reweighting: the pressure actually applied to expansion."),
    "papo/quadrant_pos_adv_expand": ("token", "Share of valid tokens with A > 0 and ρ > 0 (reinforced low-probability samples)."),
    "papo/quadrant_pos_adv_contract": ("token", "Share of valid tokens with A > 0 and ρ < 0 (reinforced high-probability samples)."),
    "papo/quadrant_neg_adv_expand": ("token", "Share of valid tokens with A < 0 and ρ > 0 (penalised high-probability samples)."),
    "papo/quadrant_neg_adv_contract": ("token", "Share of valid tokens with A < 0 and ρ < 0 (penalised low-probability samples)."),
    "papo/polarity_mean": ("token", "Mean ρ = A·P over valid tokens before reweighting (∝ first-order ΔH of a GRPO step)."),
    "papo/polarity_mean_reweighted": ("token", "Mean Â·P after reweighting (∝ predicted ΔH of the applied PAPO step)."),
    "papo/correction_flip_share": ("token", "Share of valid tokens with A ≠ 0 whose polarity sign differs between the exact P_t and the sampled-term-only estimate."),
    "papo/dH_measured": ("step", "H̄_k − H̄_{k−1}: measured change of the token-mean entropy since the previous step, nats."),
    "papo/dH_predicted": ("step", "polarity_mean_reweighted of the previous step, paired with dH_measured."),
    "papo/dH_corr_pearson": ("step", "Pearson correlation of (dH_predicted, dH_measured) over the last dh_window steps."),
    "papo/dH_corr_spearman": ("step", "Spearman rank correlation of the same pairs."),
    "papo/dH_corr_window": ("step", "Number of pairs in the correlation window."),
    # worker: policy-loss hook (papo_verl.loss), one value per step aggregated over micro-batches and DP ranks
    "actor/papo/token_share_expand": ("token", "Share of the update's valid tokens in the expanding branch (as labelled at θ_old)."),
    "actor/papo/token_share_contract": ("token", "Share in the contracting branch."),
    "actor/papo/pg_mass_share_expand": ("token", "Share of Σ|∂L_pg/∂log π_t| carried by expanding tokens: pressure the loss applies to the branch, after clipping."),
    "actor/papo/pg_mass_share_contract": ("token", "The same for contracting tokens."),
    "actor/papo/clip_frac_expand": ("token", "Share of expanding tokens with A ≠ 0 whose policy-gradient is zeroed by the loss (PPO clip, dual clip, Clip-Cov)."),
    "actor/papo/clip_frac_contract": ("token", "The same for contracting tokens."),
    "actor/papo/polarity_flip_share": ("token", "Share of labelled tokens whose polarity sign under the current policy differs from θ_old (first-order validity within an update); needs track_polarity_flips."),
    "actor/papo/expand_weight": ("step", "w₊ as received by the actor workers (must equal papo/expand_weight)."),
    "actor/papo/contract_weight": ("step", "w₋ as received by the actor workers."),
}


def _share(num: Tensor, den: Tensor) -> float:
    den = float(den)
    return float(num) / den if den > 0 else 0.0


def advantage_metrics(
    result: PapoAdvantage,
    response_mask: Tensor,
    *,
    sampled_coefficient: Optional[Tensor] = None,
    raw_weights: Optional[tuple[float, float]] = None,
    w_min: float = 0.2,
    w_max: float = 5.0,
) -> dict[str, float]:
    """Batch metrics of one PAPO advantage computation (keys in :data:`METRICS_GLOSSARY`).

    Args:
        result: output of :func:`papo_verl.algo.papo_advantage`.
        response_mask: ``[B, T]`` valid tokens.
        sampled_coefficient: ``[B, T]`` sampled-term-only coefficient, for ``correction_flip_share``.
        raw_weights: ``(expand, contract)`` before conservation.
    """
    valid = response_mask.bool()
    n_valid = valid.sum()
    branch = result.branch
    base, adv, rho = result.base_advantages.double(), result.advantages.double(), result.rho
    pos, neg = (base > 0) & valid, (base < 0) & valid
    expand, contract = branch > 0, branch < 0
    mass = base.abs()
    mass_re = adv.abs()
    out = {
        "papo/expand_weight": result.expand_weight,
        "papo/contract_weight": result.contract_weight,
        "papo/conservation_scale": result.scale,
        "papo/token_share_expand": _share(expand.sum(), n_valid),
        "papo/token_share_contract": _share(contract.sum(), n_valid),
        "papo/token_share_neutral": _share((valid & (branch == 0)).sum(), n_valid),
        "papo/adv_mass_share_expand": _share((mass * expand).sum(), (mass * valid).sum()),
        "papo/adv_mass_share_expand_reweighted": _share((mass_re * expand).sum(), (mass_re * valid).sum()),
        "papo/quadrant_pos_adv_expand": _share((pos & expand).sum(), n_valid),
        "papo/quadrant_pos_adv_contract": _share((pos & contract).sum(), n_valid),
        "papo/quadrant_neg_adv_expand": _share((neg & expand).sum(), n_valid),
        "papo/quadrant_neg_adv_contract": _share((neg & contract).sum(), n_valid),
        "papo/polarity_mean": _share((rho.double() * valid).sum(), n_valid),
        "papo/polarity_mean_reweighted": _share((adv * result.coefficient.double() * valid).sum(), n_valid),
    }
    if raw_weights is not None:
        out["papo/expand_weight_raw"], out["papo/contract_weight_raw"] = float(raw_weights[0]), float(raw_weights[1])
        scaled = (result.scale * raw_weights[0], result.scale * raw_weights[1])
        out["papo/clamped"] = float(any(s < w_min or s > w_max for s in scaled))
    if sampled_coefficient is not None:
        nonzero = valid & (base != 0)
        flipped = nonzero & (torch.sign(sampled_coefficient) != torch.sign(result.coefficient))
        out["papo/correction_flip_share"] = _share(flipped.sum(), nonzero.sum())
    return out


GLOSSARY_BEGIN = "<!-- metrics-glossary:begin (generated by `python -m papo_verl.metrics`) -->"
GLOSSARY_END = "<!-- metrics-glossary:end -->"


def glossary_markdown() -> str:
    """The README's metrics table, generated from :data:`METRICS_GLOSSARY`."""
    rows = ["| metric | averaged over | meaning |", "|---|---|---|"]
    for name, (averaging, meaning) in METRICS_GLOSSARY.items():
        rows.append(f"| `{name}` | {averaging} | {meaning.replace('|', chr(92) + '|')} |")
    return "\n".join([GLOSSARY_BEGIN, *rows, GLOSSARY_END])


if __name__ == "__main__":
    print(glossary_markdown())
