"""The phase controller (docs/algorithm.md §3): the Kalman filter's estimate, both control laws on
synthetic trajectories with known noise (many noise draws), warm-up, guard band, rejection, resume."""

import json
import math

import numpy as np
import pytest

from papo_verl import EntropyTracker, PapoConfig, PapoConfigError, PhaseWeights
from papo_verl.algorithm.tracker import evidence_gate

SEEDS = range(60)  # noise draws per scenario (the issue asks for >= 50)


def feed(tracker, values, stderr=None):
    return [tracker.update(v, stderr) for v in values]


def tilts(trajectory, stderr, seed, give_stderr=True, **config):
    """Tilt per step of a tracker fed ``trajectory`` plus Gaussian noise of sd ``stderr``."""
    rng = np.random.default_rng(seed)
    tracker = EntropyTracker(PapoConfig(**config))
    out = [tracker.update(h + stderr * rng.normal(), stderr if give_stderr else None).tilt for h in trajectory]
    return np.array(out)


def draws(trajectory, stderr, give_stderr=True, **config):
    return np.array([tilts(trajectory, stderr, seed, give_stderr, **config) for seed in SEEDS])


CONSTANT = [0.35] * 61
FALLING = [0.35 * 0.985**k for k in range(61)]
RISING = [0.35 * 1.015**k for k in range(61)]
ONSET = [0.35] * 20 + [0.35 * 0.97**k for k in range(1, 41)]  # collapse starts at step 20


# ---------------------------------------------------------------------------------------------- estimate
@pytest.mark.parametrize("process_noise,spread", [((0.0, 0.0), (0.8, 1.2)), ((0.002, 0.0002), (0.2, 1.0))])
def test_filter_recovers_level_and_slope_with_honest_uncertainty(process_noise, spread):
    """On a noisy exponential trend the filtered slope is unbiased and its sd honest: when the model
    matches the truth (no process noise) the z-scores of the slope have unit spread; the default
    process noise (the slope may change) makes the filter conservative, never overconfident."""
    truth = -0.02
    trajectory = [0.8 * math.exp(truth * k) for k in range(80)]
    z, err = [], []
    for seed in range(300):
        rng = np.random.default_rng(seed)
        tracker = EntropyTracker(PapoConfig(level_noise=process_noise[0], slope_noise=process_noise[1]))
        for h in trajectory:
            tracker.update(h * math.exp(0.01 * rng.normal()), 0.01 * h)  # 1 % relative noise
        z.append((tracker.slope - truth) / tracker.slope_sd)
        err.append(tracker.level / trajectory[-1] - 1.0)
    assert abs(np.mean(z)) < 0.2 and spread[0] < np.std(z) < spread[1]
    assert abs(np.mean(err)) < 0.003


def test_noise_estimated_from_residuals_without_stderr():
    rng = np.random.default_rng(0)
    tracker = EntropyTracker()
    for _ in range(200):
        tracker.update(0.5 + 0.02 * rng.normal())
    metrics = tracker.metrics()
    assert metrics["papo/entropy_stderr_measured"] == 0.0
    assert metrics["papo/entropy_stderr"] == pytest.approx(0.02, rel=0.35)  # ≈ 20-step memory: a rough estimate
    tracker.update(0.5, 0.03)
    assert tracker.metrics()["papo/entropy_stderr"] == pytest.approx(0.03)
    assert tracker.metrics()["papo/entropy_stderr_measured"] == 1.0


def test_evidence_gate():
    assert evidence_gate(0.0, 2.0) == 0.0 and evidence_gate(2.0, 2.0) == 0.0 and evidence_gate(-1.9, 2.0) == 0.0
    assert evidence_gate(4.0, 2.0) == pytest.approx(0.75) and evidence_gate(-4.0, 2.0) == pytest.approx(0.75)
    assert evidence_gate(0.3, 0.0) == 1.0


# ---------------------------------------------------------------------------------------------- trend
@pytest.mark.parametrize("controller", ["trend", "target"])
def test_pure_noise_gives_a_quiet_tilt(controller):
    """Constant true entropy 0.35 with the noise of a 128-response batch (s = 0.014)."""
    t = draws(CONSTANT, 0.014, controller=controller)[:, 10:61]
    assert np.median(t.std(axis=1)) <= 0.1
    assert np.median(np.abs(t.mean(axis=1))) <= 0.05


@pytest.mark.parametrize("factor,sign", [(0.985, 1), (1.015, -1)])
def test_real_trend_gives_a_steady_push(factor, sign):
    """Falling (rising) 1.5 %/step: mean tilt after step 20 ≥ +0.25 (≤ −0.25) in ≥ 90 % of draws."""
    t = draws([0.35 * factor**k for k in range(61)], 0.014)
    assert np.mean(sign * t[:, 20:].mean(axis=1) >= 0.25) >= 0.9


