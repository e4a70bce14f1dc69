"""The CPU demo's algorithms are the algorithm presets (papo_verl/config/algorithm_preset/), the files the
cluster recipes select: one source of truth. (tests/recipes composes both and checks that they resolve
the same preset keys; here, without Hydra, the demo's arguments and the preset files themselves.)"""

import re
from pathlib import Path

import pytest

from papo_verl.compare.configs import is_algorithm_key
from papo_verl.demo.run import (ALGORITHMS, DEMO_OVERLONG_BUFFER_LEN, DEMO_PAPO_SETTINGS, DEMO_SETTINGS,
                                OVERLONG_BUFFER_KEY, PRESET_DIR, demo_overrides, preset_keys)

REPO = Path(__file__).resolve().parents[2]
VARIANTS = {"papo_target": ("controller", "target"), "papo_sign": ("split", "advantage_sign"),
            "papo_nocorr": ("correction", "none")}


def as_map(args):
    return dict(arg.partition("=")[::2] for arg in args)


def test_the_demo_runs_every_preset_and_the_launchers_arms_exist():
    assert set(ALGORITHMS) == {p.stem for p in PRESET_DIR.glob("*.yaml")} == {
        "grpo", "papo", "dapo", "papo_dapo", "clip_cov", "kl_cov", *VARIANTS}
    assert {p.name.removesuffix("_math.sh") for p in (REPO / "recipes").glob("*_math.sh")} <= set(ALGORITHMS)
    protocol = (REPO / "examples" / "protocol.sh").read_text()
    multiseed = (REPO / "examples" / "cpu_multiseed.sh").read_text()
    arms = [arm for found in re.findall(r'ARMS="([^"]+)"', protocol) for arm in found.split()]
    arms += re.search(r'ALGORITHMS:-([^}]+)}', multiseed).group(1).split()
    assert arms and set(arms) <= set(ALGORITHMS), set(arms) - set(ALGORITHMS)


def test_preset_keys_merge_the_defaults_list_in_order():
    grpo = preset_keys("grpo")
    assert grpo["algorithm.adv_estimator"] == "grpo" and grpo["actor_rollout_ref.actor.clip_ratio_high"] == 0.2
    assert preset_keys("papo") == {**grpo, "algorithm.adv_estimator": "papo"}
    dapo = preset_keys("dapo")
    assert preset_keys("papo_dapo") == {**dapo, "algorithm.adv_estimator": "papo"}
    assert (dapo["actor_rollout_ref.actor.clip_ratio_high"], dapo[OVERLONG_BUFFER_KEY]) == (0.28, 512)
    assert dapo["reward.reward_kwargs.max_resp_len"] == "${data.max_response_length}"
    with pytest.raises(ValueError, match="unknown algorithm preset 'ppo'"):
        preset_keys("ppo")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_papo_variants_are_the_papo_preset_and_one_papo_key(name):
    key, value = VARIANTS[name]
    assert preset_keys(name) == {**preset_keys("papo"), f"algorithm.papo.{key}": value}


@pytest.mark.parametrize("name", ALGORITHMS)
def test_every_preset_key_is_an_algorithm_key_for_papo_compare(name):
    # papo-compare reports a difference outside its algorithm keys as a base-config mismatch
    assert [k for k in preset_keys(name) if not is_algorithm_key(k)] == []


def test_demo_runs_differ_only_in_the_preset_and_names():
    base = as_map(demo_overrides("grpo", 0, 5, "grpo-seed0", "/ck/grpo-seed0"))
    assert base["algorithm_preset"] == "grpo"
    for name in ALGORITHMS:
        other = as_map(demo_overrides(name, 0, 5, f"{name}-seed0", f"/ck/{name}-seed0"))
        differing = {k for k in set(base) | set(other) if base.get(k) != other.get(k)}
        names = {"trainer.experiment_name", "trainer.default_local_dir", "trainer.validation_data_dir"}
        assert differing - names <= {"algorithm_preset", OVERLONG_BUFFER_KEY, *as_map(DEMO_PAPO_SETTINGS)}, differing
        papo = preset_keys(name)["algorithm.adv_estimator"] == "papo"
        assert (other.get("algorithm.papo.validate_every") == "10") == papo
        assert other.get(OVERLONG_BUFFER_KEY) == (str(DEMO_OVERLONG_BUFFER_LEN) if name in ("dapo", "papo_dapo") else None)
    assert not any(is_algorithm_key(s.partition("=")[0]) for s in DEMO_SETTINGS)
    with pytest.raises(ValueError, match="unknown algorithm 'ppo'"):
        demo_overrides("ppo", 0, 5, "x", "/ck/x")
