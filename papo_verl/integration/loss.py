"""The actor-side policy-loss hook: verl's ``ppo_loss`` plus per-branch diagnostics.

:class:`PapoPolicyLoss` is installed in every actor worker by the PAPO trainer
(``actor_rollout_wg.set_loss_fn``). The loss itself is **exactly** verl's ``ppo_loss`` (so every
``policy_loss.loss_mode`` — vanilla, DAPO's decoupled clip, clip_cov, kl_cov, … — applies
unchanged; PAPO acts only through the advantages the driver already reweighted). On top it reads
the per-token branch labels (``papo_branch``: +1 expanding, −1 contracting, 0 neutral) and the
broadcast phase weights (non-tensor ``papo``) and reports, per branch, token counts, the
policy-gradient mass ``Σ|∂L_pg/∂log π_t|`` (computed by differentiating the configured policy loss
on detached log-probs, so clipping and Clip-Cov masking are reflected whatever the loss mode), the
number of tokens whose gradient the loss zeroed, and — when the current policy's statistics are
computed — the number of tokens whose polarity sign changed since θ_old.

Every count is emitted as a ``Metric`` with SUM aggregation and multiplied by the DP size, so
verl's aggregation (sum over micro-batches of the mean over DP ranks) yields the exact global count
of the mini-batch; the trainer turns counts into shares (``actor/papo/*`` in the glossary).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from papo_verl.algorithm import polarity_coefficient
from papo_verl.integration.fields import BRANCH_FIELD, ENTROPY_KEY, PHASE_KEY, POLARITY_KEY, SUM_PI_SQUARED_KEY, \
    SUM_PI_SQUARED_LOG_PI_KEY

__all__ = ["BRANCH_FIELD", "PHASE_KEY", "PapoPolicyLoss", "RAW_COUNT_KEYS", "branch_shares"]

_P = "actor/papo/"
RAW_COUNT_KEYS = tuple(_P + k for k in (
    "n_tokens", "n_expand", "n_contract", "grad_mass", "grad_mass_expand", "grad_mass_contract",
    "n_zero_grad_expand", "n_zero_grad_contract", "n_labelled", "n_flipped",
))


def _rng_states() -> dict:
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


class _Restored:
    """Replay the RNG as it was before the real loss call (Clip-Cov samples tokens at random)."""

    def __init__(self, states: dict):
        self.states = states
        devices = [torch.cuda.current_device()] if "cuda" in states else []
        self.fork = torch.random.fork_rng(devices=devices)

    def __enter__(self):
        self.fork.__enter__()
        torch.set_rng_state(self.states["cpu"])
        if "cuda" in self.states:
            torch.cuda.set_rng_state(self.states["cuda"])

    def __exit__(self, *exc):
        return self.fork.__exit__(*exc)


class PapoPolicyLoss:
    """``loss_fn(model_output, data, dp_group) -> (loss, metrics)`` for verl's actor workers.

    Args:
        config: verl's ``ActorConfig`` (as the worker binds it to ``ppo_loss``).
        correction: PAPO's ``correction`` setting, to classify polarity under the current policy.
    """

    def __init__(self, config: Any, correction: str = "exact"):
        self.config = config
        self.correction = correction

    def __call__(self, model_output: dict, data, dp_group=None):
        from verl.workers.utils.losses import ppo_loss

        rng = _rng_states()
        loss, metrics = ppo_loss(self.config, model_output, data, dp_group)
        if BRANCH_FIELD in data.keys():
            metrics.update(self.branch_metrics(model_output, data, rng))
        return loss, metrics

    # ------------------------------------------------------------------------------------------
    def branch_metrics(self, model_output: dict, data, rng: Optional[dict] = None) -> dict:
        from verl.trainer.ppo.core_algos import get_policy_loss_fn
        from verl.utils import tensordict_utils as tu
        from verl.utils.metric import AggregationType, Metric
        from verl.workers.utils.padding import no_padding_2_padding

        config = self.config
        log_prob = no_padding_2_padding(model_output["log_probs"], data).detach().float()
        fields = ["response_mask", "old_log_probs", "advantages", BRANCH_FIELD]
        if "rollout_is_weights" in data.keys():
            fields.append("rollout_is_weights")
        padded = data.select(*fields).to_padded_tensor()
        mask = padded["response_mask"].bool()
        advantages = padded["advantages"]
        branch = padded[BRANCH_FIELD].to(torch.int8) * mask
        rollout_is_weights = padded.get("rollout_is_weights", None)

        # per-token gradient of the configured policy loss w.r.t. log π_t (same RNG as the real call)
        leaf = log_prob.clone().requires_grad_(True)
        policy_loss_fn = get_policy_loss_fn(config.policy_loss.get("loss_mode", "vanilla"))
        with torch.enable_grad(), _Restored(rng or _rng_states()):
            pg_loss, _ = policy_loss_fn(old_log_prob=padded["old_log_probs"], log_prob=leaf, advantages=advantages,
                                        response_mask=mask, loss_agg_mode=config.loss_agg_mode, config=config,
                                        rollout_is_weights=rollout_is_weights)
            (grad,) = torch.autograd.grad(pg_loss, leaf, allow_unused=True)
        grad = torch.zeros_like(log_prob) if grad is None else grad.abs() * mask

        expand, contract = branch > 0, branch < 0
        counts = {
            "n_tokens": mask.sum(),
            "n_expand": expand.sum(),
            "n_contract": contract.sum(),
            "grad_mass": grad.sum(),
            "grad_mass_expand": (grad * expand).sum(),
            "grad_mass_contract": (grad * contract).sum(),
            "n_zero_grad_expand": (expand & (grad == 0)).sum(),
            "n_zero_grad_contract": (contract & (grad == 0)).sum(),
        }
        coeff = None
        if POLARITY_KEY in model_output:  # the engine's P_t under the current policy
            coeff = no_padding_2_padding(model_output[POLARITY_KEY], data).detach()
        elif SUM_PI_SQUARED_KEY in model_output:
            entropy = model_output.get("entropy", model_output.get(ENTROPY_KEY))
            current = [no_padding_2_padding(t, data).detach() for t in
                       (entropy, model_output[SUM_PI_SQUARED_KEY], model_output[SUM_PI_SQUARED_LOG_PI_KEY])]
            coeff = polarity_coefficient(log_prob, current[0], current[1], current[2], self.correction)
        if coeff is not None:
            labelled = branch != 0
            sign_now = torch.sign(advantages * coeff).to(torch.int8)
            counts["n_labelled"] = labelled.sum()
            counts["n_flipped"] = (labelled & (sign_now != branch)).sum()

        dp_size = int(tu.get_non_tensor_data(data=data, key="dp_size", default=1) or 1)
        out = {_P + k: Metric(AggregationType.SUM, float(v) * dp_size) for k, v in counts.items()}
        phase = tu.get_non_tensor_data(data=data, key=PHASE_KEY, default=None)
        if isinstance(phase, dict):
            out[_P + "expand_weight"] = float(phase.get("expand", float("nan")))
            out[_P + "contract_weight"] = float(phase.get("contract", float("nan")))
        return out


def branch_shares(metrics: dict) -> dict:
    """Turn the aggregated raw counts (``actor/papo/n_*``, ``grad_mass*``) into the glossary's shares.

    Works on the trainer's reduced metrics (one number per key, the mean over mini-batches of the
    global counts), so every share is a ratio of global sums. Returns the updated dict.
    """
    def get(k):
        return metrics.get(_P + k)

    def ratio(num, den):
        return float(num) / float(den) if num is not None and den is not None and float(den) > 0 else 0.0

    if get("n_tokens") is None:
        return metrics
    shares = {
        "token_share_expand": ratio(get("n_expand"), get("n_tokens")),
        "token_share_contract": ratio(get("n_contract"), get("n_tokens")),
        "pg_mass_share_expand": ratio(get("grad_mass_expand"), get("grad_mass")),
        "pg_mass_share_contract": ratio(get("grad_mass_contract"), get("grad_mass")),
        "clip_frac_expand": ratio(get("n_zero_grad_expand"), get("n_expand")),
        "clip_frac_contract": ratio(get("n_zero_grad_contract"), get("n_contract")),
    }
    if get("n_labelled") is not None:
        shares["polarity_flip_share"] = ratio(get("n_flipped"), get("n_labelled"))
    for key in RAW_COUNT_KEYS:
        metrics.pop(key, None)
    metrics.update({_P + k: v for k, v in shares.items()})
    return metrics
