"""Batched token-in/token-out generation with transformers ``generate()`` and per-row sampling.

One :meth:`BatchedGenerator.generate` call serves B requests with *different* prompts, lengths and
sampling parameters in a single ``model.generate``:

* prompts are **left-padded** to the longest one; the attention mask hides the padding and
  transformers derives the position ids from it (``cumsum(mask) - 1``), so a row's tokens sit at
  positions 0..len-1 exactly as in an unpadded forward;
* a per-row logits processor (:class:`PerRowSampler`) applies each row's repetition penalty,
  temperature, top-k and top-p (vLLM semantics; ``temperature == 0`` → greedy), and records each
  sampled token's log-prob ``log_softmax(logits / T)[token]`` from the **raw** logits — the
  quantity verl's trainer recomputes (``temperature == 0`` uses T = 1); penalties and top-k/top-p
  shape the sampling distribution only, as in the trainer, which never applies them;
* a per-row stopping criterion (:class:`PerRowStop`) ends a row at its own ``max_tokens`` or at a
  stop token (EOS ids unless ``ignore_eos``, plus ``stop_token_ids``); a batch ends when all rows
  have.

transformers' own sampling warpers and EOS handling are switched off (a clean ``GenerationConfig``
with ``top_k=0``, ``temperature=1``, ``eos_token_id=None``), so the processor above is the only thing
that touches the scores. Memory: one (B, V) log-softmax is kept per step, never all L of them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["BatchedGenerator", "Completion", "SamplingError", "SamplingParams"]


class SamplingError(ValueError):
    """A request's sampling parameters are invalid or unsupported (the message names the key)."""


# Keys of verl's/vLLM's sampling dict that are accepted but have no effect here.
_IGNORED_KEYS = frozenset({"seed", "detokenize", "skip_special_tokens", "spaces_between_special_tokens",
                           "include_stop_str_in_output"})