def test_slow_trend_is_found_at_demo_noise_and_sooner_with_larger_batches():
    """Entropy falling 0.5 %/step (the CPU demo's pace) with the noise of 128 responses (4.5 % of the level):
    the tilt pushes towards expansion; with 4x the batch (half the noise) it does so earlier."""
    slow = [0.35 * math.exp(-0.005 * k) for k in range(61)]
    small = draws(slow, 0.045 * 0.35)
    large = draws(slow, 0.0225 * 0.35)
    assert np.median(small[:, 20:].mean(axis=1)) >= 0.2
    assert np.median(large[:, 10:30].mean(axis=1)) > np.median(small[:, 10:30].mean(axis=1))
    assert np.median(large[:, 20:].mean(axis=1)) >= np.median(small[:, 20:].mean(axis=1))


def _first_crossing(t, start=20, level=0.3):
    hit = np.nonzero(t[start:] >= level)[0]
    return hit[0] + 1 if len(hit) else math.inf


def test_larger_batch_reacts_sooner_to_an_onset_of_collapse():
    """−3 %/step from step 20: the tilt crosses 0.3 sooner with s = 0.002 than with 0.014, and
    within 8 steps with 0.002."""
    small = [_first_crossing(t) for t in draws(ONSET, 0.014)]
    large = [_first_crossing(t) for t in draws(ONSET, 0.002)]
    assert np.median(large) < np.median(small)
    assert np.median(large) <= 8 and np.mean(np.array(large) <= 8) >= 0.9


def test_tilt_moves_at_most_max_tilt_step():
    t = draws(ONSET, 0.002, max_tilt_step=0.05)
    assert np.abs(np.diff(t, axis=1)).max() <= 0.05 + 1e-12
    assert t.max() > 0.5  # still reaches a strong push


def test_without_stderr_the_tilt_is_still_quiet_and_follows_a_trend():
    quiet = draws(CONSTANT, 0.014, give_stderr=False)[:, 10:61]
    assert np.median(quiet.std(axis=1)) <= 0.1
    falling = draws(FALLING, 0.014, give_stderr=False)
    assert np.mean(falling[:, 20:].mean(axis=1) >= 0.25) >= 0.8


# ---------------------------------------------------------------------------------------------- target
def test_target_pushes_towards_a_flat_target():
    """A level held 30 % below the flat target (H_ref) gives a mean tilt ≥ 0.3 once the integral acted."""
    held = [0.35] * 5 + [0.245] * 56
    t = draws(held, 0.014, controller="target")
    assert np.median(t[:, 20:].mean(axis=1)) >= 0.3
    above = draws([0.35] * 5 + [0.455] * 56, 0.014, controller="target")
    assert np.median(above[:, 20:].mean(axis=1)) <= -0.3


def test_target_integral_removes_a_small_persistent_error():
    """A 4 % deficit is below the proportional gain's reach (0.4 tilt); the integral builds it up."""
    cfg = dict(controller="target", evidence_z=0.0, max_tilt_step=2.0)
    held = [1.0] * 3 + [0.96] * 40
    p_only = tilts(held, 0.0, 0, target_integral=0.0, **cfg)
    pi = tilts(held, 0.0, 0, **cfg)
    assert p_only[-1] == pytest.approx(-math.log(0.96) / 0.1, rel=0.05)
    assert pi[-1] > p_only[-1] + 0.3
    windup = EntropyTracker(PapoConfig(**cfg))
    feed(windup, [1.0] * 3 + [0.5] * 40, 0.0)  # saturated for 40 steps
    assert windup.integral <= 1.0  # anti-windup: bounded; reacts as soon as the level recovers
    w = feed(windup, [1.5] * 3, 0.0)[-1]
    assert w.tilt < 0


def test_schedule_sets_the_target():
    cfg = PapoConfig(controller="target", target_knots=[[0, 1.0], [0.5, 1.5], [1.0, 0.5]], total_steps=20)
    tracker = EntropyTracker(cfg)
    feed(tracker, [1.0, 1.0, 1.0], 0.001)
    assert tracker.target(10) == pytest.approx(1.5) and tracker.target(20) == pytest.approx(0.5)
    w = feed(tracker, [1.0] * 3, 0.001)[-1]  # target rising above the level: push to expand
    assert tracker.target() > 1.0 and w.tilt > 0
    assert tracker.metrics()["papo/entropy_target"] == pytest.approx(tracker.target())
    with pytest.raises(PapoConfigError, match="total_steps"):
        EntropyTracker(PapoConfig(controller="target", target_knots=[[0, 1.0], [1, 0.5]]))
    with pytest.raises(PapoConfigError, match="controller=target"):
        PapoConfig(target_knots=[[0, 1.0], [1, 0.5]], total_steps=5)


