"""Cases for the one-pass Triton kernel under Triton's CPU interpreter (TRITON_INTERPRET=1).

Not collected by itself (no ``test_`` prefix): ``test_triton_interpreter_on_cpu.py`` runs this
file in a child pytest with ``TRITON_INTERPRET=1`` set before triton is first imported — Triton
chooses between compiler and interpreter when its ``@jit`` functions (its own included) are
decorated, so the choice cannot be switched inside a process that already imported triton.
Small shapes only: the interpreter executes every program in numpy.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before the first import of triton in this process

import pytest  # noqa: E402
import torch  # noqa: E402

try:
    import triton  # noqa: F401
except Exception as exc:  # not installed, or a broken install (the dispatcher falls back to torch)
    pytest.skip(f"triton does not import: {type(exc).__name__}: {exc}", allow_module_level=True)

import papo_verl.kernels as kernels  # noqa: E402
from papo_verl.kernels.logit_sums import finalize_logit_sums, merge_logit_partial_sums  # noqa: E402

from .helpers import assert_stats, brute_force, brute_force_partial_sums, make_logits  # noqa: E402


@pytest.fixture(scope="module")
def ts():
    """``papo_verl.kernels.triton_stats``, built for the interpreter."""
    try:
        from papo_verl.kernels import triton_stats as module
    except Exception as exc:  # a broken triton install: the dispatcher falls back anyway
        pytest.skip(f"triton_stats does not import: {type(exc).__name__}: {exc}")
    if not module.INTERPRETED:
        pytest.skip("triton was imported before TRITON_INTERPRET=1 was set; run this file in a fresh process")
    try:
        module.triton_logit_sums(torch.randn(2, 8), block_v=8)
    except Exception as exc:
        pytest.skip(f"Triton's interpreter does not run on CPU tensors here: {type(exc).__name__}: {exc}")
    return module


def stats_of(out, labels):
    return (out[0] if labels is not None else None, out[1], out[2], out[3])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("vocab,block", [(200, 64), (256, 64), (50, 64)])  # ragged, exact tiles, one partial tile
def test_kernel_equals_float64_brute_force(ts, dtype, prefetch, vocab, block):
    logits, labels = make_logits(6, vocab, dtype, seed=vocab)
    out = ts.triton_logit_sums(logits, labels, block_v=block, prefetch=prefetch)
    assert out.shape == (4, 6) and out.dtype == torch.float32
    assert_stats(stats_of(out, labels), brute_force(logits, labels))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_temperature_scalar_and_per_token(ts, dtype):
    logits, labels = make_logits(5, 300, dtype, seed=21, scale=20.0)
    for temperature in (0.7, torch.tensor(1.3), torch.linspace(0.5, 1.5, 5)):
        out = ts.triton_logit_sums(logits, labels, temperature, block_v=128)
        assert_stats(stats_of(out, labels), brute_force(logits, labels, temperature))


def test_kernel_valid_mask_skips_garbage_rows_and_no_labels(ts):
    logits, labels = make_logits(6, 100, seed=4)
    logits[2] = float("nan")
    logits[4] = float("-inf")
    valid = torch.tensor([True, True, False, True, False, True])
    out = ts.triton_logit_sums(logits, None, 0.9, valid=valid, block_v=64)
    assert (out[0] == 0).all()
    ref = brute_force(torch.nan_to_num(logits, nan=0.0, neginf=0.0), None, 0.9)
    assert_stats(stats_of(out, None), ref, valid=valid)
    for row in out:
        assert torch.isfinite(row).all()


def test_kernel_negative_infinity_nan_and_out_of_range_labels(ts):
    logits, labels = make_logits(4, 90, seed=6)
    logits[:, 30:40] = float("-inf")
    labels[:] = 1
    labels[3] = 90  # out of range: NaN for that row's log π, no out-of-bounds read
    logits[2, 5] = float("nan")
    out = ts.triton_logit_sums(logits, labels, block_v=32)
    ref = brute_force(logits[:2], labels[:2])
    assert_stats(tuple(t[:2] for t in stats_of(out, labels)), ref)
    assert torch.isnan(out[1:, 2]).all(), "NaN logits propagate"
    assert torch.isnan(out[0, 3]) and torch.isfinite(out[1:, 3]).all()


def test_kernel_partial_sums_merge_across_vocabulary_shards(ts):
    logits, _ = make_logits(5, 300, seed=12, scale=6.0)
    temperature = torch.tensor([0.6, 0.8, 1.0, 1.2, 1.4])
    whole = ts.triton_logit_sums(logits, None, temperature, partial_sums=True, block_v=64)
    torch.testing.assert_close(whole.double(), brute_force_partial_sums(logits, temperature), rtol=2e-5, atol=2e-6)
    bounds = [0, 1, 77, 200, 300]  # shards of 1, 76, 123, 100 logits: ragged tiles everywhere
    parts = torch.stack([ts.triton_logit_sums(logits[:, a:b], None, temperature, partial_sums=True, block_v=64,
                                              prefetch=True)
                         for a, b in zip(bounds, bounds[1:])])
    merged = finalize_logit_sums(merge_logit_partial_sums(parts))
    ref = brute_force(logits, None, temperature)
    for got, want in zip(merged[1:], ref[1:]):
        torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=2e-6)


def test_kernel_strided_rows_and_int32_labels(ts):
    big, labels = make_logits(8, 150, torch.bfloat16, seed=13)
    logits = big[1::2, :129]  # row stride 300, V = 129
    labels = (labels[1::2] % 129).to(torch.int32)
    out = ts.triton_logit_sums(logits, labels, 1.1, block_v=64)
    assert_stats(stats_of(out, labels), brute_force(logits, labels.long(), 1.1))


def test_dispatcher_runs_the_interpreted_kernel_when_triton_is_requested(ts, monkeypatch):
    monkeypatch.setattr(kernels, "_logged", set())
    logits, labels = make_logits(4, 64, seed=14)
    calls = []
    original = ts.triton_logit_sums

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs, block_v=32)

    monkeypatch.setattr(ts, "triton_logit_sums", spy)
    stats = kernels.logit_stats(logits, labels, 0.8, backend="triton")
    assert len(calls) == 1
    assert_stats(stats, brute_force(logits, labels, 0.8))
    sums = kernels.logit_partial_sums_rows(logits, 0.8, backend="triton")
    torch.testing.assert_close(sums.double(), brute_force_partial_sums(logits, 0.8), rtol=2e-5, atol=2e-6)
    auto = kernels.logit_stats(logits, labels, 0.8)  # auto on CPU tensors: torch, never the slow interpreter
    assert len(calls) == 2
    for a, b in zip(auto, stats):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-6)


def test_autotune_configs_are_sane(ts):
    configs = ts.autotune_configs()
    assert configs, "no autotune configs"
    for cfg in configs:
        block = cfg.kwargs["BLOCK_V"]
        per_thread = block // (32 * cfg.num_warps)
        assert block & (block - 1) == 0 and 8 <= per_thread <= 32
        assert not (cfg.kwargs["PREFETCH"] and per_thread > 16), "prefetching 32 logits per thread spills"
    kept = ts._prune_configs(configs, {"V": 32_000})
    assert kept and max(c.kwargs["BLOCK_V"] for c in kept) <= 65_536
    assert {c.kwargs["BLOCK_V"] for c in ts._prune_configs(configs, {"V": 152_064})} == \
        {c.kwargs["BLOCK_V"] for c in configs}
    assert max(c.kwargs["BLOCK_V"] for c in ts._prune_configs(configs, {"V": 7})) == 2048