# Keys accepted only at their neutral value.
_NEUTRAL_VALUES = {"n": 1, "min_tokens": 0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "min_p": 0.0,
                   "stop": None, "best_of": None, "prompt_logprobs": None}


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters of one request (vLLM names and semantics).

    temperature: 0 → greedy; > 0 divides the logits. top_k: ≤ 0 (vLLM's -1) → off. top_p in (0, 1].
    repetition_penalty: > 0, 1 → off (vLLM: logits of prompt and generated tokens are divided by it
    when positive, multiplied when negative). max_tokens: ≥ 1 new tokens. ignore_eos: do not stop at EOS.
    stop_token_ids: extra token ids that end the row (included in the output, as EOS is).
    logprobs: return the sampled tokens' log-probs.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    repetition_penalty: float = 1.0
    max_tokens: int = 16
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()
    logprobs: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise SamplingError(f"sampling_params.temperature={self.temperature}: must be >= 0 (0 means greedy).")
        if not (0 < self.top_p <= 1):
            raise SamplingError(f"sampling_params.top_p={self.top_p}: must be in (0, 1] (1 turns top-p off).")
        if int(self.top_k) != self.top_k:
            raise SamplingError(f"sampling_params.top_k={self.top_k}: must be an integer (-1 turns top-k off).")
        if not self.repetition_penalty > 0:
            raise SamplingError(f"sampling_params.repetition_penalty={self.repetition_penalty}: must be > 0 (1 = off).")
        if int(self.max_tokens) != self.max_tokens or self.max_tokens < 1:
            raise SamplingError(f"sampling_params.max_tokens={self.max_tokens}: must be an integer >= 1.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def logprob_temperature(self) -> float:
        """The T of ``log_softmax(logits / T)`` reported for sampled tokens (1 for greedy rows)."""
        return 1.0 if self.greedy else float(self.temperature)

    @classmethod
    def from_request(cls, params: Mapping[str, Any], *, default_max_tokens: int, max_possible_tokens: int,
                     default_repetition_penalty: float = 1.0, default_ignore_eos: bool = False) -> "SamplingParams":
        """Parse verl's ``sampling_params`` dict (as sent to vLLM) into :class:`SamplingParams`.

        ``max_tokens`` (or ``max_new_tokens``) defaults to ``default_max_tokens`` and is clamped to
        ``[1, max_possible_tokens]`` (the room left in the model's context), as verl's vLLM server does.
        Unknown keys and non-neutral values of unsupported features raise :class:`SamplingError`.
        """
        params = dict(params or {})
        known = {f.name for f in dataclasses.fields(cls)} | {"max_new_tokens"}
        for key, value in params.items():
            if key in known or key in _IGNORED_KEYS:
                continue
            if key in _NEUTRAL_VALUES:
                if value is not None and value != _NEUTRAL_VALUES[key] and not (key == "stop" and not value):
                    raise SamplingError(
                        f"sampling_params.{key}={value!r} is not supported by the hf_cpu rollout; use the neutral "
                        f"value {_NEUTRAL_VALUES[key]!r} (or a GPU rollout such as vllm)."
                    )
                continue
            raise SamplingError(
                f"sampling_params.{key} is not a sampling parameter the hf_cpu rollout knows; supported: "
                f"{sorted(known | set(_NEUTRAL_VALUES) | _IGNORED_KEYS)}."
            )
        if max_possible_tokens < 1:
            raise SamplingError(
                f"the prompt leaves no room to generate within the model's context (max_possible_tokens="
                f"{max_possible_tokens}); shorten data.max_prompt_length or raise "
                "actor_rollout_ref.rollout.max_model_len."
            )
        def get(key: str, default: Any) -> Any:
            value = params.get(key)
            return default if value is None else value

        max_tokens = int(get("max_tokens", get("max_new_tokens", default_max_tokens)))
        return cls(
            temperature=float(get("temperature", 1.0)),
            top_p=float(get("top_p", 1.0)),
            top_k=int(get("top_k", -1)),
            repetition_penalty=float(get("repetition_penalty", default_repetition_penalty)),
            max_tokens=max(1, min(max_tokens, max_possible_tokens)),
            ignore_eos=bool(get("ignore_eos", default_ignore_eos)),
            stop_token_ids=tuple(int(t) for t in get("stop_token_ids", ())),
            logprobs=bool(get("logprobs", True)),
        )


@dataclass
class Completion:
    """One row's result: generated ``token_ids`` (stop token included), their ``log_probs`` (or None)
    and ``finish_reason`` (``"stop"``: a stop/EOS token, ``"length"``: ``max_tokens`` reached)."""

    token_ids: list[int]
    log_probs: Optional[list[float]]
    finish_reason: str


class PerRowSampler:
    """transformers logits processor applying each row's sampling parameters; records log-probs.

    Called once per generated position with ``input_ids`` (B, P + t) and the raw fp32 logits
    ``scores`` (B, V) of position t; returns the processed scores (B, V) for ``torch.multinomial``.
    Greedy rows get a one-hot distribution on the argmax, so sampling picks it deterministically.
    The log-prob of the token sampled at step t is read at step t + 1 (when it appears in
    ``input_ids``), and for the last step by :meth:`finish`.
    """

    def __init__(self, params: Sequence[SamplingParams], prompt_starts: Tensor) -> None:
        self.batch_size = len(params)
        self.prompt_starts = prompt_starts  # (B,) index of each row's first real token in the padded batch
        self.temperature = torch.tensor([p.temperature if not p.greedy else 1.0 for p in params], dtype=torch.float32)
        self.logprob_temperature = torch.tensor([p.logprob_temperature for p in params], dtype=torch.float32)
        self.greedy = torch.tensor([p.greedy for p in params], dtype=torch.bool)
        self.any_sampled = bool((~self.greedy).any())
        self.any_greedy = bool(self.greedy.any())
        self.top_k = torch.tensor([p.top_k if p.top_k > 0 and not p.greedy else 0 for p in params], dtype=torch.long)
        self.top_p = torch.tensor([p.top_p if not p.greedy else 1.0 for p in params], dtype=torch.float32)
        self.need_top_k = bool((self.top_k > 0).any())
        self.need_top_p = bool((self.top_p < 1.0).any())
        self.penalties = [(i, p.repetition_penalty) for i, p in enumerate(params) if p.repetition_penalty != 1.0]
        self.want_logprobs = any(p.logprobs for p in params)
        self._last_log_probs: Optional[Tensor] = None  # (B, V) log_softmax(raw / T_lp) of the latest step
        self.token_log_probs: list[Tensor] = []  # one (B,) tensor per generated position

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self._last_log_probs is not None:
            self._record(input_ids[:, -1])
        if self.want_logprobs:
            self._last_log_probs = torch.log_softmax(scores / self.logprob_temperature[:, None], dim=-1)
        processed = scores
        if self.penalties:
            processed = processed.clone()
            for row, penalty in self.penalties:
                seen = input_ids[row, int(self.prompt_starts[row]):].unique()
                values = processed[row, seen]
                processed[row, seen] = torch.where(values > 0, values / penalty, values * penalty)
        if self.any_sampled:
            processed = processed / self.temperature[:, None]
            if self.need_top_k or self.need_top_p:
                processed = self._top_k_top_p(processed)
        if self.any_greedy:
            one_hot = torch.full_like(processed, float("-inf"))
            one_hot.scatter_(1, processed.argmax(dim=-1, keepdim=True), 0.0)
            processed = torch.where(self.greedy[:, None], one_hot, processed)
        return processed

    def _top_k_top_p(self, logits: Tensor) -> Tensor:
        """vLLM order: top-k on the tempered logits, then top-p on the top-k-renormalised distribution."""
        sorted_logits, sorted_index = logits.sort(dim=-1, descending=True)
        vocab = logits.shape[-1]
        rank = torch.arange(vocab).expand_as(sorted_logits)
        remove = torch.zeros_like(sorted_logits, dtype=torch.bool)
        if self.need_top_k:
            k = torch.where(self.top_k > 0, self.top_k.clamp(max=vocab), torch.full_like(self.top_k, vocab))
            remove |= rank >= k[:, None]
        if self.need_top_p:
            probs = torch.softmax(sorted_logits.masked_fill(remove, float("-inf")), dim=-1)
            mass_before = probs.cumsum(dim=-1) - probs
            remove |= (mass_before >= self.top_p[:, None]) & (rank > 0)
        mask = torch.zeros_like(remove).scatter_(1, sorted_index, remove)
        return logits.masked_fill(mask, float("-inf"))

    def _record(self, tokens: Tensor) -> None:
        self.token_log_probs.append(self._last_log_probs.gather(1, tokens[:, None]).squeeze(1))
        self._last_log_probs = None

    def finish(self, sequences: Tensor) -> Optional[Tensor]:
        """Record the last step's log-probs; returns (B, L) log-probs of the generated tokens, or None."""
        if not self.want_logprobs:
            return None
        if self._last_log_probs is not None:
            self._record(sequences[:, -1])
        if not self.token_log_probs:
            return torch.zeros(self.batch_size, 0)
        return torch.stack(self.token_log_probs, dim=1)


class PerRowStop:
    """Per-row stopping criterion: row i is done after ``max_tokens[i]`` new tokens or a stop token.

    ``__call__(input_ids (B, P + t), scores) -> (B,) bool``; transformers keeps appending tokens to
    finished rows until every row is done, and :meth:`BatchedGenerator.generate` cuts them off.
    """

    def __init__(self, prompt_width: int, max_tokens: Tensor, stop_ids: Tensor) -> None:
        self.prompt_width = prompt_width
        self.max_tokens = max_tokens  # (B,)
        self.stop_ids = stop_ids  # (B, S), padded with -1

    def __call__(self, input_ids: Tensor, scores: Any = None, **kwargs: Any) -> Tensor:
        generated = input_ids.shape[1] - self.prompt_width
        at_limit = generated >= self.max_tokens
        hit_stop = (input_ids[:, -1:] == self.stop_ids).any(dim=1)
        return at_limit | hit_stop


class BatchedGenerator:
    """Run B token-in/token-out requests through one ``model.generate`` (see the module docstring).

    ``model`` is a causal LM in eval mode; ``eos_token_ids`` end a row unless its ``ignore_eos``;
    ``pad_token_id`` fills the left padding (masked out, so its value does not matter);
    ``max_model_len``: a batch whose longest prompt plus largest ``max_tokens`` would exceed it is
    split into sub-batches that fit (every row keeps decoding until its batch ends).
    """

    def __init__(self, model: torch.nn.Module, eos_token_ids: Iterable[int], pad_token_id: int,
                 max_model_len: Optional[int] = None) -> None:
        from transformers import GenerationConfig

        self.model = model
        self.max_model_len = max_model_len
        self.eos_token_ids = tuple(sorted({int(t) for t in eos_token_ids}))
        self.pad_token_id = int(pad_token_id)
        # Everything transformers would do on its own is off: no warpers, no EOS handling, no defaults
        # merged from the checkpoint's generation_config.json.
        self.generation_config = GenerationConfig(
            do_sample=True, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
            eos_token_id=None, bos_token_id=None, pad_token_id=self.pad_token_id, use_cache=True,
        )
        model.generation_config = GenerationConfig(pad_token_id=self.pad_token_id)

    def _stop_ids(self, params: Sequence[SamplingParams]) -> Tensor:
        rows = [list(p.stop_token_ids) + ([] if p.ignore_eos else list(self.eos_token_ids)) for p in params]
        width = max(1, max(len(r) for r in rows))
        return torch.tensor([r + [-1] * (width - len(r)) for r in rows], dtype=torch.long)

    def generate(self, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams]) -> list[Completion]:
        """Generate for ``prompts`` (B lists of token ids) with per-row ``params``; B completions, in order."""
        if len(prompts) != len(params):
            raise ValueError(f"got {len(prompts)} prompts but {len(params)} sampling parameter sets")
        if any(len(p) == 0 for p in prompts):
            raise SamplingError("prompt_ids is empty: every request needs at least one prompt token.")
        results: list[Optional[Completion]] = [None] * len(prompts)
        for rows in self._fitting_groups(prompts, params):
            for row, completion in zip(rows, self._generate([prompts[r] for r in rows], [params[r] for r in rows])):
                results[row] = completion
        return results

    def _fitting_groups(self, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams]) -> list[list[int]]:
        """Row indices grouped so that max(prompt) + max(max_tokens) <= max_model_len in every group."""
        rows = list(range(len(prompts)))
        if self.max_model_len is None:
            return [rows] if rows else []
        groups: list[list[int]] = []
        longest = most_new = 0
        for row in sorted(rows, key=lambda r: len(prompts[r])):
            p, m = len(prompts[row]), params[row].max_tokens
            if groups and max(longest, p) + max(most_new, m) <= self.max_model_len:
                groups[-1].append(row)
                longest, most_new = max(longest, p), max(most_new, m)
            else:
                groups.append([row])
                longest, most_new = p, m
        return [sorted(g) for g in groups]

    @torch.no_grad()
    def _generate(self, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams]) -> list[Completion]:
        """One ``model.generate`` for all rows (see the class docstring)."""
        batch, width = len(prompts), max(len(p) for p in prompts)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt):] = torch.as_tensor(list(prompt), dtype=torch.long)
            attention_mask[row, width - len(prompt):] = 1
        prompt_starts = torch.tensor([width - len(p) for p in prompts])
        max_tokens = torch.tensor([p.max_tokens for p in params], dtype=torch.long)
        stop_ids = self._stop_ids(params)
        sampler = PerRowSampler(params, prompt_starts)

        from transformers import LogitsProcessorList, StoppingCriteriaList

        generation_config = copy.deepcopy(self.generation_config)
        generation_config.max_new_tokens = int(max_tokens.max())
        sequences = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=generation_config,
            logits_processor=LogitsProcessorList([sampler]),
            stopping_criteria=StoppingCriteriaList([PerRowStop(width, max_tokens, stop_ids)]),
        )
        generated = sequences[:, width:]  # (B, L)
        log_probs = sampler.finish(sequences)  # (B, L) or None
        completions = []
        for row, p in enumerate(params):
            tokens = generated[row, : p.max_tokens].tolist()
            length, reason = len(tokens), "length"
            stops = set(stop_ids[row].tolist()) - {-1}
            for position, token in enumerate(tokens):
                if token in stops:
                    length, reason = position + 1, "stop"
                    break
            row_log_probs = log_probs[row, :length].tolist() if (p.logprobs and log_probs is not None) else None
            completions.append(Completion(token_ids=tokens[:length], log_probs=row_log_probs, finish_reason=reason))
        return completions
