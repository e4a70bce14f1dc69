"""PapoConfig: defaults per PAPO.md, and errors that name the key and the fix."""

import pytest

from papo_verl import PapoConfig, PapoConfigError


def test_defaults_follow_the_specification():
    c = PapoConfig()
    assert (c.alpha, c.w_min, c.w_max, c.warmup_steps) == (0.5, 0.2, 5.0, 3)
    assert (c.level_momentum, c.trend_momentum, c.slope_scale, c.floor, c.ceil) == (0.7, 0.7, 0.02, 0.25, 2.0)
    assert c.correction == "exact" and c.target_knots is None


@pytest.mark.parametrize("key,value,match", [
    ("alpha", 1.0, "alpha"), ("alpha", -0.1, "alpha"), ("w_min", 0.0, "w_min"), ("w_max", 0.5, "w_max"),
    ("correction", "approx", "correction"), ("warmup_steps", 0, "warmup_steps"), ("warmup_steps", 1.5, "warmup_steps"),
    ("level_momentum", 1.0, "level_momentum"), ("slope_scale", 0.0, "slope_scale"), ("floor", 1.2, "floor"),
    ("ceil", 0.9, "ceil"), ("alpha", float("nan"), "finite"), ("target_knots", [[0, 1]], "two"),
    ("target_knots", [[0.2, 1], [1, 1]], "span"), ("target_knots", [[0, 1], [1, -1]], "ratio"),
    ("dh_window", 2, "dh_window"), ("stats_backend", "cuda", "stats_backend"), ("total_steps", 0, "total_steps"),
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
    c = PapoConfig.from_mapping({"alpha": 0.3, "target_knots": [(0, 1), (1, 0.5)], "total_steps": 10})
    assert PapoConfig.from_mapping(c.to_dict()) == c
