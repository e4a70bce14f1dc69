"""Actor-side polarity statistics: an FSDP/FSDP2 engine that also returns ``Σπ²`` and ``Σπ² log π``.

``PapoFSDPEngineWithLMHead`` subclasses verl's ``FSDPEngineWithLMHead`` and is registered through
verl's public ``EngineRegistry`` under vendor keys, so
``EngineRegistry.get_engine_cls("language_model", "fsdp"|"fsdp2")`` returns it. It does nothing
unless a micro-batch carries the non-tensor flag :data:`STATS_FLAG`, which only the PAPO trainer
sets (for the θ_old ``compute_log_prob`` pass, and for the update when polarity flips are tracked):
reference-policy passes and GRPO runs pay nothing.

With the flag, the statistics come from the **same** forward pass and the same temperature-scaled
logits as verl's log-probs, in one pass over the logits (:func:`papo_verl.kernels.logit_stats`,
chunked or Triton), without gradient. The entropy of that pass replaces verl's own entropy pass
whenever no gradient through the entropy is needed (always at ``compute_log_prob``; during the
update unless ``entropy_coeff != 0``), so PAPO reads the logits once, as GRPO does.

Layouts handled like verl's own outputs: remove-padding (packed, with Ulysses sequence-parallel
gather and static pad stripping) or padded ``(bsz, L, V)``; tensor-parallel ``DTensor`` logits are
reduced from their vocabulary shards (partial sums + all-reduce, no full-vocabulary gather).
Outputs are nested ``(bsz, prompt_len + response_len)`` tensors keyed :data:`OUTPUT_KEYS` — ``Σπ²``,
``Σπ² log π`` and the polarity coefficient ``P_t`` of the same tokens (from verl's log-probs and
these statistics) — which verl writes to TransferQueue as fields of the same name.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor

from verl.utils import tensordict_utils as tu
from verl.utils.device import get_device_id
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

from papo_verl.algorithm import polarity_coefficient
from papo_verl.integration.fields import (  # re-exported: the engine's output names
    ENTROPY_KEY,
    OUTPUT_KEYS,
    POLARITY_KEY,
    STATS_FLAG,
    SUM_PI_SQUARED_KEY,
    SUM_PI_SQUARED_LOG_PI_KEY,
    VAL_ADVANTAGES_FIELD,
    VAL_BRANCH_KEY,
    VAL_FIRST_ORDER_KEY,
    VAL_OUTPUT_PREFIX,
    VAL_POLARITY_FIELD,
    VALIDATE_FLAG,
)
from papo_verl.kernels.logit_sums import finalize_logit_sums

__all__ = ["ENTROPY_KEY", "OUTPUT_KEYS", "POLARITY_KEY", "PapoFSDPEngineWithLMHead", "STATS_FLAG", "register",
           "token_statistics"]


def _vocab_parallel_statistics(local_logits: Tensor, temperature: Tensor, group, options: dict) -> tuple[Tensor, ...]:
    """``(H, Σπ², Σπ² log π)`` ``[n]`` of logits whose vocabulary is sharded over ``group``.

    Each rank reduces its shard to shift-invariant partial sums ``[n, 5]``; a MAX all-reduce of the
    row maxima and a SUM all-reduce of the rescaled sums give the statistics of the whole vocabulary
    (the online log-sum-exp merge of :func:`papo_verl.kernels.logit_sums.merge_logit_partial_sums`).
    """
    from papo_verl.kernels import logit_partial_sums_rows

    parts = logit_partial_sums_rows(local_logits, temperature, backend=options.get("backend", "auto"),
                                    chunk_size=options.get("chunk_size"))
    m = parts[:, 0].clone()
    dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
    shift = parts[:, 0] - m
    s1 = torch.exp(shift)
    s2 = s1 * s1
    sums = torch.stack([
        s1 * parts[:, 1],
        s1 * (parts[:, 2] + parts[:, 1] * shift),
        s2 * parts[:, 3],
        s2 * (parts[:, 4] + parts[:, 3] * shift),
    ], dim=-1)
    dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
    _, entropy, s2_out, s2l_out = finalize_logit_sums(torch.cat([m.unsqueeze(-1), sums], dim=-1))
    return entropy, s2_out, s2l_out


def token_statistics(logits: Tensor, temperature: Tensor, options: Optional[dict] = None,
                     valid: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(H, Σπ², Σπ² log π)``, each ``[n]`` float32 without gradient, of ``softmax(logits / T)``.

    Args:
        logits: ``[n, V]`` (any float dtype) or a ``DTensor`` sharded on the vocabulary dimension.
        temperature: ``[n]`` per-token temperatures.
        options: the :data:`STATS_FLAG` dict (``backend``, ``chunk_size``).
        valid: optional ``[n]`` bool; skipped rows get 0 (plain tensors only).
    """
    options = options or {}
    from torch.distributed.tensor import DTensor

    with torch.no_grad():
        if isinstance(logits, DTensor):
            from torch.distributed.tensor.placement_types import Shard

            shard_dims = [i for i, p in enumerate(logits.placements) if isinstance(p, Shard) and
                          p.dim in (logits.dim() - 1, -1)]
            local = logits.to_local()
            if not shard_dims:  # replicated: every rank holds the full vocabulary
                return token_statistics(local, temperature, options, valid)
            if len(shard_dims) > 1:
                raise NotImplementedError("papo_verl: logits sharded over several mesh dimensions are not supported")
            group = logits.device_mesh.get_group(shard_dims[0])
            return _vocab_parallel_statistics(local.reshape(-1, local.shape[-1]), temperature.reshape(-1), group, options)

        from papo_verl.kernels import logit_stats

        stats = logit_stats(logits.reshape(-1, logits.shape[-1]), None, temperature.reshape(-1), valid=valid,
                            backend=options.get("backend", "auto"), chunk_size=options.get("chunk_size"))
        return stats.entropy, stats.sum_pi_squared, stats.sum_pi_squared_log_pi


