"""PapoConfig: defaults per docs/algorithm.md, and errors that name the key and the fix."""

import pytest

from papo_verl import PapoConfig, PapoConfigError


def test_defaults_follow_the_specification():
    c = PapoConfig()
    assert (c.alpha, c.w_min, c.w_max, c.warmup_steps) == (0.5, 0.2, 5.0, 3)
    assert (c.controller, c.split, c.slope_scale, c.floor, c.ceil) == ("trend", "polarity", 0.01, 0.25, 2.0)
    assert (c.level_noise, c.slope_noise, c.evidence_z, c.max_tilt_step) == (0.002, 0.0002, 2.0, 0.1)
    assert c.correction == "exact" and c.target_knots is None and c.validate_every == 0


@pytest.mark.parametrize("key,value,match", [
    ("alpha", 1.0, "alpha"), ("alpha", -0.1, "alpha"), ("w_min", 0.0, "w_min"), ("w_max", 0.5, "w_max"),
    ("correction", "approx", "correction"), ("warmup_steps", 0, "warmup_steps"), ("warmup_steps", 1.5, "warmup_steps"),
    ("controller", "pid", "trend"), ("split", "sign", "advantage_sign"), ("slope_noise", -0.1, "slope_noise"),
    ("evidence_z", float("inf"), "finite"), ("max_tilt_step", 0.0, "max_tilt_step"),
    ("validate_every", -1, "validate_every"), ("validate_window", 2, "validate_window"),
    ("target_knots", [[0, 1], [1, 1]], "controller=target"), ("slope_scale", 0.0, "slope_scale"), ("floor", 1.2, "floor"),
    ("ceil", 0.9, "ceil"), ("alpha", float("nan"), "finite"), ("target_knots", [[0, 1]], "two"),
    ("target_knots", [[0.2, 1], [1, 1]], "span"), ("target_knots", [[0, 1], [1, -1]], "ratio"),
    ("stats_backend", "cuda", "stats_backend"), ("total_steps", 0, "total_steps"),
])
def test_out_of_range_values_name_the_key(key, value, match):
    with pytest.raises(PapoConfigError, match=match) as err:
        PapoConfig.from_mapping({key: value})
    assert f"algorithm.papo.{key}" in str(err.value)


def test_unknown_keys_are_rejected_with_the_valid_ones():
    with pytest.raises(PapoConfigError, match=r"algorithm\.papo\.alfa") as err:
        PapoConfig.from_mapping({"alfa": 0.3})
    assert "alpha" in str(err.value)


def test_from_mapping_round_trip():
    c = PapoConfig.from_mapping({"alpha": 0.3, "controller": "target", "target_knots": [(0, 1), (1, 0.5)],
                                 "total_steps": 10})
    assert PapoConfig.from_mapping(c.to_dict()) == c
