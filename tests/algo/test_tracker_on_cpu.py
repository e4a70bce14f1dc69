"""PAPO.md §3: the entropy tracker's direction, warm-up, guard band, schedule, checkpoint round trip."""

import json
import math

import pytest

from papo_verl import EntropyTracker, PapoConfig, PapoConfigError, PhaseWeights, PolarityValidator


def feed(tracker, values):
    return [tracker.update(v) for v in values]


def test_neutral_during_warmup():
    tracker = EntropyTracker(PapoConfig(warmup_steps=3))
    weights = feed(tracker, [2.0, 1.5, 1.0])
    assert all(w == PhaseWeights(1.0, 1.0, 0.0) for w in weights)
    assert tracker.reference == pytest.approx(1.5)
    assert not tracker.in_warmup
    assert tracker.metrics()["papo/tracker_warmup"] == 1.0  # the third step's weights were still neutral
    tracker.update(1.0)
    assert tracker.metrics()["papo/tracker_warmup"] == 0.0


def test_falling_entropy_favours_expansion():
    tracker = EntropyTracker()
    weights = feed(tracker, [2.0 * 0.95**k for k in range(10)])
    last = weights[-1]
    assert last.expand > 1.0 > last.contract and last.tilt > 0
    assert last.expand == pytest.approx(1 + 0.5 * last.tilt) and last.contract == pytest.approx(1 - 0.5 * last.tilt)


def test_rising_entropy_favours_contraction():
    tracker = EntropyTracker()
    last = feed(tracker, [1.0 * 1.04**k for k in range(10)])[-1]
    assert last.contract > 1.0 > last.expand and last.tilt < 0


def test_steady_entropy_inside_band_is_neutral():
    tracker = EntropyTracker()
    last = feed(tracker, [1.5] * 10)[-1]
    assert last.tilt == 0.0 and last.expand == 1.0


def test_guard_band_pushes_back_from_collapse_and_explosion():
    low = EntropyTracker(PapoConfig(slope_scale=1e6))  # trend term off: only the band acts
    last = feed(low, [2.0, 2.0, 2.0] + [0.2] * 30)[-1]
    assert low.level < 0.25 * 2.0 and last.tilt == pytest.approx(1.0)
    high = EntropyTracker(PapoConfig(slope_scale=1e6))
    last = feed(high, [1.0, 1.0, 1.0] + [5.0] * 30)[-1]
    assert last.tilt == pytest.approx(-1.0)
    # saturation is linear over band_softness of the edge
    mid = EntropyTracker(PapoConfig(slope_scale=1e6, level_momentum=0.0))
    last = feed(mid, [2.0, 2.0, 2.0, 0.5 - 0.025])[-1]  # 0.025 below 0.5 = half of 10 % of the edge
    assert last.tilt == pytest.approx(0.5, abs=1e-5)  # the (disabled) trend term adds ~1e-6


def test_tilt_is_bounded():
    tracker = EntropyTracker(PapoConfig(alpha=0.9))
    for w in feed(tracker, [3.0, 3.0, 3.0, 0.01, 100.0, 0.0, 50.0]):
        assert -1.0 <= w.tilt <= 1.0 and w.expand > 0 and w.contract > 0


def test_schedule_tracks_the_target_curve():
    cfg = PapoConfig(target_knots=[[0, 1.0], [0.5, 1.5], [1.0, 0.5]], total_steps=20, slope_scale=1e6)
    tracker = EntropyTracker(cfg)
    feed(tracker, [1.0, 1.0, 1.0])
    w = tracker.update(1.0)  # target rising above the level: push to expand
    assert tracker.target() > 1.0 and w.tilt > 0
    with pytest.raises(PapoConfigError, match="total_steps"):
        EntropyTracker(PapoConfig(target_knots=[[0, 1.0], [1, 0.5]]))


def test_non_finite_input_is_rejected_without_changing_state():
    values = [2.0, 1.9, 1.8, 1.6, 1.5, 1.3]
    clean = EntropyTracker()
    ref = feed(clean, values)
    noisy = EntropyTracker()
    got = []
    for i, v in enumerate(values):
        if i == 4:
            before = json.dumps(noisy.state_dict())
            for bad in (float("nan"), float("inf"), -1.0, "x"):
                held = noisy.update(bad)
                assert held == got[-1]
            after = noisy.state_dict()
            assert after.pop("rejected") == 4
            assert {k: v for k, v in json.loads(before).items() if k != "rejected"} == after
        got.append(noisy.update(v))
    assert got == ref
    assert noisy.metrics()["papo/tracker_rejected"] == 4.0


def test_state_dict_round_trip_continues_bit_identically():
    values = [2.3 * (0.97**k) + 0.05 * math.sin(k) for k in range(30)]
    uninterrupted = EntropyTracker()
    ref = feed(uninterrupted, values)
    first = EntropyTracker()
    feed(first, values[:11])
    state = json.loads(json.dumps(first.state_dict()))  # through JSON, as the checkpoint stores it
    resumed = EntropyTracker()
    resumed.load_state_dict(state)
    assert feed(resumed, values[11:]) == ref[11:]  # exact equality, not approx
    with pytest.raises(ValueError, match="version"):
        resumed.load_state_dict({**state, "version": 99})


def test_validator_correlates_predicted_and_measured_change():
    v = PolarityValidator(window=5)
    entropies = [2.0, 1.9, 1.85, 1.9, 1.7, 1.72]
    predictions = [-0.1, -0.05, 0.05, -0.2, 0.02]
    measured = []
    for h, p in zip(entropies, predictions + [None]):
        measured.append(v.observe_entropy(h))
        if p is not None:
            v.record_prediction(p)
    assert measured[0] is None and measured[1] == pytest.approx(-0.1)
    corr = v.correlations()
    assert corr["papo/dH_corr_pearson"] == pytest.approx(1.0, abs=0.05)
    assert corr["papo/dH_corr_spearman"] == pytest.approx(1.0)
    restored = PolarityValidator(window=5)
    restored.load_state_dict(json.loads(json.dumps(v.state_dict())))
    assert restored.correlations() == corr