class PapoFSDPEngineWithLMHead(FSDPEngineWithLMHead):
    """verl's FSDP/FSDP2 LM engine + PAPO's per-token vocabulary statistics (see module docstring)."""

    def prepare_model_outputs(self, output, output_args, micro_batch, logits_processor_func):
        options = tu.get_non_tensor_data(data=micro_batch, key=STATS_FLAG, default=None)
        if not options:
            return super().prepare_model_outputs(output, output_args, micro_batch, logits_processor_func)
        if tu.get_non_tensor_data(data=micro_batch, key="use_fused_kernels", default=False):
            raise RuntimeError("papo_verl: actor_rollout_ref.model.use_fused_kernels=true hides the logits PAPO "
                               "needs; set it to false")
        options = dict(options) if isinstance(options, dict) else {}
        entropy, s2, s2l = self._papo_statistics(output, output_args, micro_batch, options)

        wants_entropy = tu.get_non_tensor_data(data=micro_batch, key="calculate_entropy", default=False)
        entropy_needs_grad = torch.is_grad_enabled() and bool(options.get("entropy_needs_grad", False))
        if wants_entropy and not entropy_needs_grad:
            # our single pass already produced the entropy: skip verl's second read of the logits
            tu.assign_non_tensor(micro_batch, calculate_entropy=False)
            try:
                model_output = super().prepare_model_outputs(output, output_args, micro_batch, logits_processor_func)
            finally:
                tu.assign_non_tensor(micro_batch, calculate_entropy=wants_entropy)
            model_output["entropy"] = entropy
        else:
            model_output = super().prepare_model_outputs(output, output_args, micro_batch,
                                                         logits_processor_func)
            if not wants_entropy:
                model_output[ENTROPY_KEY] = entropy
        model_output[SUM_PI_SQUARED_KEY] = s2
        model_output[SUM_PI_SQUARED_LOG_PI_KEY] = s2l
        # the polarity coefficient of the same tokens: a θ_old statistic like the others, computed here
        # (on the accelerator) so that the driver reads one field instead of four
        log_probs = model_output["log_probs"].values().detach()
        coeff = polarity_coefficient(log_probs, entropy.values(), s2.values(), s2l.values(),
                                     options.get("correction", "exact"))
        model_output[POLARITY_KEY] = torch.nested.nested_tensor_from_jagged(coeff, s2.offsets())
        return model_output

    def _papo_statistics(self, output, output_args, micro_batch, options):
        """Nested ``(bsz, seq_len)`` ``(H, Σπ², Σπ² log π)`` aligned like verl's ``log_probs``."""
        use_remove_padding = tu.get_non_tensor_data(data=micro_batch, key="use_remove_padding", default=True)
        cu_seqlens = micro_batch["input_ids"].offsets()
        if use_remove_padding:
            logits = output.logits.squeeze(0)  # ((total_nnz / sp) + pad, V), maybe a vocab-sharded DTensor
            stats = token_statistics(logits, output_args["temperature_rmpad"], options)
            pad_size = output_args["pad_size"]
            flat = [self._gather_and_unpad_packed(t, pad_size) for t in stats]  # (total_nnz,)
        else:
            logits = output.logits  # (bsz, L, V)
            bsz, length = logits.shape[0], logits.shape[1]
            seq_lengths = cu_seqlens.diff()
            valid = torch.arange(length, device=seq_lengths.device).unsqueeze(0) < seq_lengths.unsqueeze(1)
            temperature = output_args["temperature"].reshape(bsz, 1).expand(bsz, length)
            from torch.distributed.tensor import DTensor

            row_valid = None if isinstance(logits, DTensor) else valid.reshape(-1)
            stats = token_statistics(logits.reshape(bsz * length, -1) if not isinstance(logits, DTensor)
                                     else logits, temperature.reshape(-1), options, row_valid)
            flat = [t.reshape(bsz, length)[valid] for t in stats]  # row-major = per-sample concatenation
        return tuple(torch.nested.nested_tensor_from_jagged(t, cu_seqlens) for t in flat)

    # ------------------------------------------------------------------ validation of polarity
    def infer_batch(self, data, loss_function=None):
        """verl's inference pass, or one of the two validation stages when :data:`VALIDATE_FLAG` is set."""
        request = tu.get_non_tensor_data(data=data, key=VALIDATE_FLAG, default=None)
        if not request:
            return super().infer_batch(data, loss_function)
        stage = request.get("stage") if isinstance(request, dict) else None
        if stage == "branch_response":
            return self._branch_response(data)
        if stage == "after_update":
            return self._after_update(data, loss_function)
        raise ValueError(f"papo_verl: unknown validation stage {stage!r} in {VALIDATE_FLAG}")

    def _branch_response(self, data):
        """At θ_old: ``r_S = −∇H̄·∇L_S`` for the policy-gradient loss ``L_S = −(1/N) Σ_{t∈S} A_t log π_t`` of
        every token, of the ρ > 0 tokens and of the A > 0 tokens (the other branches follow by
        subtraction), with ``H̄`` the batch's token-mean entropy: the first-order entropy change of a
        unit SGD step on each set alone. Four forward+backward passes through verl's own
        ``forward_backward_batch`` (training micro-batch sizes), gradients reduced by FSDP as in training;
        ``∇H̄`` is kept until :meth:`_after_update`. Returns every value replicated per sample."""
        from verl.utils.tensordict_utils import maybe_fix_3d_position_ids

        maybe_fix_3d_position_ids(data)
        tu.assign_non_tensor(data, calculate_entropy=True,
                             micro_batch_size_per_gpu=self.engine_config.micro_batch_size_per_gpu,
                             max_token_len_per_gpu=self.engine_config.max_token_len_per_gpu)
        params = [p for p in self.module.parameters() if p.requires_grad]
        with self.train_mode():
            self.optimizer_zero_grad()
            entropy_sum = self.forward_backward_batch(data, _entropy_loss, forward_only=False)["loss"]
            direction = [None if p.grad is None else p.grad.detach().clone() for p in params]
            responses = []
            for subset in ("all", "expand", "positive"):
                self.optimizer_zero_grad()
                self.forward_backward_batch(data, _policy_gradient_loss(subset), forward_only=False)
                responses.append(-_global_dot(direction, [p.grad for p in params]))
            self.optimizer_zero_grad()
            anchor = _global_dot(direction, [p.detach() for p in params])
        self._papo_direction = (params, direction, anchor)
        # the loss of each micro-batch is dp·Σ_mb H/N: their sum, averaged over DP ranks, is H̄
        mean_entropy = torch.tensor(float(sum(entropy_sum)), dtype=torch.float64, device=get_device_id())
        group = self.get_data_parallel_group()
        if dist.is_initialized() and group is not None:
            dist.all_reduce(mean_entropy, op=dist.ReduceOp.AVG, group=group)
        values = torch.tensor([*responses, float(mean_entropy)], dtype=torch.float64)
        rows = data.batch_size[0]
        return {"model_output": {VAL_BRANCH_KEY: values.unsqueeze(0).expand(rows, -1).clone()}, "loss": [0.0],
                "metrics": {}}

    def _after_update(self, data, loss_function):
        """At θ_new: the same batch's log-probs, entropies and ``P_t`` (verl's inference pass with the
        PAPO statistics), renamed ``papo_val_*``, and ``∇H̄(θ_old)·(θ_new − θ_old)``."""
        output = super().infer_batch(data, loss_function)
        model_output = output["model_output"]
        renamed = {VAL_OUTPUT_PREFIX + k: model_output[k] for k in ("log_probs", "entropy", POLARITY_KEY)
                   if k in model_output}
        direction = getattr(self, "_papo_direction", None)
        if direction is not None:
            params, gradient, anchor = direction
            moved = _global_dot(gradient, [p.detach() for p in params]) - anchor
            renamed[VAL_FIRST_ORDER_KEY] = torch.full((data.batch_size[0], 1), moved, dtype=torch.float64)
            self._papo_direction = None
        output["model_output"] = renamed
        return output


