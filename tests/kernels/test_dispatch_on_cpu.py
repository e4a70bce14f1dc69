"""papo_verl.kernels: the dispatcher and its torch path equal the float64 reference; backend
selection, fallback, logging and errors."""

import logging

import pytest
import torch

import papo_verl.kernels as kernels
from papo_verl.kernels import CONFIG_KEY, logit_partial_sums_rows, logit_stats, resolve_backend
from papo_verl.kernels.logit_sums import finalize_logit_sums, merge_logit_partial_sums

from .helpers import assert_stats, brute_force, brute_force_partial_sums, make_logits


@pytest.fixture
def fresh_dispatch_state(monkeypatch):
    """Isolate the once-per-process log set and the cached Triton status."""
    monkeypatch.setattr(kernels, "_logged", set())
    monkeypatch.setattr(kernels, "_triton_import_error", None)
    monkeypatch.setattr(kernels, "_triton_runtime_error", None)


# ----------------------------------------------------------------------------------------------
# Correctness of the torch path through the dispatcher
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("vocab,n,chunk", [(7, 23, 5), (1000, 13, None), (151_936, 5, 2)])
def test_torch_path_equals_float64_brute_force(dtype, vocab, n, chunk):
    logits, labels = make_logits(n, vocab, dtype, seed=vocab + n)
    before = logits.clone()
    stats = logit_stats(logits, labels, backend="torch", chunk_size=chunk)
    assert torch.equal(logits, before), "the caller's logits must not be modified"
    tol = dict(rtol=1e-4, atol=2e-5) if vocab > 1000 else {}
    assert_stats(stats, brute_force(logits, labels), **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_temperature_scalar_tensor_and_per_token(dtype):
    """bf16 logits are divided by T in float32 (a bf16 division would lose ~3 digits at |z| ≈ 100)."""
    logits, labels = make_logits(19, 300, dtype, seed=5, scale=30.0)
    for temperature in (0.7, torch.tensor(1.3), torch.tensor([0.6]), torch.linspace(0.5, 1.5, 19)):
        stats = logit_stats(logits, labels, temperature, chunk_size=4)
        assert_stats(stats, brute_force(logits, labels, temperature))


def test_masked_rows_are_skipped_zero_and_may_hold_garbage():
    logits, labels = make_logits(30, 50, seed=7)
    logits[5] = float("nan")
    logits[6] = float("-inf")
    valid = torch.ones(30, dtype=torch.bool)
    valid[[5, 6, 29]] = False
    for dtype in (torch.float32, torch.bfloat16):
        x = logits.to(dtype)
        stats = logit_stats(x, labels, 0.8, valid=valid, chunk_size=7)
        assert_stats(stats, brute_force(torch.nan_to_num(x.float(), nan=0.0, neginf=0.0), labels, 0.8), valid=valid)
        sums = logit_partial_sums_rows(x, 0.8, valid=valid, chunk_size=7)
        assert (sums[~valid] == 0).all()
    empty = logit_stats(logits, labels, valid=torch.zeros(30, dtype=torch.bool))
    assert all((t == 0).all() for t in empty)


def test_negative_infinite_logits_count_as_zero_probability():
    """Masked vocabulary entries (−inf) must give exact statistics, not 0 · (−inf) = NaN."""
    logits, labels = make_logits(9, 64, seed=3)
    logits[:, 10:20] = float("-inf")
    labels[:] = 2
    stats = logit_stats(logits, labels, 0.9, chunk_size=4)
    assert_stats(stats, brute_force(logits, labels, 0.9))
    labels[0] = 15  # a −inf label has log π = −inf
    assert logit_stats(logits, labels).log_prob[0] == float("-inf")


def test_nan_logits_on_valid_rows_propagate():
    logits, labels = make_logits(4, 32, seed=4)
    logits[2, 7] = float("nan")
    stats = logit_stats(logits, labels)
    assert torch.isnan(stats.entropy[2]) and torch.isfinite(stats.entropy[[0, 1, 3]]).all()


def test_partial_sums_rows_and_shard_merge_equal_the_whole_vocabulary():
    logits, _ = make_logits(11, 1000, seed=11, scale=5.0)
    temperature = torch.linspace(0.6, 1.4, 11)
    rows = logit_partial_sums_rows(logits, temperature, chunk_size=3)
    torch.testing.assert_close(rows.double(), brute_force_partial_sums(logits, temperature), rtol=2e-5, atol=1e-6)
    whole = finalize_logit_sums(rows)
    for cuts in ([500], [1, 999], [137, 600, 999]):
        bounds = [0, *cuts, 1000]
        parts = torch.stack([logit_partial_sums_rows(logits[:, a:b], temperature) for a, b in zip(bounds, bounds[1:])])
        for got, want in zip(finalize_logit_sums(merge_logit_partial_sums(parts)), whole):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    _, entropy, s2, s2l = finalize_logit_sums(rows)
    ref = brute_force(logits, None, temperature)
    for got, want in zip((entropy, s2, s2l), ref[1:]):
        torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=2e-6)


def test_noncontiguous_rows_and_no_labels():
    big, labels = make_logits(10, 96, seed=8)
    logits = big[::2, :80]  # strided rows, as after slicing [:, :-1] of a padded batch
    stats = logit_stats(logits, None, 1.1)
    assert stats.log_prob is None
    assert_stats(stats, brute_force(logits, None, 1.1))


