"""The driver-side phase controller: an online tracker of the entropy trajectory (PAPO.md §3).

Each training step the trainer feeds the token-mean entropy ``H̄_k`` of the old policy over the
batch's response tokens; the tracker answers with :class:`PhaseWeights` ``(w₊, w₋, g)``:

* reference ``H_ref``: mean of the first ``warmup_steps`` observations; weights neutral until then;
* level ``m_k = β_l m_{k−1} + (1−β_l) H̄_k``; trend ``d_k = β_t d_{k−1} + (1−β_t)(H̄_k − H̄_{k−1})``;
* trend term ``g_trend = tanh(−(d_k / m_k) / slope_scale)``: falling entropy favours expansion;
* guard band: below ``floor·H_ref`` push to expand, above ``ceil·H_ref`` push to contract,
  saturating linearly to ±1 over ``band_softness`` of the band edge;
* or, with ``target_knots``, a target curve ``H*(progress)`` replaces the band:
  ``g_target = tanh(log(H*/m_k) / target_scale)`` and the trend is measured against the target's own
  slope [ours];
* ``g_k = clip(g_trend + g_guard, −1, 1)``; ``(w₊, w₋) = (1 + α g_k, 1 − α g_k)`` (before conservation).

Non-finite or negative observations are rejected: the trajectory state is left untouched, the
previous weights are held, and the rejection is counted (``papo/tracker_rejected``).

:class:`PolarityValidator` is the paper's validation run online: the correlation between the
predicted entropy change of the applied update and the change measured at the next step.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

from papo_verl.config import PapoConfig, PapoConfigError

__all__ = ["EntropyTracker", "PhaseWeights", "PolarityValidator", "TRACKER_STATE_VERSION"]

logger = logging.getLogger(__name__)

TRACKER_STATE_VERSION = 1


@dataclass(frozen=True)
class PhaseWeights:
    """Branch weights before pressure conservation.

    expand: ``w₊ = 1 + α g`` applied to tokens with polarity ρ > 0 (entropy-expanding).
    contract: ``w₋ = 1 − α g`` applied to tokens with ρ < 0 (entropy-contracting).
    tilt: ``g ∈ [−1, 1]``; > 0 favours expansion, < 0 contraction, 0 is neutral.
    """

    expand: float = 1.0
    contract: float = 1.0
    tilt: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class EntropyTracker:
    """Online entropy-trajectory tracker (see module docstring).

    Example::

        tracker = EntropyTracker(PapoConfig(alpha=0.5))
        weights = tracker.update(2.31)   # PhaseWeights(expand=1.0, contract=1.0, tilt=0.0) in warm-up
    """

    def __init__(self, config: Optional[PapoConfig] = None, **overrides: Any) -> None:
        if config is None:
            config = PapoConfig(**overrides)
        elif overrides:
            config = PapoConfig(**{**config.to_dict(), **overrides})
        if config.target_knots is not None and config.total_steps is None:
            raise PapoConfigError(
                "algorithm.papo.total_steps: an entropy schedule (target_knots) needs the number of training "
                "steps; set trainer.total_training_steps or algorithm.papo.total_steps"
            )
        self.config = config
        self._knots = None if config.target_knots is None else np.asarray(config.target_knots, dtype=np.float64)
        self.reset()

    # ------------------------------------------------------------------------------------------
    def reset(self) -> None:
        self.steps = 0  # accepted observations
        self.warmup_sum = 0.0
        self.reference: Optional[float] = None  # H_ref
        self.level: Optional[float] = None  # m
        self.trend = 0.0  # d
        self.last: Optional[float] = None  # H̄ of the previous accepted step
        self.previous: Optional[float] = None  # H̄ of the step before that
        self.rejected = 0
        self.weights = PhaseWeights()

    @property
    def in_warmup(self) -> bool:
        return self.reference is None

    def target(self, step: Optional[int] = None) -> Optional[float]:
        """Target entropy ``H*`` at ``step`` (default: the last accepted step), or None without a schedule."""
        if self._knots is None or self.reference is None:
            return None
        step = self.steps if step is None else step
        progress = min(1.0, max(0.0, step / float(self.config.total_steps)))
        return self.reference * float(np.interp(progress, self._knots[:, 0], self._knots[:, 1]))

    # ------------------------------------------------------------------------------------------
    def update(self, mean_entropy: float) -> PhaseWeights:
        """Observe ``H̄_k`` (nats, token-mean over valid response tokens) and return this step's weights."""
        try:
            value = float(mean_entropy)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0.0:
            self.rejected += 1
            logger.warning(
                "papo EntropyTracker: rejected mean entropy %r (non-finite or negative); holding weights %s "
                "(rejections so far: %d)", mean_entropy, self.weights, self.rejected
            )
            return self.weights

        cfg = self.config
        self.steps += 1
        if self.level is None:
            self.level = value
        else:
            self.trend = cfg.trend_momentum * self.trend + (1.0 - cfg.trend_momentum) * (value - self.last)
            self.level = cfg.level_momentum * self.level + (1.0 - cfg.level_momentum) * value
        self.previous, self.last = self.last, value

        if self.reference is None:
            self.warmup_sum += value
            if self.steps >= cfg.warmup_steps:
                self.reference = self.warmup_sum / cfg.warmup_steps
            self.weights = PhaseWeights()
            return self.weights

        tilt = self._tilt()
        self.weights = PhaseWeights(expand=1.0 + cfg.alpha * tilt, contract=1.0 - cfg.alpha * tilt, tilt=tilt)
        return self.weights

    def _tilt(self) -> float:
        cfg = self.config
        level = max(self.level, 1e-8)
        target = self.target()
        if target is None:
            g_trend = math.tanh(-(self.trend / level) / cfg.slope_scale)
            lower = cfg.floor * self.reference
            upper = cfg.ceil * self.reference
            g_guard = 0.0
            if self.level < lower:
                g_guard = min(1.0, (lower - self.level) / max(cfg.band_softness * lower, 1e-12))
            elif self.level > upper:
                g_guard = -min(1.0, (self.level - upper) / max(cfg.band_softness * upper, 1e-12))
        else:
            target_slope = target - self.target(self.steps - 1)
            g_trend = math.tanh(-((self.trend - target_slope) / level) / cfg.slope_scale)
            g_guard = math.tanh(math.log(max(target, 1e-8) / level) / cfg.target_scale)
        return float(min(1.0, max(-1.0, g_trend + g_guard)))

    # ------------------------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Scalars for ``papo/*`` logging (entropy in nats; trend in nats/step)."""
        out = {
            "papo/tilt": self.weights.tilt,
            "papo/entropy_level": float("nan") if self.level is None else self.level,
            "papo/entropy_trend": self.trend,
            "papo/tracker_rejected": float(self.rejected),
            "papo/tracker_warmup": 1.0 if self.steps <= self.config.warmup_steps else 0.0,  # weights were neutral
        }
        if self.last is not None:
            out["papo/entropy"] = self.last
        if self.reference is not None:
            out["papo/entropy_ref"] = self.reference
        target = self.target()
        if target is not None:
            out["papo/entropy_target"] = target
        return out

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state; Python floats round-trip exactly through JSON."""
        return {
            "version": TRACKER_STATE_VERSION,
            "config": self.config.to_dict(),
            "steps": self.steps,
            "warmup_sum": self.warmup_sum,
            "reference": self.reference,
            "level": self.level,
            "trend": self.trend,
            "last": self.last,
            "previous": self.previous,
            "rejected": self.rejected,
            "weights": self.weights.as_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version = state.get("version")
        if version != TRACKER_STATE_VERSION:
            raise ValueError(
                f"EntropyTracker state version {version!r} is not supported (expected {TRACKER_STATE_VERSION}); "
                "the checkpoint was written by an incompatible papo_verl"
            )
        saved_cfg = state.get("config", {})
        changed = {k: (saved_cfg.get(k), v) for k, v in self.config.to_dict().items()
                   if k in saved_cfg and saved_cfg.get(k) != v}
        if changed:
            logger.warning("papo EntropyTracker: resuming with changed config (saved, now): %s", changed)
        self.steps = int(state["steps"])
        self.warmup_sum = float(state["warmup_sum"])
        self.reference = None if state["reference"] is None else float(state["reference"])
        self.level = None if state["level"] is None else float(state["level"])
        self.trend = float(state["trend"])
        self.last = None if state["last"] is None else float(state["last"])
        self.previous = None if state["previous"] is None else float(state["previous"])
        self.rejected = int(state["rejected"])
        self.weights = PhaseWeights(**state["weights"])


class PolarityValidator:
    """Sliding-window correlation of predicted and measured entropy change (``papo/dH_corr_*``).

    Step ``k`` records ``predicted_k``: the valid-token mean of ``Â_t P_t`` of the update applied at
    step k (proportional to the first-order ΔH of that update). When ``H̄_{k+1}`` arrives, the
    measured change ``H̄_{k+1} − H̄_k`` is paired with ``predicted_k``. Pearson and Spearman
    correlations are reported over the last ``window`` pairs (at least 3).
    """

    def __init__(self, window: int = 20) -> None:
        if window < 3:
            raise ValueError(f"window must be >= 3, got {window}")
        self.window = window
        self.pairs: deque[tuple[float, float]] = deque(maxlen=window)
        self.pending: Optional[float] = None  # predicted change of the last applied update
        self.last_entropy: Optional[float] = None
        self.last_pair: Optional[tuple[float, float]] = None  # pair completed by the last observation

    def observe_entropy(self, mean_entropy: float) -> Optional[float]:
        """Record ``H̄`` of a new step; return the measured change since the previous step (or None)."""
        value = float(mean_entropy)
        if not math.isfinite(value):
            return None
        measured = None if self.last_entropy is None else value - self.last_entropy
        self.last_pair = None
        if measured is not None and self.pending is not None:
            self.last_pair = (self.pending, measured)
            self.pairs.append(self.last_pair)
        self.pending = None
        self.last_entropy = value
        return measured

    def record_prediction(self, predicted: float) -> None:
        value = float(predicted)
        self.pending = value if math.isfinite(value) else None

    def correlations(self) -> dict[str, float]:
        if len(self.pairs) < 3:
            return {}
        pred, meas = (np.asarray(v, dtype=np.float64) for v in zip(*self.pairs))
        return {
            "papo/dH_corr_pearson": _pearson(pred, meas),
            "papo/dH_corr_spearman": _pearson(_ranks(pred), _ranks(meas)),
            "papo/dH_corr_window": float(len(self.pairs)),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"window": self.window, "pairs": [list(p) for p in self.pairs], "pending": self.pending,
                "last_entropy": self.last_entropy}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pairs = deque((tuple(map(float, p)) for p in state["pairs"]), maxlen=self.window)
        self.pending = state["pending"]
        self.last_entropy = state["last_entropy"]


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), as Spearman's correlation needs."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j)
        i = j + 1
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")  # undefined for a constant series
    return float(np.corrcoef(x, y)[0, 1])
