"""Per-step ``papo/*`` metrics of one batch's advantages, and the glossary of every logged metric.

Pure torch. Shares are over the valid response tokens of the whole batch (token-averaged), never
averaged per micro-batch. The glossary below is the single source for the README's metrics table
and is checked by the tests: every metric papo_verl logs must be explained here.
"""

from __future__ import annotations

from typing import Optional

import torch

from papo_verl.kernels.advantage import PapoAdvantage

__all__ = ["METRICS_GLOSSARY", "advantage_metrics"]

# name -> (averaging, meaning). "token": over valid response tokens of the batch; "step": one value per step.
METRICS_GLOSSARY: dict[str, tuple[str, str]] = {
    # driver: phase controller (papo_verl.algorithm.tracker)
    "papo/entropy": ("token", "H̄_k: token-mean entropy (nats) of θ_old over the batch's valid response tokens; the controller's input."),
    "papo/entropy_stderr": ("step", "s_k: standard error of H̄_k (nats) as the controller used it: the ratio estimator over the batch's prompts (each prompt's n responses one sampling unit), never below entropy_stderr_responses, or, when a caller gives none, estimated from the filter's residuals."),
    "papo/entropy_stderr_measured": ("step", "1 when entropy_stderr was measured from the batch, 0 when the tracker estimated it."),
    "papo/entropy_stderr_responses": ("step", "The same standard error with single responses as sampling units (smaller when a prompt's responses share its difficulty); for comparison only."),
    "papo/entropy_level": ("step", "Filtered entropy level exp(m_k) of the Kalman filter, nats: H̄ with the batch noise averaged out."),
    "papo/entropy_level_sd": ("step", "Standard deviation of the filtered level, nats; demo.png draws level ± 2 sd over the raw H̄."),
    "papo/entropy_slope": ("step", "Filtered slope d_k of log H̄: relative change per step (−0.01 = falling 1 %/step)."),
    "papo/entropy_slope_sd": ("step", "Standard deviation of the filtered slope (relative per step)."),
    "papo/entropy_slope_snr": ("step", "entropy_slope / entropy_slope_sd: the evidence that the trend is real; the trend controller acts only beyond ±evidence_z."),
    "papo/entropy_ref": ("step", "H_ref: mean H̄ of the warm-up steps, nats; logged once warm-up is over."),
    "papo/entropy_target": ("step", "H*(progress): the target controller's target entropy, nats."),
    "papo/target_integral": ("step", "The target controller's integral term (in tilt units, within [−1, 1])."),
    "papo/tilt": ("step", "g_k ∈ [−1, 1]: > 0 moves pressure to entropy-expanding tokens, < 0 to contracting ones."),
    "papo/tracker_warmup": ("step", "1 while the tracker is in warm-up (weights neutral), else 0."),
    "papo/tracker_rejected": ("step", "Cumulative count of rejected (non-finite or negative) entropy observations."),
    # driver: advantage (papo_verl.kernels.advantage via the registered estimator)
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
    # driver: validation of polarity on the step's own batch (papo_verl.algorithm.validation), every validate_every steps
    "papo/val/branch_dH_expand": ("step", "Branch response of the ρ > 0 tokens: −∇H̄·∇L₊, the first-order change of the batch's token-mean entropy from a unit SGD step on their policy-gradient loss alone (nats per unit step). Polarity works when this is > 0."),
    "papo/val/branch_dH_contract": ("step", "The same for the ρ < 0 tokens; polarity works when this is < 0."),
    "papo/val/sign_split_dH_neg_adv": ("step", "Branch response of the A < 0 tokens (the advantage-sign split's 'expanding' branch), for comparison with branch_dH_expand."),
    "papo/val/sign_split_dH_pos_adv": ("step", "Branch response of the A > 0 tokens (the advantage-sign split's 'contracting' branch)."),
    "papo/val/branch_dH_grpo": ("step", "Response of all tokens (the unweighted GRPO step): the sum of either split's two branches."),
    "papo/val/branch_dH_applied": ("step", "Response of the step PAPO applied: w₊ times its expanding branch plus w₋ times its contracting branch (configured split)."),
    "papo/val/entropy_before": ("step", "H̄ at θ_old as the gradient pass computed it (equals papo/entropy)."),
    "papo/val/dH_measured": ("token", "Realised change of the same batch's token-mean entropy over the step, H̄(θ_new) − H̄(θ_old), nats (no batch noise: the same tokens)."),
    "papo/val/dH_first_order": ("step", "Its first-order prediction ∇H̄(θ_old)·(θ_new − θ_old) from the actual parameter change, nats."),
    "papo/val/dH_predicted": ("token", "Token mean of Â_t·P_t, the own-state first-order prediction (∝ ΔH; step size unknown)."),
    "papo/val/token_corr_pearson": ("token", "Pearson correlation over tokens (A ≠ 0) of the measured ΔH_t and the predicted Â_t·P_t (per token polarity is weak: every update moves every token's logits)."),
    "papo/val/token_corr_spearman": ("token", "Spearman rank correlation of the same."),
    "papo/val/sign_agreement": ("token", "Share of tokens (A ≠ 0, ΔH_t ≠ 0) where sign(ΔH_t) = sign(Â_t P_t) with the run's P_t: the exact one, or with correction: none the sampled-term-only one (then it equals sign_agreement_sampled_only)."),
    "papo/val/sign_agreement_sampled_only": ("token", "The same with the sampled-term-only estimate −Â_t π_k(ℓ_t + H_t): what the correction C_t adds."),
    "papo/val/dH_corr_pearson": ("step", "Pearson correlation over the last validate_window validation steps of (dH_predicted, dH_measured), both on the same batch. Unlike a change between consecutive batches, it contains no batch noise."),
    "papo/val/dH_corr_spearman": ("step", "Spearman rank correlation of the same pairs."),
    "papo/val/dH_corr_window": ("step", "Number of validation steps in that correlation."),
    # worker: policy-loss hook (papo_verl.integration.loss), one value per step aggregated over micro-batches and DP ranks
    "actor/papo/token_share_expand": ("token", "Share of the update's valid tokens in the expanding branch (as labelled at θ_old)."),
    "actor/papo/token_share_contract": ("token", "Share in the contracting branch."),
    "actor/papo/pg_mass_share_expand": ("token", "Share of Σ|∂L_pg/∂log π_t| carried by expanding tokens: pressure the loss applies to the branch, after clipping."),
    "actor/papo/pg_mass_share_contract": ("token", "The same for contracting tokens."),
    "actor/papo/clip_frac_expand": ("token", "Share of expanding tokens with A ≠ 0 whose policy-gradient is zeroed by the loss (PPO clip, dual clip, Clip-Cov)."),
    "actor/papo/clip_frac_contract": ("token", "The same for contracting tokens."),
    "actor/papo/polarity_flip_share": ("token", "Share of labelled tokens whose polarity sign under the current policy differs from θ_old (first-order validity within an update); needs track_polarity_flips and split=polarity."),
    "actor/papo/expand_weight": ("step", "w₊ as received by the actor workers (must equal papo/expand_weight)."),
    "actor/papo/contract_weight": ("step", "w₋ as received by the actor workers."),
}


