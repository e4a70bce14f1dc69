"""The CPU backend's vectorised validation bootstrap: verl's numbers, bit for bit, in a fraction of the time."""

import math
from functools import partial

import numpy as np
import pytest

import verl.trainer.ppo.metric_utils as metric_utils
from papo_verl.cpu.compat import vectorised_bootstrap, vectorised_validation_bootstrap
from papo_verl.integration.verl_version import UnsupportedVerlVersion

# the plugin has patched the module on import wherever the CPU backend is active: verl's own is underneath
ORIGINAL = getattr(metric_utils.bootstrap_metric, "__wrapped__", metric_utils.bootstrap_metric)
FAST = vectorised_bootstrap(ORIGINAL)


def _data(kind: str, n: int, rng: np.random.Generator) -> list:
    if kind == "binary":
        return [float(x) for x in rng.random(n) < 0.3]
    if kind == "bool":
        return [bool(x) for x in rng.random(n) < 0.5]
    if kind == "int":
        return [int(x) for x in rng.integers(-5, 5, n)]
    if kind == "numpy":
        return list(rng.normal(size=n))  # np.float64 scalars
    return [float(x) for x in rng.normal(size=n)] + [3, True]  # mixed Python scalars


@pytest.mark.parametrize("kind", ["binary", "bool", "int", "numpy", "mixed"])
@pytest.mark.parametrize("subset_size", [1, 2, 7, 16])
def test_same_floats_and_same_global_generator_state_as_verl(kind, subset_size):
    assert ORIGINAL.__module__ == metric_utils.__name__ and not hasattr(ORIGINAL, "__wrapped__")
    data = _data(kind, 16, np.random.default_rng(subset_size))
    reduce_fns = [np.max, np.min]
    expected = ORIGINAL(data, subset_size, reduce_fns, n_bootstrap=300, seed=7)
    state_after_verl = np.random.get_state()
    np.random.seed(123)  # something else in between: the patch must reseed exactly as verl does
    got = FAST(data, subset_size, reduce_fns, n_bootstrap=300, seed=7)
    assert got == expected  # exact: same indices, and max/min of the same floats
    after = np.random.get_state()
    assert after[0] == state_after_verl[0] and np.array_equal(after[1], state_after_verl[1]) and after[2:] == state_after_verl[2:]


@pytest.mark.parametrize("data,reduce_fns", [
    ([1.0, float("nan"), 0.0], [np.max, np.min]),  # object max with NaN: verl's comparison order decides
    ([0.0, 1.0, 1.0], [np.mean, np.max]),  # other reductions
    ([{"val": 1.0, "pred": "a"}, {"val": 0.0, "pred": "b"}],
     [partial(metric_utils.calc_maj_val, vote_key="pred", val_key="val")]),  # majority vote
    ([np.bool_(True), np.bool_(False)], [np.max, np.min]),  # not numbers.Real
])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # verl's own, on NaN
def test_everything_else_is_verls_own(data, reduce_fns):
    calls = []

    def original(*args, **kwargs):
        calls.append(args)
        return ORIGINAL(*args, **kwargs)

    got = vectorised_bootstrap(original)(data, 2, reduce_fns, n_bootstrap=50, seed=3)
    expected = ORIGINAL(data, 2, reduce_fns, n_bootstrap=50, seed=3)
    assert len(calls) == 1
    assert [tuple(map(repr, pair)) for pair in got] == [tuple(map(repr, pair)) for pair in expected]  # NaN-safe


def test_validation_metrics_identical_to_verls_and_patch_is_idempotent(monkeypatch):
    rng = np.random.default_rng(0)
    prompts, samples = 12, 8
    acc = [float(x) for x in rng.random(prompts * samples) < 0.4]
    infos = {"reward": [a - 0.5 for a in acc], "acc": acc, "well_formed": [1.0] * len(acc),
             "note": ["x"] * len(acc), "length": [int(x) for x in rng.integers(1, 24, len(acc))]}
    sources = ["countdown"] * len(acc)
    uids = [f"p{i // samples}" for i in range(len(acc))]
    monkeypatch.setattr(metric_utils, "bootstrap_metric", ORIGINAL)  # restored after the test
    expected = metric_utils.process_validation_metrics(sources, uids, infos)
    assert vectorised_validation_bootstrap() == vectorised_validation_bootstrap() == "patch:metric_utils.bootstrap_metric"
    assert metric_utils.bootstrap_metric is not ORIGINAL and metric_utils.bootstrap_metric.__wrapped__ is ORIGINAL
    got = metric_utils.process_validation_metrics(sources, uids, infos)
    assert got == expected and not any(math.isnan(v) for d in got.values() for m in d.values() for v in m.values())
    assert "best@8/mean" in got["countdown"]["acc"]


def test_patch_refuses_other_verl_versions(monkeypatch):
    monkeypatch.setattr(metric_utils, "bootstrap_metric", ORIGINAL)
    with pytest.raises(UnsupportedVerlVersion, match="bootstrap_metric"):
        vectorised_validation_bootstrap(version="0.10.0")
    assert metric_utils.bootstrap_metric is ORIGINAL


def test_patch_refuses_a_metric_module_of_another_shape(monkeypatch):
    monkeypatch.setattr(metric_utils, "bootstrap_metric", lambda data, subset_size, reduce_fns: [])
    with pytest.raises(UnsupportedVerlVersion, match="process_validation_metrics"):
        vectorised_validation_bootstrap()
