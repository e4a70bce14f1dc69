"""``HFCpuServer``: the ``hf_cpu`` rollout server, a Ray actor serving verl's agent loop.

It implements the server contract verl's ``LLMServerClient`` and ``RolloutReplica`` rely on
(``generate -> TokenOutput``, ``wake_up``/``sleep``, ``abort_all_requests``/``resume_generation``,
``set_global_steps`` …) on top of an fp32 transformers copy of the policy:

* ``generate`` requests are **batched dynamically** (:mod:`papo_verl.cpu.batching`) and run through
  one ``model.generate`` per batch (:mod:`papo_verl.cpu.generation`), each with its own sampling
  parameters; log-probs are ``log_softmax(logits / T)`` of the sampled tokens, as the trainer
  computes them.
* trained weights arrive after every step through ``load_weights`` (buckets of full tensors sent by
  :class:`papo_verl.cpu.rollout.HFCpuServerAdapter` on the replica's first training rank) and
  ``finish_weight_update``.

Options come from ``actor_rollout_ref.rollout.engine_kwargs.hf_cpu`` (:class:`HFCpuOptions`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch

from papo_verl.cpu.batching import BatchingOptions, DynamicBatcher
from papo_verl.cpu.generation import BatchedGenerator, Completion, SamplingParams

__all__ = ["ENGINE_KWARGS_KEY", "HFCpuOptions", "HFCpuServer", "build_server_model"]

logger = logging.getLogger("papo_verl")

ENGINE_KWARGS_KEY = "actor_rollout_ref.rollout.engine_kwargs.hf_cpu"
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
_PROBE_LENGTH = 16


@dataclass(frozen=True)
class HFCpuOptions:
    """``actor_rollout_ref.rollout.engine_kwargs.hf_cpu``.

    max_batch_size: most concurrent requests in one ``generate`` (≥ 1).
    batch_window_ms: a batch closes after this long without a new request (ms).
    max_batch_wait_ms: longest a batch waits for more requests after its first (ms).
    num_threads: torch intra-op threads of the server process (null: leave Ray's setting).
    dtype: weights/compute dtype of the server copy (float32 keeps log-probs equal to an fp32 trainer).
    weight_sync_log: optional JSONL path; every completed weight update appends the server's
        log-probs of a fixed probe sequence (shows that trained weights reached the server).
    """

    max_batch_size: int = 64
    batch_window_ms: float = 10.0
    max_batch_wait_ms: float = 50.0
    num_threads: Optional[int] = None
    dtype: str = "float32"
    weight_sync_log: Optional[str] = None

    @classmethod
    def from_mapping(cls, values: Optional[Mapping[str, Any]]) -> "HFCpuOptions":
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{ENGINE_KWARGS_KEY}.{unknown[0]} is not an hf_cpu option; valid keys: {sorted(names)}.")
        options = cls(**values)
        if options.dtype not in _DTYPES:
            raise ValueError(f"{ENGINE_KWARGS_KEY}.dtype={options.dtype!r}: use one of {sorted(_DTYPES)}.")
        if options.num_threads is not None and int(options.num_threads) < 1:
            raise ValueError(f"{ENGINE_KWARGS_KEY}.num_threads={options.num_threads}: must be >= 1 or null.")
        try:
            options.batching()
        except ValueError as err:
            raise ValueError(f"{ENGINE_KWARGS_KEY}: {err} (keys max_batch_size, batch_window_ms, max_batch_wait_ms)")
        return options

    def batching(self) -> BatchingOptions:
        return BatchingOptions(max_batch_size=int(self.max_batch_size), window_s=self.batch_window_ms / 1000.0,
                               max_wait_s=self.max_batch_wait_ms / 1000.0)


def build_server_model(model_config: Any, dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, Any]:
    """Load the rollout copy of the policy from verl's ``HFModelConfig``; returns (model, tokenizer).

    Uses ``model_config.hf_config`` (so ``override_config`` such as ``attn_implementation`` applies)
    and ``model_config.local_path``.
    """
    from transformers import AutoModelForCausalLM

    hf_config = model_config.hf_config
    attn = getattr(hf_config, "_attn_implementation", None) or "sdpa"
    if attn.startswith("flash_attention"):
        attn = "sdpa"  # the trainer-side default; flash-attn does not exist on CPU
    model = AutoModelForCausalLM.from_pretrained(
        model_config.local_path, config=hf_config, dtype=dtype, attn_implementation=attn,
        trust_remote_code=getattr(model_config, "trust_remote_code", False),
    )
    model.eval()
    model.requires_grad_(False)
    return model, model_config.tokenizer


class HFCpuServer:
    """Rollout server for one replica (see the module docstring).

    Args:
        config: verl ``RolloutConfig`` (dataclass or DictConfig).
        model_config: verl ``HFModelConfig`` (dataclass or DictConfig).
        replica_rank: replica index (names, logs).
    """

    def __init__(self, config: Any, model_config: Any, replica_rank: int = 0) -> None:
        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.config import HFModelConfig, RolloutConfig

        self.config = omega_conf_to_dataclass(config, dataclass_type=RolloutConfig) if not isinstance(
            config, RolloutConfig) else config
        self.model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig) if not isinstance(
            model_config, HFModelConfig) else model_config
        self.replica_rank = replica_rank
        self.options = HFCpuOptions.from_mapping((self.config.engine_kwargs or {}).get("hf_cpu"))
        if self.options.num_threads:
            torch.set_num_threads(int(self.options.num_threads))
        self.model, self.tokenizer = build_server_model(self.model_config, _DTYPES[self.options.dtype])
        self._params = dict(self.model.named_parameters(remove_duplicate=False))
        self._params.update(dict(self.model.named_buffers(remove_duplicate=False)))
        self.max_model_len = int(self.config.max_model_len or getattr(self.model.config, "max_position_embeddings", 0)
                                 or (self.config.prompt_length + self.config.response_length))
        self.generator = BatchedGenerator(self.model, self._eos_token_ids(), self._pad_token_id(), self.max_model_len)
        self.batcher: DynamicBatcher = DynamicBatcher(self.run_batch, self.options.batching())
        self.global_steps: Optional[int] = None
        self._paused = False
        self._rejecting = False
        self._resume_event = None  # asyncio.Event, created in the actor's loop
        self._loaded_tensors = 0
        self.stats = {"requests": 0, "generated_tokens": 0, "batches": 0, "weight_updates": 0}

    # ------------------------------------------------------------------------------------------
    # set-up helpers
    # ------------------------------------------------------------------------------------------
    def _eos_token_ids(self) -> list[int]:
        ids: set[int] = set()
        for source in (getattr(self.model_config, "generation_config", None), self.tokenizer, self.model.config):
            value = getattr(source, "eos_token_id", None) if source is not None else None
            if value is None:
                continue
            ids.update(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
        if not ids:
            raise ValueError(
                f"actor_rollout_ref.model.path={self.model_config.path}: neither the tokenizer nor the model config "
                "defines eos_token_id, so generations could never stop early; set eos_token_id in the model folder."
            )
        return sorted(ids)

    def _pad_token_id(self) -> int:
        for value in (getattr(self.tokenizer, "pad_token_id", None), getattr(self.model.config, "pad_token_id", None)):
            if value is not None:
                return int(value)
        return self._eos_token_ids()[0]

    async def ready(self) -> dict:
        """Called by the replica after creation: surfaces load errors; returns a short description."""
        return {"replica_rank": self.replica_rank, "max_model_len": self.max_model_len,
                "eos_token_ids": self.generator.eos_token_ids, "options": dataclasses.asdict(self.options),
                "num_threads": torch.get_num_threads()}

    # ------------------------------------------------------------------------------------------
    # generation
    # ------------------------------------------------------------------------------------------
    def parse_sampling_params(self, prompt_ids: Sequence[int], sampling_params: Mapping[str, Any]) -> SamplingParams:
        """verl's sampling dict → :class:`SamplingParams`, with verl's vLLM-server defaults for max_tokens."""
        default_max = min(self.config.response_length,
                          self.config.prompt_length + self.config.response_length - len(prompt_ids))
        return SamplingParams.from_request(
            sampling_params, default_max_tokens=default_max, max_possible_tokens=self.max_model_len - len(prompt_ids),
            default_repetition_penalty=float(self.config.repetition_penalty or 1.0),
            default_ignore_eos=bool(self.config.ignore_eos),
        )

    def run_batch(self, requests: list[tuple[list[int], SamplingParams]]) -> list[Completion]:
        """Run one batch (called by the batcher in a worker thread)."""
        completions = self.generator.generate([r[0] for r in requests], [r[1] for r in requests])
        self.stats["batches"] += 1
        self.stats["requests"] += len(requests)
        self.stats["generated_tokens"] += sum(len(c.token_ids) for c in completions)
        return completions

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: Optional[list[Any]] = None,
        video_data: Optional[list[Any]] = None,
        audio_data: Optional[list[Any]] = None,
        mm_processor_kwargs: Optional[dict[str, Any]] = None,
        priority: int = 0,
        **kwargs: Any,
    ):
        """Token-in/token-out generation (verl's server contract); returns a ``TokenOutput``."""
        from verl.utils import normalize_token_ids
        from verl.workers.rollout.replica import TokenOutput

        if image_data is not None or video_data is not None or audio_data is not None:
            raise NotImplementedError(
                "the hf_cpu rollout serves text-only models; multimodal requests (image/video/audio data) need a GPU "
                "rollout (actor_rollout_ref.rollout.name=vllm or sglang)."
            )
        prompt_ids = list(normalize_token_ids(prompt_ids))
        params = self.parse_sampling_params(prompt_ids, sampling_params)
        if self._paused:
            if self._rejecting:
                return self._aborted()
            await self._wait_resumed()
        completion = await self.batcher.submit((prompt_ids, params))
        if isinstance(completion, TokenOutput):  # cancelled by abort_all_requests before it ran
            return completion
        return TokenOutput(
            token_ids=completion.token_ids,
            log_probs=completion.log_probs,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps, "finish_reason": completion.finish_reason},
        )

    def _aborted(self, *_: Any):
        from verl.workers.rollout.replica import TokenOutput

        return TokenOutput(token_ids=[], log_probs=None, stop_reason="aborted",
                           extra_fields={"global_steps": self.global_steps})

    async def _wait_resumed(self) -> None:
        import asyncio

        if self._resume_event is None:
            self._resume_event = asyncio.Event()
        await self._resume_event.wait()

    # ------------------------------------------------------------------------------------------
    # weights
    # ------------------------------------------------------------------------------------------
    async def load_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> int:
        """Copy a bucket of full tensors (HF names) into the server model; returns how many were loaded.

        Waits for the running batch; unknown names or shape mismatches raise (naming the tensor).
        """
        async with self.batcher.lock:
            with torch.no_grad():
                for name, tensor in named_tensors:
                    target = self._params.get(name)
                    if target is None:
                        raise KeyError(
                            f"hf_cpu server: trained weight {name!r} has no counterpart in the rollout model "
                            f"loaded from {self.model_config.local_path}; the trainer and "
                            "actor_rollout_ref.model.path must be the same architecture."
                        )
                    if tuple(target.shape) != tuple(tensor.shape):
                        raise ValueError(f"hf_cpu server: weight {name!r} has shape {tuple(tensor.shape)}, the rollout "
                                         f"model expects {tuple(target.shape)}.")
                    target.copy_(tensor.to(dtype=target.dtype))
            self._loaded_tensors += len(named_tensors)
        return len(named_tensors)

    async def finish_weight_update(self, global_steps: Optional[int] = None) -> dict:
        """End of one weight update: set the weights' step, log the probe (if configured); returns a summary."""
        if global_steps is not None:
            self.global_steps = global_steps
        self.stats["weight_updates"] += 1
        summary = {"replica_rank": self.replica_rank, "global_steps": self.global_steps,
                   "tensors": self._loaded_tensors, "time": time.time()}
        self._loaded_tensors = 0
        if self.options.weight_sync_log:
            summary["probe_log_probs"] = self.probe_log_probs()
            os.makedirs(os.path.dirname(os.path.abspath(self.options.weight_sync_log)), exist_ok=True)
            with open(self.options.weight_sync_log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(summary) + "\n")
        return summary

    def probe_sequence(self) -> list[int]:
        """A fixed token sequence (token ids 1..16 clipped to the vocabulary) for weight-sync probes."""
        vocab = int(self.model.config.vocab_size)
        return [1 + (i % max(1, vocab - 1)) for i in range(_PROBE_LENGTH)]

    @torch.no_grad()
    def probe_log_probs(self, token_ids: Optional[Sequence[int]] = None, temperature: float = 1.0) -> list[float]:
        """Teacher-forced log-probs ``log_softmax(logits / T)`` of ``token_ids[1:]`` under the current weights.

        Shape: ``len(token_ids) - 1`` floats. Default sequence: :meth:`probe_sequence`.
        """
        ids = torch.tensor([list(token_ids) if token_ids is not None else self.probe_sequence()], dtype=torch.long)
        logits = self.model(input_ids=ids).logits[0, :-1].float()
        log_probs = torch.log_softmax(logits / temperature, dim=-1)
        return log_probs.gather(1, ids[0, 1:, None]).squeeze(1).tolist()

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    # ------------------------------------------------------------------------------------------
    # lifecycle calls made by verl's replica / checkpoint manager (no device memory to manage)
    # ------------------------------------------------------------------------------------------
    async def wake_up(self, tags: Optional[list[str]] = None) -> None:
        return None

    async def sleep(self) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None  # transformers' cache lives only inside one generate() call

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None

    async def wait_for_requests_to_drain(self) -> None:
        await self.batcher.drain()

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        """Stop admitting requests until :meth:`resume_generation`; queued (not started) ones return aborted.

        The batch already running finishes. ``reject_request``: requests arriving meanwhile return
        aborted at once instead of waiting for the resume.
        """
        import asyncio

        self._paused, self._rejecting = True, bool(reject_request)
        if self._resume_event is None:
            self._resume_event = asyncio.Event()
        self._resume_event.clear()
        aborted = self.batcher.cancel_queued(self._aborted)
        return {"aborted_count": aborted, "request_ids": []}

    async def resume_generation(self) -> None:
        self._paused, self._rejecting = False, False
        if self._resume_event is not None:
            self._resume_event.set()

    async def get_stats(self) -> dict:
        """Counters and the size of every batch run so far."""
        return {**self.stats, "batch_sizes": list(self.batcher.batch_sizes), "global_steps": self.global_steps}