def _share(num, den) -> float:
    den = float(den)
    return float(num) / den if den > 0 else 0.0


def advantage_metrics(
    result: PapoAdvantage,
    *,
    raw_weights: Optional[tuple[float, float]] = None,
    w_min: float = 0.2,
    w_max: float = 5.0,
    correction: str = "exact",
) -> dict[str, float]:
    """Batch metrics of one PAPO advantage computation (keys in :data:`METRICS_GLOSSARY`).

    Computed in O(B) from the per-response aggregates of :func:`papo_verl.kernels.advantage.papo_advantage`
    (the named properties of :class:`~papo_verl.kernels.advantage.PapoAdvantage`). Branch shares and
    masses describe the branches the configured ``split`` used; the ``quadrant_*`` shares always
    describe polarity.

    Args:
        result: output of :func:`papo_verl.kernels.advantage.papo_advantage`.
        raw_weights: ``(expand, contract)`` before conservation.
        correction: the ``correction`` used (``correction_flip_share`` only exists for ``"exact"``).
    """
    a = result.row_advantages.double()
    pos, neg = a > 0, a < 0
    n_valid = result.valid_tokens
    p_pos, p_neg = result.positive_p_tokens, result.negative_p_tokens
    p_sum = result.p_sum
    expand, contract = result.branch_token_counts()
    neutral = n_valid - expand - contract
    total = n_valid.sum()
    mag = a.abs()
    w_plus, w_minus = result.expand_weight, result.contract_weight
    mass_expand, mass_contract, mass_neutral = (mag * expand).sum(), (mag * contract).sum(), (mag * neutral).sum()
    mass = mass_expand + mass_contract + mass_neutral
    mass_re = w_plus * mass_expand + w_minus * mass_contract + mass_neutral
    # Σ_t Â_t P_t per response
    if result.split == "polarity":  # for A_b > 0 the P > 0 part (sum_pos) expands, for A_b < 0 the P < 0 part
        sum_pos = 0.5 * (p_sum + result.p_abs_sum)
        sum_neg = 0.5 * (p_sum - result.p_abs_sum)
        weighted = torch.where(pos, w_plus * sum_pos + w_minus * sum_neg, w_plus * sum_neg + w_minus * sum_pos)
    else:  # the whole response is in one branch: expanding when A_b < 0
        weighted = torch.where(neg, w_plus, w_minus) * p_sum
    out = {
        "papo/expand_weight": w_plus,
        "papo/contract_weight": w_minus,
        "papo/conservation_scale": result.scale,
        "papo/token_share_expand": _share(expand.sum(), total),
        "papo/token_share_contract": _share(contract.sum(), total),
        "papo/token_share_neutral": _share(neutral.sum(), total),
        "papo/adv_mass_share_expand": _share(mass_expand, mass),
        "papo/adv_mass_share_expand_reweighted": _share(w_plus * mass_expand, mass_re),
        "papo/quadrant_pos_adv_expand": _share(p_pos[pos].sum(), total),
        "papo/quadrant_pos_adv_contract": _share(p_neg[pos].sum(), total),
        "papo/quadrant_neg_adv_expand": _share(p_neg[neg].sum(), total),
        "papo/quadrant_neg_adv_contract": _share(p_pos[neg].sum(), total),
        "papo/polarity_mean": _share((a * p_sum).sum(), total),
        "papo/polarity_mean_reweighted": _share((a * weighted).sum(), total),
    }
    if raw_weights is not None:
        out["papo/expand_weight_raw"], out["papo/contract_weight_raw"] = float(raw_weights[0]), float(raw_weights[1])
        scaled = (result.scale * raw_weights[0], result.scale * raw_weights[1])
        out["papo/clamped"] = float(any(s < w_min or s > w_max for s in scaled))
    if correction == "exact":
        nonzero = pos | neg
        flips = result.sampled_term_disagreements[nonzero].sum()
        out["papo/correction_flip_share"] = _share(flips, n_valid[nonzero].sum())
    return out


GLOSSARY_BEGIN = "<!-- metrics-glossary:begin (generated by `python -m papo_verl.algorithm.metrics`) -->"
GLOSSARY_END = "<!-- metrics-glossary:end -->"


def glossary_markdown() -> str:
    """The README's metrics table, generated from :data:`METRICS_GLOSSARY`."""
    rows = ["| metric | averaged over | meaning |", "|---|---|---|"]
    for name, (averaging, meaning) in METRICS_GLOSSARY.items():
        rows.append(f"| `{name}` | {averaging} | {meaning.replace('|', chr(92) + '|')} |")
    return "\n".join([GLOSSARY_BEGIN, *rows, GLOSSARY_END])


if __name__ == "__main__":
    print(glossary_markdown())