def _response_tensors(model_output, data, key):
    """``(values, mask)``: a model output and the response mask, padded ``(bsz, response_len)``."""
    from verl.workers.utils.padding import no_padding_2_padding

    values = no_padding_2_padding(model_output[key], data)
    fields = ["response_mask"] + [f for f in (VAL_ADVANTAGES_FIELD, VAL_POLARITY_FIELD) if f in data.keys()]
    return values, data.select(*fields).to_padded_tensor()


def _loss_scale(data) -> float:
    """``dp_size / N``: verl's token-mean normalisation over the global batch (FSDP then averages over ranks)."""
    dp_size = tu.get_non_tensor_data(data=data, key="dp_size", default=1)
    tokens = tu.get_non_tensor_data(data=data, key="batch_num_tokens", default=None)
    return float(dp_size) / float(tokens)


def _entropy_loss(model_output, data, dp_group=None):
    entropy, padded = _response_tensors(model_output, data, "entropy")
    mask = padded["response_mask"].to(entropy.dtype)
    return (entropy * mask).sum() * _loss_scale(data), {}


def _policy_gradient_loss(subset: str):
    """``−(dp/N) Σ_{t∈subset} A_t log π_t``: the on-policy policy-gradient loss of one token subset."""

    def loss(model_output, data, dp_group=None):
        log_prob, padded = _response_tensors(model_output, data, "log_probs")
        missing = [f for f in (VAL_ADVANTAGES_FIELD, VAL_POLARITY_FIELD) if f not in padded.keys()]
        if missing:
            raise RuntimeError(f"papo_verl validation: the batch lacks {missing} (written by the PAPO trainer)")
        weight = padded[VAL_ADVANTAGES_FIELD].to(log_prob.dtype) * padded["response_mask"].to(log_prob.dtype)
        if subset == "expand":
            weight = weight * (padded[VAL_POLARITY_FIELD] > 0)
        elif subset == "positive":
            weight = weight * (weight > 0)
        return -(weight * log_prob).sum() * _loss_scale(data), {}

    return loss