# ---------------------------------------------------------------------------------------------- common
def test_neutral_during_warmup():
    tracker = EntropyTracker(PapoConfig(warmup_steps=3))
    weights = feed(tracker, [2.0, 1.5, 1.0], 0.01)
    assert all(w == PhaseWeights(1.0, 1.0, 0.0) for w in weights)
    assert tracker.reference == pytest.approx(1.5)
    assert not tracker.in_warmup
    assert tracker.metrics()["papo/tracker_warmup"] == 1.0  # the third step's weights were still neutral
    tracker.update(1.0, 0.01)
    assert tracker.metrics()["papo/tracker_warmup"] == 0.0


def test_weights_follow_the_tilt():
    tracker = EntropyTracker(PapoConfig(alpha=0.4))
    last = feed(tracker, [2.0 * 0.9**k for k in range(15)], 0.002)[-1]
    assert last.tilt > 0.5 and last.expand == pytest.approx(1 + 0.4 * last.tilt)
    assert last.contract == pytest.approx(1 - 0.4 * last.tilt)


@pytest.mark.parametrize("controller", ["trend", "target"])
def test_guard_band_pushes_back_from_collapse_and_explosion(controller):
    gate_off = dict(controller=controller, slope_scale=1e6, target_scale=1e6, target_integral=0.0,
                    max_tilt_step=2.0)
    low = EntropyTracker(PapoConfig(**gate_off))
    last = feed(low, [2.0, 2.0, 2.0] + [0.2] * 30, 0.001)[-1]
    assert low.level < 0.25 * 2.0 and last.tilt == pytest.approx(1.0)
    high = EntropyTracker(PapoConfig(**gate_off))
    last = feed(high, [1.0, 1.0, 1.0] + [5.0] * 30, 0.001)[-1]
    assert last.tilt == pytest.approx(-1.0)


def test_tilt_is_bounded():
    tracker = EntropyTracker(PapoConfig(alpha=0.9, max_tilt_step=2.0))
    for w in feed(tracker, [3.0, 3.0, 3.0, 0.01, 100.0, 0.0, 50.0], 0.01):
        assert -1.0 <= w.tilt <= 1.0 and w.expand > 0 and w.contract > 0


def test_non_finite_or_negative_input_is_rejected_without_changing_state():
    values = [2.0, 1.9, 1.8, 1.6, 1.5, 1.3, 1.2]
    clean = EntropyTracker()
    ref = feed(clean, values, 0.02)
    noisy = EntropyTracker()
    got = []
    for i, v in enumerate(values):
        if i == 4:
            before = json.dumps(noisy.state_dict())
            for bad, err in ((float("nan"), 0.02), (float("inf"), 0.02), (-1.0, 0.02), ("x", 0.02), (1.0, -0.1),
                             (1.0, float("nan"))):
                held = noisy.update(bad, err)
                assert held == got[-1]
            after = noisy.state_dict()
            assert after.pop("rejected") == 6
            assert {k: v for k, v in json.loads(before).items() if k != "rejected"} == json.loads(json.dumps(after))
        got.append(noisy.update(v, 0.02))
    assert got == ref
    assert noisy.metrics()["papo/tracker_rejected"] == 6.0


@pytest.mark.parametrize("controller,with_stderr", [("trend", True), ("target", True), ("trend", False)])
def test_state_dict_round_trip_continues_bit_identically(controller, with_stderr):
    rng = np.random.default_rng(3)
    values = [2.3 * (0.97**k) + 0.05 * rng.normal() for k in range(40)]
    stderr = 0.05 if with_stderr else None
    uninterrupted = EntropyTracker(PapoConfig(controller=controller))
    ref = feed(uninterrupted, values, stderr)
    first = EntropyTracker(PapoConfig(controller=controller))
    feed(first, values[:11], stderr)
    state = json.loads(json.dumps(first.state_dict()))  # through JSON, as the checkpoint stores it
    resumed = EntropyTracker(PapoConfig(controller=controller))
    resumed.load_state_dict(state)
    assert feed(resumed, values[11:], stderr) == ref[11:]  # exact equality, not approx
    assert resumed.metrics() == uninterrupted.metrics()
    with pytest.raises(ValueError, match="version"):
        resumed.load_state_dict({**state, "version": 1})


def test_metrics_describe_the_estimate():
    tracker = EntropyTracker()
    feed(tracker, [1.0 * 0.98**k for k in range(30)], 0.001)
    m = tracker.metrics()
    assert m["papo/entropy_slope"] == pytest.approx(math.log(0.98), abs=2e-3)
    assert m["papo/entropy_slope_snr"] == pytest.approx(m["papo/entropy_slope"] / m["papo/entropy_slope_sd"])
    assert m["papo/entropy_level"] == pytest.approx(0.98**29, rel=5e-3)
    assert 0 < m["papo/entropy_level_sd"] < 0.01 and m["papo/entropy_stderr"] == pytest.approx(0.001)
