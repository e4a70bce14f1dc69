"""``algorithm.adv_estimator=papo``: the PAPO advantage registered in verl's estimator registry.

verl's generic advantage path (``verl.trainer.ppo.ray_trainer.compute_advantage``) passes only
``token_level_rewards``, ``response_mask``, ``index``, ``config`` and ``rollout_is_weights``. PAPO
also needs θ_old's per-token statistics, which the PAPO trainer (``trainer.v1.trainer_mode=papo``,
selected automatically by ``papo_verl.main``) fetches and passes as extended keyword arguments.
Users with their own trainers call the registered function the same way (README: "Calling the PAPO
estimator from your own trainer").
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from papo_verl.algorithm import group_ids
from papo_verl.algorithm.config import PapoConfig
from papo_verl.kernels.advantage import papo_advantage
from papo_verl.algorithm.metrics import advantage_metrics
from papo_verl.algorithm.tracker import PhaseWeights

__all__ = ["ESTIMATOR_NAME", "PapoInputsMissing", "compute_papo_outcome_advantage", "papo_config_from_algorithm"]

ESTIMATOR_NAME = "papo"
_POLARITY_INPUTS = ("old_log_probs", "entropys", "phase_weights")


class PapoInputsMissing(ValueError):
    """The PAPO estimator was called without the polarity inputs (e.g. from a stock verl trainer)."""


def papo_config_from_algorithm(config: Any) -> PapoConfig:
    """``PapoConfig`` from verl's ``algorithm`` config (DictConfig, AlgoConfig or dict); defaults if absent."""
    return PapoConfig.from_mapping(_get(config, "papo", None))


def _get(config: Any, key: str, default: Any) -> Any:
    """``config[key]`` of a mapping-like config (DictConfig, dict), else its attribute; ``default`` if absent."""
    return config.get(key, default) if hasattr(config, "get") else getattr(config, key, default)


