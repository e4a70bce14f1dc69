"""``PapoConfig``: every PAPO knob in one dataclass (the ``algorithm.papo`` block).

Pure Python; no verl import. Units and typical magnitudes are given per field. Construct it from a
mapping with :meth:`PapoConfig.from_mapping`, which names the offending key in every error.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

__all__ = ["CONTROLLERS", "CORRECTIONS", "PapoConfig", "PapoConfigError", "SPLITS", "STATS_BACKENDS"]

STATS_BACKENDS = ("auto", "triton", "torch")
CONTROLLERS = ("trend", "target")
CORRECTIONS = ("exact", "none")  # correction: E3 with the correction C_t, or the sampled-token term only
SPLITS = ("polarity", "advantage_sign")


class PapoConfigError(ValueError):
    """A PAPO configuration value is missing, unknown or out of range (the message names the key)."""


@dataclass
class PapoConfig:
    """PAPO hyper-parameters (``docs/algorithm.md`` explains each part of the algorithm).

    Advantage reweighting (docs/algorithm.md §2)
    --------------------------------------------
    alpha: Maximum share of pressure the tracker moves between branches: ``w± = 1 ± α g``.
        Dimensionless, ``0 ≤ α < 1``; typical 0.3–0.6. ``0`` turns PAPO into GRPO (with D1).
    w_min, w_max: Clamp of each branch weight after conservation. Defaults 0.2 / 5.0; keep
        ``w_min > 0`` so neither branch is ever switched off. Rarely worth changing.
    correction: ``"exact"`` uses the full polarity coefficient ``P_t``; ``"none"`` keeps only
        the sampled-token term (ablation; misclassifies a measurable share of tokens).
    epsilon: Added to the group std in the base advantage, as GRPO's ``epsilon`` (1e-6).

    Phase controller (docs/algorithm.md §3)
    ---------------------------------------
    controller: ``"trend"`` (default): tilt by the filtered relative slope of the entropy, resisting
        fast collapse and runaway growth; ``"target"``: keep the filtered level on the target
        trajectory ``H*(progress) = H_ref · interp(target_knots)`` (flat at ``H_ref`` without knots)
        with a proportional–integral law, as closed-loop entropy controllers do.
    split: ``"polarity"`` (default): branches by the sign of ``ρ_t = A_t P_t``. ``"advantage_sign"``
        (ablation): branches by the sign of ``−A_t`` (penalised samples expand, reinforced ones
        contract), everything else identical; isolates what the polarity coefficient adds.
    warmup_steps: Steps whose mean entropy defines ``H_ref``; weights are neutral meanwhile.
        Integer ≥ 1, default 3. Longer warm-up for noisy early batches (tiny batches, n ≤ 4).
    level_noise: Process noise of the filter's log entropy level: the standard deviation of
        unpredictable level jumps, as a fraction of the level per step. Default 0.002 (0.2 %/step);
        larger follows abrupt jumps sooner but passes more batch noise into the level and slope.
    slope_noise: Process noise of the filter's slope: how much the relative slope may change per
        step (fraction of the level per step²). Default 0.0002: the slope is assumed to drift slowly
        (an entropy trend of 0.5 %/step is detected within ~20 steps at 128 responses per step, a
        collapse of 3 %/step within 4–7); 0.001 lets the slope turn faster but then slopes below
        ~1 %/step never clear the evidence gate, whatever the batch size.
    evidence_z: z-score below which an estimated slope (``trend``) or level error (``target``) is
        treated as noise: the gate ``max(0, 1 − z₀²/z²)`` is 0 for ``|z| ≤ z₀``. Default 2.0;
        larger is quieter and slower. 0 disables the gate (not recommended: the tilt follows noise).
    slope_scale: Relative entropy slope per step that gives ``tanh(1) ≈ 0.76`` of full tilt
        (``trend``). Unit: fraction of the level per step; default 0.01 (1 %/step: entropy halving
        in ~70 steps counts as a fast collapse).
    max_tilt_step: Largest change of the tilt ``g`` from one step to the next (both controllers).
        In (0, 2]; default 0.1 (from neutral to full tilt in 10 steps); 2 disables the limit.
    floor, ceil: Guard band in units of ``H_ref``, a last resort for both controllers: below
        ``floor·H_ref`` push to expand, above ``ceil·H_ref`` push to contract. Defaults 0.25 and
        2.0; ``0 < floor < 1 < ceil``.
    band_softness: Fraction of the band edge over which the guard term saturates to ±1 (0.1).
    target_knots: ``target`` only: entropy schedule, a list of ``[progress, ratio]`` pairs
        (progress in [0, 1] of ``total_steps``, ratio in units of ``H_ref``), interpolated
        linearly; e.g. increase-then-decrease ``[[0, 1.0], [0.3, 1.2], [1, 0.6]]``. ``None``
        (default): a flat target at ``H_ref``.
    target_scale: ``target``: log-ratio ``log(H*/m)`` that gives a full proportional tilt (0.1,
        i.e. a level 10 % off target).
    target_integral: ``target``: integral gain per step, in units of the proportional term;
        default 0.05 (a persistent, gated error e adds 0.05·e/target_scale of tilt per step).
        0 makes the law purely proportional.
    total_steps: Training steps for the schedule's progress; set by the trainer from
        ``trainer.total_training_steps`` when left ``None``.

    Validation of polarity (docs/algorithm.md §4)
    ---------------------------------------------
    validate_every: Every this many steps measure, on the step's own batch, how each branch moves
        the entropy (branch response, 4 extra forward+backward passes over the batch at θ_old, and
        one parameter-sized buffer held through the update) and the same batch's token entropies
        after the update (1 extra forward). ``0`` (default) turns validation off; it never changes
        training. The CPU demo uses 10.
    validate_window: Number of validation steps in the across-step correlation of the predicted
        and measured same-batch entropy change (``papo/val/dH_corr_*``). Integer ≥ 3, default 20.

    Diagnostics and performance
    ---------------------------
    track_polarity_flips: During the actor update also compute the current policy's ``Σπ²`` and
        ``Σπ² log π`` (one more pass over the logits per training micro-batch, no extra forward)
        to log ``actor/papo/polarity_flip_share``. Turn off to save that pass on huge vocabularies.
    stats_backend: ``"auto"`` (Triton on CUDA when installed, else chunked torch), ``"triton"``
        (fail if unavailable) or ``"torch"``.
    stats_chunk_size: Tokens per chunk of the torch statistics path; ``None`` picks a chunk of
        about 2**22 logits (16 MiB of float32 temporaries).
    """

    alpha: float = 0.5
    w_min: float = 0.2
    w_max: float = 5.0
    correction: str = "exact"
    epsilon: float = 1e-6
    controller: str = "trend"
    split: str = "polarity"
    warmup_steps: int = 3
    level_noise: float = 0.002
    slope_noise: float = 0.0002
    evidence_z: float = 2.0
    slope_scale: float = 0.01
    max_tilt_step: float = 0.1
    floor: float = 0.25
    ceil: float = 2.0
    band_softness: float = 0.1
    target_knots: Optional[list] = None
    target_scale: float = 0.1
    target_integral: float = 0.05
    total_steps: Optional[int] = None
    validate_every: int = 0
    validate_window: int = 20
    track_polarity_flips: bool = True
    stats_backend: str = "auto"
    stats_chunk_size: Optional[int] = None
    _prefix: str = field(default="algorithm.papo", repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------------------------------
    def _fail(self, key: str, msg: str) -> None:
        raise PapoConfigError(f"{self._prefix}.{key}: {msg}")

    def validate(self) -> None:
        """Check types and ranges; raise :class:`PapoConfigError` naming the key and the fix."""
        for name in ("alpha", "w_min", "w_max", "epsilon", "level_noise", "slope_noise", "evidence_z", "slope_scale",
                     "max_tilt_step", "floor", "ceil", "band_softness", "target_scale", "target_integral"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                self._fail(name, f"must be a finite number, got {value!r}")
        if not 0.0 <= self.alpha < 1.0:
            self._fail("alpha", f"must be in [0, 1) so both weights stay positive, got {self.alpha}")
        if not 0.0 < self.w_min <= 1.0:
            self._fail("w_min", f"must be in (0, 1] (a zero weight would drop a branch), got {self.w_min}")
        if self.w_max < 1.0:
            self._fail("w_max", f"must be >= 1, got {self.w_max}")
        if self.correction not in CORRECTIONS:
            self._fail("correction", f"must be 'exact' or 'none', got {self.correction!r}")
        if self.epsilon < 0:
            self._fail("epsilon", f"must be >= 0, got {self.epsilon}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 1:
            self._fail("warmup_steps", f"must be an integer >= 1 (H_ref needs one observation), got {self.warmup_steps!r}")
        if self.controller not in CONTROLLERS:
            self._fail("controller", f"must be one of {CONTROLLERS}, got {self.controller!r}")
        if self.split not in SPLITS:
            self._fail("split", f"must be one of {SPLITS}, got {self.split!r}")
        for name in ("level_noise", "slope_noise", "evidence_z", "target_integral"):
            if getattr(self, name) < 0:
                self._fail(name, f"must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.max_tilt_step <= 2.0:
            self._fail("max_tilt_step", f"must be in (0, 2] (2 disables the limit), got {self.max_tilt_step}")
        if self.slope_scale <= 0:
            self._fail("slope_scale", f"must be > 0, got {self.slope_scale}")
        if not 0.0 < self.floor < 1.0:
            self._fail("floor", f"must be in (0, 1) (units of H_ref), got {self.floor}")
        if self.ceil <= 1.0:
            self._fail("ceil", f"must be > 1 (units of H_ref), got {self.ceil}")
        if not 0.0 < self.band_softness <= 1.0:
            self._fail("band_softness", f"must be in (0, 1], got {self.band_softness}")
        if self.target_scale <= 0:
            self._fail("target_scale", f"must be > 0, got {self.target_scale}")
        if self.total_steps is not None and (isinstance(self.total_steps, bool) or not isinstance(self.total_steps, int)
                                             or self.total_steps < 1):
            self._fail("total_steps", f"must be a positive integer or null, got {self.total_steps!r}")
        if self.target_knots is not None:
            self.target_knots = self._check_knots(self.target_knots)
            if self.controller != "target":
                self._fail("target_knots", f"an entropy schedule needs controller=target (got controller="
                           f"{self.controller!r}); set algorithm.papo.controller=target or target_knots=null")
        if not isinstance(self.track_polarity_flips, bool):
            self._fail("track_polarity_flips", f"must be true or false, got {self.track_polarity_flips!r}")
        for name, low in (("validate_every", 0), ("validate_window", 3)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                self._fail(name, f"must be an integer >= {low}, got {value!r}")
        if self.stats_backend not in STATS_BACKENDS:
            self._fail("stats_backend", f"must be one of {STATS_BACKENDS}, got {self.stats_backend!r}")
        if self.stats_chunk_size is not None and (isinstance(self.stats_chunk_size, bool)
                                                  or not isinstance(self.stats_chunk_size, int)
                                                  or self.stats_chunk_size < 1):
            self._fail("stats_chunk_size", f"must be a positive integer or null, got {self.stats_chunk_size!r}")

    def _check_knots(self, knots: Any) -> list:
        try:
            pairs = [[float(p), float(r)] for p, r in knots]
        except (TypeError, ValueError):
            self._fail("target_knots", f"must be a list of [progress, ratio] pairs, got {knots!r}")
        if len(pairs) < 2:
            self._fail("target_knots", "needs at least two [progress, ratio] pairs")
        progress = [p for p, _ in pairs]
        if progress != sorted(progress) or len(set(progress)) != len(progress):
            self._fail("target_knots", f"progress values must be strictly increasing, got {progress}")
        if progress[0] > 0.0 or progress[-1] < 1.0 or not all(0.0 <= p <= 1.0 for p in progress):
            self._fail("target_knots", f"progress values must span exactly [0, 1], got {progress}")
        if not all(r > 0 and math.isfinite(r) for _, r in pairs):
            self._fail("target_knots", f"ratios (units of H_ref) must be finite and > 0, got {[r for _, r in pairs]}")
        return pairs

    # ------------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]

    @classmethod
    def from_mapping(cls, mapping: Optional[Mapping[str, Any]], prefix: str = "algorithm.papo") -> "PapoConfig":
        """Build from a dict / DictConfig, rejecting unknown keys with the list of valid ones."""
        if mapping is None:
            return cls(_prefix=prefix)
        items = dict(mapping.items())
        known = set(cls.field_names())
        unknown = sorted(set(items) - known)
        if unknown:
            raise PapoConfigError(
                f"unknown key(s) {', '.join(prefix + '.' + k for k in unknown)}; valid keys under {prefix} are: "
                f"{', '.join(sorted(known))}"
            )
        if items.get("target_knots") is not None:
            items["target_knots"] = [list(pair) for pair in items["target_knots"]]
        return cls(**items, _prefix=prefix)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.field_names()}


CONFIG_BLOCK_BEGIN = "<!-- papo-config:begin (copied from papo_verl/config/papo_trainer.yaml) -->"
CONFIG_BLOCK_END = "<!-- papo-config:end -->"


def yaml_block_markdown() -> str:
    """The ``algorithm.papo`` block of ``papo_trainer.yaml``, as the README shows it."""
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "config", "papo_trainer.yaml")
    lines = open(path, encoding="utf-8").read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "papo:")
    end = next(i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith("    ")
               and not lines[i].startswith("#"))
    block = "\n".join(lines[start:end]).rstrip()
    return "\n".join([CONFIG_BLOCK_BEGIN, "```yaml", "algorithm:", block, "```", CONFIG_BLOCK_END])


def _register_verl_config_search_path() -> None:
    """Put ``pkg://verl.trainer.config`` on Hydra's search path (so ``defaults: [ppo_trainer]`` resolves).

    A ``hydra.searchpath`` entry is honoured only in the primary config, and papo_trainer.yaml is also
    included by papo_trainer_cpu.yaml; Hydra's SearchPathPlugin works for both.
    """
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    class VerlConfigSearchPath(SearchPathPlugin):
        def manipulate_search_path(self, search_path) -> None:
            search_path.append(provider="verl", path="pkg://verl.trainer.config")

    Plugins.instance().register(VerlConfigSearchPath)


_register_verl_config_search_path()
