"""The driver-side phase controller: a noise-aware estimate of the entropy trajectory and the tilt.

Each training step the trainer feeds the token-mean entropy ``H̄_k`` of the old policy over the
batch's response tokens **and its standard error** ``s_k`` (:func:`papo_verl.algorithm.entropy_mean_stderr`);
the tracker answers with :class:`PhaseWeights` ``(w₊, w₋, g)``.

Estimate (a local-linear-trend Kalman filter on ``y_k = log H̄_k``) [ours]
--------------------------------------------------------------------------
* state ``x = (m, d)``: the log entropy level and its slope per step (``d`` is the relative change
  per step: −0.015 means "falling 1.5 %/step"), with covariance ``P``;
* predict ``m ← m + d``, ``d ← d``, ``P ← F P Fᵀ + diag(level_noise², slope_noise²)`` (process noise
  in relative units per step);
* measure ``y_k`` with variance ``R_k = (s_k / H̄_k)²`` (delta method). Without ``s_k`` the noise is
  estimated online from the residuals of the raw observations' local-linear prediction
  (``y_k − 2y_{k−1} + y_{k−2}`` has variance ≈ 6R), starting from a 5 % prior;
* ``H_ref`` is the mean of the ``warmup_steps`` first observations; weights are neutral until then.

The filter reacts as fast as the evidence allows: with a small batch (large ``s_k``) it averages
over many steps, with a large batch it follows the entropy within a few, with no retuning.

Control laws, ``controller`` [ours]
-----------------------------------
* evidence gate ``γ(z) = max(0, 1 − z₀²/z²)`` on a z-score ``z`` (``z₀ = evidence_z``): 0 for
  anything the noise explains (|z| ≤ z₀), → 1 as the evidence grows;
* ``trend``: ``g = tanh(−d / slope_scale) · γ(d / sd(d))``: falling entropy favours expansion,
  rising entropy contraction, only as far as the slope is real;
* ``target``: keep the level on ``H*(progress) = H_ref · interp(target_knots)`` (flat at ``H_ref``
  without knots): error ``e = log H* − m`` with ``sd(e)² = P_mm + var(log H_ref)``, gated
  ``ẽ = γ(e / sd(e)) · e``; proportional ``ẽ / target_scale`` plus integral
  ``I ← clip(I + target_integral · ẽ / target_scale, −1, 1)``, frozen while the output is saturated
  in the same direction (anti-windup);
* both: a guard band (below ``floor·H_ref`` push to expand, above ``ceil·H_ref`` contract, linear
  over ``band_softness`` of the edge) added as a last resort; ``g ∈ [−1, 1]``;
  ``|g_k − g_{k−1}| ≤ max_tilt_step``; ``(w₊, w₋) = (1 + α g, 1 − α g)`` before conservation.

Non-finite or negative observations (or standard errors) are rejected: the state is left untouched,
the previous weights are held, and the rejection is counted (``papo/tracker_rejected``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

from papo_verl.algorithm.config import PapoConfig, PapoConfigError

__all__ = ["EntropyTracker", "PhaseWeights", "TRACKER_STATE_VERSION", "evidence_gate"]

logger = logging.getLogger(__name__)

TRACKER_STATE_VERSION = 2

# Without a measured standard error: prior relative noise of H̄ (5 %), its weight in observations,
# and the forgetting factor of the residual-based estimate (≈ 20-step memory).
_NOISE_PRIOR = 0.05
_NOISE_PRIOR_WEIGHT = 2.0
_NOISE_FORGET = 0.95
# Prior standard deviation of the slope at the first observation: 10 %/step (vague).
_SLOPE_PRIOR = 0.1
# log(H̄) of an exactly zero entropy (fully collapsed batch): treated as 1e-6 nats.
_MIN_ENTROPY = 1e-6


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


def evidence_gate(z: float, z0: float) -> float:
    """``max(0, 1 − z₀²/z²)``: 0 while ``|z| ≤ z₀`` (noise explains it), → 1 for strong evidence."""
    z2 = z * z
    return 0.0 if z2 <= z0 * z0 else 1.0 - (z0 * z0) / z2


class EntropyTracker:
    """Noise-aware entropy-trajectory tracker and phase controller (see module docstring).

    Example::

        tracker = EntropyTracker(PapoConfig(alpha=0.5))
        weights = tracker.update(2.31, stderr=0.02)   # PhaseWeights(1.0, 1.0, 0.0) during warm-up
    """

    def __init__(self, config: Optional[PapoConfig] = None, **overrides: Any) -> None:
        if config is None:
            config = PapoConfig(**overrides)
        elif overrides:
            config = PapoConfig(**{**config.to_dict(), **overrides})
        if config.controller == "target" and config.target_knots is not None and config.total_steps is None:
            raise PapoConfigError(
                "algorithm.papo.total_steps: an entropy schedule (target_knots) needs the number of training "
                "steps; set trainer.total_training_steps or algorithm.papo.total_steps"
            )
        self.config = config
        knots = config.target_knots if config.target_knots is not None else [[0.0, 1.0], [1.0, 1.0]]
        self._knots = np.asarray(knots, dtype=np.float64)
        self.reset()

    # ------------------------------------------------------------------------------------------
    def reset(self) -> None:
        self.steps = 0  # accepted observations
        self.rejected = 0
        self.state: Optional[list[float]] = None  # [m, d]: log level, relative slope per step
        self.cov: Optional[list[list[float]]] = None  # P, 2x2
        self.noise_var = 0.0  # R of the last observation (log units)
        self.noise_measured = True  # whether R came from a given standard error
        self.residual_num = _NOISE_PRIOR_WEIGHT * _NOISE_PRIOR**2  # residual-based estimate of R (no stderr)
        self.residual_den = _NOISE_PRIOR_WEIGHT
        self.recent: list[float] = []  # the last two log observations (residuals)
        self.warmup_sum = 0.0
        self.warmup_var_sum = 0.0  # Σ R over the warm-up (uncertainty of log H_ref)
        self.reference: Optional[float] = None  # H_ref, nats
        self.reference_var = 0.0  # variance of log H_ref
        self.last: Optional[float] = None  # H̄ of the last accepted step, nats
        self.last_stderr: Optional[float] = None  # its standard error (measured or estimated), nats
        self.integral = 0.0  # the target controller's integral term
        self.weights = PhaseWeights()

    @property
    def in_warmup(self) -> bool:
        return self.reference is None

    def target(self, step: Optional[int] = None) -> Optional[float]:
        """``H*`` at ``step`` (default: the last accepted step) for ``controller=target``, else None."""
        if self.config.controller != "target" or self.reference is None:
            return None
        step = self.steps if step is None else step
        total = self.config.total_steps
        progress = 0.0 if total is None else min(1.0, max(0.0, step / float(total)))
        return self.reference * float(np.interp(progress, self._knots[:, 0], self._knots[:, 1]))

    # ------------------------------------------------------------------------------------------
    def update(self, mean_entropy: float, stderr: Optional[float] = None) -> PhaseWeights:
        """Observe ``H̄_k`` (nats) with its standard error ``s_k`` (nats; None: estimated) → this step's weights."""
        value, noise = _as_float(mean_entropy), (None if stderr is None else _as_float(stderr))
        if not (math.isfinite(value) and value >= 0.0) or (noise is not None and not (math.isfinite(noise)
                                                                                      and noise >= 0.0)):
            self.rejected += 1
            logger.warning(
                "papo EntropyTracker: rejected mean entropy %r (stderr %r): non-finite or negative; holding "
                "weights %s (rejections so far: %d)", mean_entropy, stderr, self.weights, self.rejected)
            return self.weights

        cfg = self.config
        y = math.log(max(value, _MIN_ENTROPY))
        r = self._measurement_variance(y, value, noise)
        self.steps += 1
        self._filter(y, r)
        self.last = value
        self.last_stderr = noise if noise is not None else math.sqrt(r) * value

        if self.reference is None:
            self.warmup_sum += value
            self.warmup_var_sum += r
            if self.steps >= cfg.warmup_steps:
                self.reference = self.warmup_sum / cfg.warmup_steps
                self.reference_var = self.warmup_var_sum / cfg.warmup_steps**2
            self.weights = PhaseWeights()
            return self.weights

        raw = self._control() + self._guard()
        previous = self.weights.tilt
        tilt = min(previous + cfg.max_tilt_step, max(previous - cfg.max_tilt_step, raw))
        tilt = float(min(1.0, max(-1.0, tilt)))
        self.weights = PhaseWeights(expand=1.0 + cfg.alpha * tilt, contract=1.0 - cfg.alpha * tilt, tilt=tilt)
        return self.weights

    def _measurement_variance(self, y: float, value: float, stderr: Optional[float]) -> float:
        """R of log H̄: from the given standard error, else from the raw observations' residuals."""
        if len(self.recent) == 2:
            residual = y - 2.0 * self.recent[1] + self.recent[0]  # variance ≈ 6R for a local-linear trend
            self.residual_num = _NOISE_FORGET * self.residual_num + residual * residual / 6.0
            self.residual_den = _NOISE_FORGET * self.residual_den + 1.0
        self.recent = [*self.recent[-1:], y]
        self.noise_measured = stderr is not None
        if stderr is not None:
            r = (stderr / max(value, _MIN_ENTROPY)) ** 2
        else:
            r = self.residual_num / self.residual_den
        self.noise_var = max(r, 1e-12)
        return self.noise_var

    def _filter(self, y: float, r: float) -> None:
        """One predict/update step of the local-linear-trend Kalman filter (Joseph form)."""
        cfg = self.config
        if self.state is None:
            self.state = [y, 0.0]
            self.cov = [[r, 0.0], [0.0, _SLOPE_PRIOR**2]]
            return
        (m, d), ((p00, p01), (_, p11)) = self.state, self.cov
        # predict: F = [[1, 1], [0, 1]], Q = diag(level_noise², slope_noise²)
        m, p00, p01 = m + d, p00 + 2.0 * p01 + p11 + cfg.level_noise**2, p01 + p11
        p11 = p11 + cfg.slope_noise**2
        # update with H = [1, 0]
        s = p00 + r
        k0, k1 = p00 / s, p01 / s
        innovation = y - m
        m, d = m + k0 * innovation, d + k1 * innovation
        # Joseph form (I−KH)P(I−KH)ᵀ + K R Kᵀ keeps P symmetric positive definite
        a00, a01, a11 = 1.0 - k0, -k1, 1.0  # rows of (I − K H): [[1−k0, 0], [−k1, 1]]
        n00 = a00 * a00 * p00 + k0 * k0 * r
        n01 = a00 * (a01 * p00 + a11 * p01) + k0 * k1 * r
        n11 = a01 * a01 * p00 + 2.0 * a01 * a11 * p01 + a11 * a11 * p11 + k1 * k1 * r
        self.state, self.cov = [m, d], [[n00, n01], [n01, n11]]

    # ------------------------------------------------------------------------------------------
    @property
    def slope(self) -> float:
        return 0.0 if self.state is None else self.state[1]

    @property
    def slope_sd(self) -> float:
        return math.inf if self.cov is None else math.sqrt(self.cov[1][1])

    @property
    def level(self) -> Optional[float]:
        """Filtered entropy level, nats."""
        return None if self.state is None else math.exp(self.state[0])

    def _control(self) -> float:
        cfg = self.config
        if cfg.controller == "trend":
            z = self.slope / self.slope_sd
            return math.tanh(-self.slope / cfg.slope_scale) * evidence_gate(z, cfg.evidence_z)
        error = math.log(self.target()) - self.state[0]
        sd = math.sqrt(self.cov[0][0] + self.reference_var)
        gated = error * evidence_gate(error / sd, cfg.evidence_z)
        proportional = gated / cfg.target_scale
        step = cfg.target_integral * gated / cfg.target_scale
        output = proportional + self.integral
        if not (abs(output) >= 1.0 and output * step > 0):  # anti-windup: no integration into saturation
            self.integral = min(1.0, max(-1.0, self.integral + step))
        return proportional + self.integral

    def _guard(self) -> float:
        cfg = self.config
        level = self.level
        lower, upper = cfg.floor * self.reference, cfg.ceil * self.reference
        if level < lower:
            return min(1.0, (lower - level) / max(cfg.band_softness * lower, 1e-12))
        if level > upper:
            return -min(1.0, (level - upper) / max(cfg.band_softness * upper, 1e-12))
        return 0.0

    # ------------------------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Scalars for ``papo/*`` logging (entropies in nats; slopes as fractions of the level per step)."""
        out = {
            "papo/tilt": self.weights.tilt,
            "papo/tracker_rejected": float(self.rejected),
            "papo/tracker_warmup": 1.0 if self.steps <= self.config.warmup_steps else 0.0,  # weights were neutral
        }
        if self.state is not None:
            level = self.level
            out.update({
                "papo/entropy": self.last,
                "papo/entropy_stderr": self.last_stderr,
                "papo/entropy_stderr_measured": 1.0 if self.noise_measured else 0.0,
                "papo/entropy_level": level,
                "papo/entropy_level_sd": level * math.sqrt(self.cov[0][0]),
                "papo/entropy_slope": self.slope,
                "papo/entropy_slope_sd": self.slope_sd,
                "papo/entropy_slope_snr": self.slope / self.slope_sd,
            })
        if self.reference is not None:
            out["papo/entropy_ref"] = self.reference
        target = self.target()
        if target is not None:
            out["papo/entropy_target"] = target
            out["papo/target_integral"] = self.integral
        return out

    _STATE_FIELDS = ("steps", "rejected", "state", "cov", "noise_var", "noise_measured", "residual_num",
                     "residual_den", "recent", "warmup_sum", "warmup_var_sum", "reference", "reference_var", "last",
                     "last_stderr", "integral")

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state; Python floats round-trip exactly through JSON."""
        out = {"version": TRACKER_STATE_VERSION, "config": self.config.to_dict(), "weights": self.weights.as_dict()}
        out.update({name: getattr(self, name) for name in self._STATE_FIELDS})
        return out

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
        for name in self._STATE_FIELDS:
            setattr(self, name, state[name])
        self.weights = PhaseWeights(**state["weights"])


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