def test_outputs_carry_no_gradient():
    logits, labels = make_logits(6, 40, seed=2)
    logits.requires_grad_(True)
    stats = logit_stats(logits, labels, 0.9)
    assert all(not t.requires_grad for t in stats)
    assert not logit_partial_sums_rows(logits).requires_grad


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"\[N, V\]"):
        logit_stats(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="temperature"):
        logit_stats(torch.randn(3, 4), temperature=torch.ones(5))
    with pytest.raises(ValueError, match=CONFIG_KEY):
        logit_stats(torch.randn(3, 4), backend="cuda")


# ----------------------------------------------------------------------------------------------
# Backend selection, fallback, logging
# ----------------------------------------------------------------------------------------------
def test_auto_on_cpu_runs_torch_and_logs_once(fresh_dispatch_state, caplog):
    logits, labels = make_logits(5, 20)
    with caplog.at_level(logging.INFO, logger="papo_verl"):
        logit_stats(logits, labels)
        logit_stats(logits, labels)
        logit_partial_sums_rows(logits)
    lines = [r.getMessage() for r in caplog.records if "PAPO logit statistics" in r.getMessage()]
    assert len(lines) == 2, lines  # one per kind of call, not one per call
    assert "chunked torch path" in lines[0] and "cpu" in lines[0] and f"{CONFIG_KEY}=auto" in lines[0]
    assert "[partial sums]" in lines[1]


def test_resolve_backend_rules(fresh_dispatch_state, monkeypatch):
    assert resolve_backend("torch", "cuda")[0] == "torch"
    assert resolve_backend("auto", "cpu")[0] == "torch"
    usable, _ = kernels.triton_status()
    assert resolve_backend("auto", "cuda")[0] == ("triton" if usable else "torch")
    with pytest.raises(ValueError, match=CONFIG_KEY):
        resolve_backend("fast", "cpu")


def test_missing_triton_falls_back_under_auto_and_raises_when_requested(fresh_dispatch_state, monkeypatch):
    def no_triton():
        raise ImportError("No module named 'triton' (simulated)")

    monkeypatch.setattr(kernels, "_triton_module", no_triton)
    path, reason = resolve_backend("auto", "cuda")
    assert path == "torch" and "triton" in reason and "install" in reason
    with pytest.raises(RuntimeError, match=rf"{CONFIG_KEY}=triton.*not usable"):
        resolve_backend("triton", "cuda")
    with pytest.raises(RuntimeError, match=CONFIG_KEY):
        logit_stats(torch.randn(3, 4), backend="triton")


def test_triton_requested_on_cpu_without_interpreter_raises(fresh_dispatch_state):
    usable, why = kernels.triton_status()
    if not usable:
        pytest.skip(why)
    ts = kernels._triton_module()
    if ts.INTERPRETED:
        pytest.skip("this process built the kernels for the interpreter")
    with pytest.raises(RuntimeError, match=rf"{CONFIG_KEY}=triton needs the logits on a CUDA device"):
        logit_stats(torch.randn(3, 4), backend="triton")


class _FakeTritonModule:
    INTERPRETED = True

    def __init__(self, error):
        self.error = error
        self.calls = 0

    def triton_logit_sums(self, *args, **kwargs):
        self.calls += 1
        raise self.error


def test_kernel_failure_falls_back_to_torch_under_auto(fresh_dispatch_state, monkeypatch, caplog):
    """A compile/launch failure under ``auto`` is logged once and the torch path takes over."""
    fake = _FakeTritonModule(RuntimeError("PTX .version 9.9 does not support sm_00"))
    monkeypatch.setattr(kernels, "_triton_module", lambda: fake)
    monkeypatch.setattr(kernels, "triton_status", lambda: (kernels._triton_runtime_error is None, "fake"))
    monkeypatch.setattr(kernels, "resolve_backend",
                        lambda backend, device: ("triton", "fake") if kernels._triton_runtime_error is None
                        else ("torch", "fallback"))
    logits, labels = make_logits(6, 30, seed=1)
    with caplog.at_level(logging.WARNING, logger="papo_verl"):
        stats = logit_stats(logits, labels, 0.9)
        logit_stats(logits, labels, 0.9)
    assert_stats(stats, brute_force(logits, labels, 0.9))
    assert fake.calls == 1, "after a failure the kernel is not retried"
    assert "PTX" in kernels._triton_runtime_error
    assert any("failed" in r.getMessage() and "chunked torch path" in r.getMessage() for r in caplog.records)


def test_kernel_failure_raises_when_triton_is_requested(fresh_dispatch_state, monkeypatch):
    fake = _FakeTritonModule(RuntimeError("no kernel image is available"))
    monkeypatch.setattr(kernels, "_triton_module", lambda: fake)
    monkeypatch.setattr(kernels, "resolve_backend", lambda backend, device: ("triton", "requested"))
    with pytest.raises(RuntimeError, match=rf"{CONFIG_KEY}=triton: the Triton kernel failed"):
        logit_stats(torch.randn(3, 4), backend="triton")
    fake.error = ValueError("labels has 2 entries for 3 tokens")  # input errors are not swallowed
    with pytest.raises(ValueError, match="labels"):
        logit_stats(torch.randn(3, 4), backend="auto")