def _global_dot(xs, ys) -> float:
    """``Σ_i <x_i, y_i>`` over parameter-shaped tensors, reduced over their shards (float64).

    ``DTensor`` pairs (FSDP2) reduce through DTensor's own placement rules (partial sums per mesh,
    one reduction each); plain tensors must be whole (a single process).
    """
    from torch.distributed.tensor import DTensor

    total = 0.0
    partial: dict = {}
    for x, y in zip(xs, ys):
        if x is None or y is None:
            continue
        if isinstance(x, DTensor):
            prod = torch.sum(x.to(torch.float64) * y.to(device=x.device, dtype=torch.float64))
            key = (id(prod.device_mesh), tuple(prod.placements))
            partial[key] = prod if key not in partial else partial[key] + prod
            continue
        if dist.is_initialized() and dist.get_world_size() > 1:
            raise NotImplementedError("papo_verl validation (validate_every) needs FSDP2 parameters (DTensor); "
                                      "set actor_rollout_ref.actor.strategy=fsdp2")
        total += float(torch.sum(x.double() * y.to(device=x.device, dtype=torch.float64)))
    return total + sum(float(v.full_tensor()) for v in partial.values())


# Vendors whose "cuda" device the subclass is registered for; EngineRegistry tries (device, vendor)
# before the device-only key that verl's own engine holds.
ENGINE_VENDORS = ("nvidia", "amd")
_registered = False


def register() -> list[str]:
    """Register the subclass for ``language_model`` × ``fsdp``/``fsdp2`` × ``cuda`` × :data:`ENGINE_VENDORS`."""
    global _registered
    from verl.workers.engine.base import EngineRegistry

    if not _registered:
        EngineRegistry.register(model_type="language_model", backend=["fsdp", "fsdp2"], device="cuda",
                                vendor=list(ENGINE_VENDORS))(PapoFSDPEngineWithLMHead)
        _registered = True
    return [f"engine:language_model/fsdp,fsdp2/cuda/{vendor}" for vendor in ENGINE_VENDORS]


# if this module's own imports loaded verl (and so this plugin) while it was half-defined, register now
from papo_verl.integration import plugin as _plugin  # noqa: E402

_plugin.complete_registration(__name__)
