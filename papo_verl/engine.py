"""Actor-side polarity statistics: an FSDP/FSDP2 engine that also returns ``Σπ²`` and ``Σπ² log π``.

``PapoFSDPEngineWithLMHead`` subclasses verl's ``FSDPEngineWithLMHead`` and is registered through
verl's public ``EngineRegistry`` under vendor keys (option A of the integration map), so
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

import logging
from contextlib import contextmanager
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor

from verl.utils import tensordict_utils as tu
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

from papo_verl.algo import finalize_logit_sums, polarity_coefficient
from papo_verl.fields import (  # re-exported: the engine's output names
    ENTROPY_KEY,
    OUTPUT_KEYS,
    POLARITY_KEY,
    STATS_FLAG,
    SUM_PI_SQUARED_KEY,
    SUM_PI_SQUARED_LOG_PI_KEY,
)

__all__ = ["ENTROPY_KEY", "OUTPUT_KEYS", "POLARITY_KEY", "PapoFSDPEngineWithLMHead", "STATS_FLAG", "register",
           "token_statistics"]

logger = logging.getLogger("papo_verl")

def _vocab_parallel_statistics(local_logits: Tensor, temperature: Tensor, group, options: dict) -> tuple[Tensor, ...]:
    """``(H, Σπ², Σπ² log π)`` ``[n]`` of logits whose vocabulary is sharded over ``group``.

    Each rank reduces its shard to shift-invariant partial sums ``[n, 5]``; a MAX all-reduce of the
    row maxima and a SUM all-reduce of the rescaled sums give the statistics of the whole vocabulary
    (the online log-sum-exp merge of :func:`papo_verl.algo.merge_logit_partial_sums`).
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


@contextmanager
def _non_tensor_override(data, **values: Any):
    """Temporarily set NonTensorData flags of a micro-batch TensorDict."""
    previous = {k: tu.get_non_tensor_data(data=data, key=k, default=None) for k in values}
    tu.assign_non_tensor(data, **values)
    try:
        yield
    finally:
        tu.assign_non_tensor(data, **previous)


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
            with _non_tensor_override(micro_batch, calculate_entropy=False):
                model_output = super().prepare_model_outputs(output, output_args, micro_batch,
                                                             logits_processor_func)
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
from papo_verl import plugin as _plugin  # noqa: E402

_plugin.complete_registration(__name__)
