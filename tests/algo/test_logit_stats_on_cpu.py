"""(E1)–(E2): chunked float32 statistics equal a float64 full-softmax brute force."""

import pytest
import torch

from papo_verl.algo import (
    default_chunk_size,
    finalize_logit_sums,
    logit_partial_sums,
    logit_statistics,
    merge_logit_partial_sums,
)


def brute_force(logits, labels, temperature=1.0):
    z = logits.double() / (temperature if not torch.is_tensor(temperature) else temperature.double().unsqueeze(-1))
    logp = torch.log_softmax(z, -1)
    pi = logp.exp()
    return (
        logp.gather(1, labels.unsqueeze(-1)).squeeze(-1),
        -(pi * logp).sum(-1),
        (pi * pi).sum(-1),
        (pi * pi * logp).sum(-1),
    )


def assert_stats(stats, ref, valid=None, rtol=2e-5, atol=2e-6):
    names = ("log_prob", "entropy", "sum_pi_squared", "sum_pi_squared_log_pi")
    for name, got, want in zip(names, stats, ref):
        assert got.dtype == torch.float32, name
        if valid is not None:
            assert (got[~valid] == 0).all(), f"{name} must be 0 on masked tokens"
            got, want = got[valid], want[valid]
        torch.testing.assert_close(got.double(), want, rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("vocab,n,chunk", [(7, 23, 5), (7, 23, 64), (151_936, 37, 8)])
def test_chunked_statistics_equal_float64_brute_force(dtype, vocab, n, chunk):
    g = torch.Generator().manual_seed(vocab + n)
    logits = (torch.randn(n, vocab, generator=g) * 4).to(dtype)
    logits[0] = logits[0] * 0.01  # near-uniform row: hardest for Σπ² log π + H Σπ²
    logits[1, 3] = 60.0  # near-one-hot row
    labels = torch.randint(0, vocab, (n,), generator=g)
    before = logits.clone()
    stats = logit_statistics(logits, labels, chunk_size=chunk)
    assert torch.equal(logits, before), "the caller's logits must not be modified"
    tol = dict(rtol=1e-4, atol=2e-5) if vocab > 1000 else {}
    assert_stats(stats, brute_force(logits, labels), **tol)


@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_temperature_scalar_and_per_token(temperature):
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(19, 300, generator=g) * 3
    labels = torch.randint(0, 300, (19,), generator=g)
    assert_stats(logit_statistics(logits, labels, temperature, chunk_size=4), brute_force(logits, labels, temperature))
    per_token = torch.linspace(0.5, 1.5, 19)
    assert_stats(logit_statistics(logits, labels, per_token, chunk_size=4), brute_force(logits, labels, per_token))


def test_masked_tokens_are_skipped_and_zero():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(30, 50, generator=g)
    logits[5] = float("nan")  # a padded row may hold garbage: it must not leak
    logits[6] = float("-inf")
    labels = torch.randint(0, 50, (30,), generator=g)
    valid = torch.ones(30, dtype=torch.bool)
    valid[[5, 6, 29]] = False
    stats = logit_statistics(logits, labels, valid=valid, chunk_size=7)
    ref = brute_force(torch.nan_to_num(logits, nan=0.0, neginf=0.0), labels)
    assert_stats(stats, ref, valid=valid)
    for t in stats:
        assert torch.isfinite(t).all()
    empty = logit_statistics(logits, labels, valid=torch.zeros(30, dtype=torch.bool))
    assert all((t == 0).all() for t in empty)


def test_no_labels_gives_no_log_prob():
    stats = logit_statistics(torch.randn(4, 9), None)
    assert stats.log_prob is None and stats.entropy.shape == (4,)


def test_vocabulary_shards_merge_exactly():
    """Online log-sum-exp merge: stats of the whole vocabulary = merge of disjoint shards (TP path)."""
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(13, 1000, generator=g) * 5
    whole = finalize_logit_sums(logit_partial_sums(logits.clone()))
    for cuts in ([500], [1, 999], [137, 600, 999]):
        bounds = [0, *cuts, 1000]
        parts = torch.stack([logit_partial_sums(logits[:, a:b].clone()) for a, b in zip(bounds, bounds[1:])])
        merged = finalize_logit_sums(merge_logit_partial_sums(parts))
        for got, want in zip(merged, whole):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_default_chunk_bounds_the_float32_temporaries():
    assert default_chunk_size(151_936) * 151_936 <= 1 << 22
    assert default_chunk_size(256_000) >= 1
    assert default_chunk_size(7) == (1 << 22) // 7


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\[N, V\]"):
        logit_statistics(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="temperature"):
        logit_statistics(torch.randn(3, 4), temperature=torch.ones(5))
