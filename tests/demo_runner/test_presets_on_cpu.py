"""The CPU demo's algorithm presets are the cluster recipes' algorithm keys (one source of truth).

Each recipe's arguments (``bash recipes/<name>_math.sh --print-args``) are reduced to its algorithm
keys (the allowlist of tests/recipes); the demo's preset must set the same keys to the same values,
except DAPO's overlong buffer, scaled to the demo's ~24-token responses.
"""

import pytest

from papo_verl.demo.run import ALGORITHMS, DEMO_SETTINGS, RECIPE_ALGORITHMS, VARIANTS, demo_overrides
from tests.recipes.test_recipes_on_cpu import is_algorithm_key, print_args

SCALED = {"+reward.reward_kwargs.overlong_buffer_cfg.len"}  # recipes: 512 tokens of 3072; demo: 4 of ~24


def as_map(args):
    out = {}
    for arg in args:
        key, _, value = arg.partition("=")
        out[key] = value.replace("\\${", "${")
    return out


@pytest.mark.parametrize("name", sorted(RECIPE_ALGORITHMS))
def test_demo_preset_equals_the_recipe_algorithm_keys(name):
    recipe = {k: v for k, v in as_map(print_args(f"{name}_math.sh")).items() if is_algorithm_key(k.lstrip("+"))
              and k not in ("trainer.experiment_name",)}
    demo = as_map(ALGORITHMS[name])
    assert set(demo) == set(recipe), set(demo) ^ set(recipe)
    for key in demo:
        if key not in SCALED:
            assert demo[key] == recipe[key], (name, key, demo[key], recipe[key])


def test_demo_runs_differ_only_in_algorithm_keys_and_names():
    base = as_map(demo_overrides("grpo", 0, 5, "grpo-seed0", "/ck/grpo-seed0"))
    for name in ALGORITHMS:
        other = as_map(demo_overrides(name, 0, 5, f"{name}-seed0", f"/ck/{name}-seed0"))
        differing = {k for k in set(base) | set(other) if base.get(k) != other.get(k)}
        names = ("trainer.default_local_dir", "trainer.validation_data_dir")  # per-run folders
        assert all(is_algorithm_key(k.lstrip("+")) or k in names for k in differing), differing
    assert not any(is_algorithm_key(s.partition("=")[0]) for s in DEMO_SETTINGS)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_papo_variants_differ_from_papo_in_one_papo_key(name):
    papo, variant = as_map(ALGORITHMS["papo"]), as_map(ALGORITHMS[name])
    differing = {k for k in set(papo) | set(variant) if papo.get(k) != variant.get(k)}
    assert len(differing) == 1 and next(iter(differing)).startswith("algorithm.papo."), differing