def compute_papo_outcome_advantage(
    token_level_rewards: Tensor,
    response_mask: Tensor,
    index: Optional[Sequence] = None,
    config: Any = None,
    rollout_is_weights: Optional[Tensor] = None,
    *,
    old_log_probs: Optional[Tensor] = None,
    entropys: Optional[Tensor] = None,
    sum_pi_squared: Optional[Tensor] = None,
    sum_pi_squared_log_pi: Optional[Tensor] = None,
    phase_weights: Union[PhaseWeights, tuple, None] = None,
    polarity_coefficient: Optional[Tensor] = None,
    epsilon: Optional[float] = None,
    norm_adv_by_std_in_grpo: Optional[bool] = None,
    mass_reduce: Optional[Callable[[Tensor], Tensor]] = None,
    details: Optional[dict] = None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """PAPO advantages (docs/algorithm.md §2), returned as verl expects: ``(advantages, returns)``, ``(bs, T)``.

    Standard verl kwargs:
        token_level_rewards: ``(bs, T)``; the sequence reward is its sum over T.
        response_mask: ``(bs, T)``, 1 on valid response tokens.
        index: ``(bs,)`` group labels (verl's ``uid``); whole groups must be in the batch.
        config: verl's ``algorithm`` config; reads ``norm_adv_by_std_in_grpo`` and the ``papo`` block.
        rollout_is_weights: accepted and ignored (verl applies them in the loss).

    Extended kwargs (all required; response-aligned, θ_old, same temperature as the rollout):
        old_log_probs: ``(bs, T)`` log π_k of the sampled tokens.
        entropys: ``(bs, T)`` token entropy H.
        sum_pi_squared: ``(bs, T)`` Σ_a π_a².
        sum_pi_squared_log_pi: ``(bs, T)`` Σ_a π_a² log π_a.
        phase_weights: :class:`~papo_verl.algorithm.tracker.PhaseWeights` or ``(expand, contract)`` before conservation.

    Optional:
        polarity_coefficient: ``(bs, T)`` ``P_t`` already computed from the same statistics (the PAPO
            engine emits it with the same ``correction``); replaces the computation from
            ``sum_pi_squared`` and ``sum_pi_squared_log_pi``, which may then be omitted.
        mass_reduce: applied to the float64 ``[2]`` branch masses (an all-reduce when the batch is
            split across processes), so every shard uses the same weights.
        details: a dict filled with ``branch`` (int8 ``(bs, T)``: +1 expanding, −1 contracting, 0),
            ``result`` (the :class:`~papo_verl.kernels.advantage.PapoAdvantage`: ``rho``, ``coefficient``,
            ``base_advantages`` on demand) and ``metrics`` (``papo/*`` scalars).
    """
    missing = [name for name, value in zip(_POLARITY_INPUTS, (old_log_probs, entropys, phase_weights)) if value is None]
    if polarity_coefficient is None:
        missing += [name for name, value in (("sum_pi_squared", sum_pi_squared),
                                             ("sum_pi_squared_log_pi", sum_pi_squared_log_pi)) if value is None]
    if missing:
        raise PapoInputsMissing(
            "algorithm.adv_estimator=papo needs the old policy's per-token polarity inputs, which verl's stock "
            f"advantage path does not pass (missing: {', '.join(missing)}). Launch with the PAPO trainer: "
            "`python -m papo_verl.main ...` (it selects trainer.v1.trainer_mode=papo), or add "
            "`trainer.v1.trainer_mode=papo` to a verl v1 command line. From your own trainer, call "
            "compute_papo_outcome_advantage(..., old_log_probs=, entropys=, sum_pi_squared=, "
            "sum_pi_squared_log_pi=, phase_weights=) as documented in the papo_verl README."
        )
    if index is None:
        raise PapoInputsMissing("algorithm.adv_estimator=papo needs `index` (the per-sample group uid)")
    papo_cfg = papo_config_from_algorithm(config)
    if norm_adv_by_std_in_grpo is None:
        norm_adv_by_std_in_grpo = bool(_get(config, "norm_adv_by_std_in_grpo", True))
    if epsilon is None:
        epsilon = papo_cfg.epsilon
    if isinstance(phase_weights, PhaseWeights):
        expand, contract = phase_weights.expand, phase_weights.contract
    else:
        expand, contract = (float(w) for w in phase_weights)

    shape = tuple(response_mask.shape)
    for name, tensor in (("token_level_rewards", token_level_rewards), ("old_log_probs", old_log_probs),
                         ("entropys", entropys), ("sum_pi_squared", sum_pi_squared),
                         ("sum_pi_squared_log_pi", sum_pi_squared_log_pi), ("polarity_coefficient", polarity_coefficient)):
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"papo estimator: {name} has shape {tuple(tensor.shape)}, expected {shape} like response_mask")
    if len(index) != shape[0]:
        raise ValueError(f"papo estimator: index has {len(index)} entries for a batch of {shape[0]}")
    with torch.no_grad():
        scores = token_level_rewards.sum(dim=-1)
        groups = group_ids(index, device=scores.device)
        result = papo_advantage(
            scores, groups, response_mask, old_log_probs, entropys, sum_pi_squared, sum_pi_squared_log_pi,
            expand, contract, norm_by_std=norm_adv_by_std_in_grpo, epsilon=epsilon, correction=papo_cfg.correction,
            split=papo_cfg.split,
            w_min=papo_cfg.w_min, w_max=papo_cfg.w_max, mass_reduce=mass_reduce, with_row_stats=details is not None,
            coefficient=polarity_coefficient,
        )
        if not result.finite():  # name the offending input (the check is only paid when something is wrong)
            _raise_non_finite(response_mask, old_log_probs=old_log_probs, entropys=entropys,
                              sum_pi_squared=sum_pi_squared, sum_pi_squared_log_pi=sum_pi_squared_log_pi,
                              polarity_coefficient=polarity_coefficient, token_level_rewards=token_level_rewards)
        if details is not None:
            details.update(
                branch=result.branch, result=result,
                metrics=advantage_metrics(result, raw_weights=(expand, contract), w_min=papo_cfg.w_min,
                                          w_max=papo_cfg.w_max, correction=papo_cfg.correction),
            )
    advantages = result.advantages.to(token_level_rewards.dtype)
    return advantages, advantages


def _raise_non_finite(response_mask: Tensor, **tensors: Tensor) -> None:
    """Raise naming every input with non-finite values on valid response tokens (padding may hold anything)."""
    mask = response_mask.bool()
    problems = []
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        bad = mask & ~torch.isfinite(tensor)
        if bad.any():
            problems.append(f"{name} has {int(bad.sum())} non-finite value(s) on valid response tokens")
    raise ValueError("papo estimator: " + ("; ".join(problems) or "non-finite statistics on valid response tokens"))


def register() -> list[str]:
    """Register ``papo`` in verl's advantage-estimator registry (idempotent)."""
    from verl.trainer.ppo.core_algos import register_adv_est

    register_adv_est(ESTIMATOR_NAME)(compute_papo_outcome_advantage)
    return [f"adv_estimator:{ESTIMATOR_NAME}"]
