"""(E1)–(E2): the reference statistics of papo_verl.algorithm.papo against closed forms and identities.

The reference is the oracle of the production paths (tests/kernels), so it is checked here against
results that do not come from a softmax: uniform and two-point distributions, shift and temperature
invariance, and vocabulary entries with zero probability.
"""

import math

import pytest
import torch

from papo_verl.algorithm import logit_statistics


def test_uniform_distribution_closed_form():
    for vocab in (1, 2, 7, 151_936):
        stats = logit_statistics(torch.full((2, vocab), 3.25, dtype=torch.float64), torch.tensor([0, vocab - 1]))
        log_v = math.log(vocab)
        torch.testing.assert_close(stats.log_prob, torch.full((2,), -log_v, dtype=torch.float64))
        torch.testing.assert_close(stats.entropy, torch.full((2,), log_v, dtype=torch.float64))
        torch.testing.assert_close(stats.sum_pi_squared, torch.full((2,), 1 / vocab, dtype=torch.float64))
        torch.testing.assert_close(stats.sum_pi_squared_log_pi, torch.full((2,), -log_v / vocab, dtype=torch.float64))


@pytest.mark.parametrize("p", [0.5, 0.9, 1e-6])
def test_two_point_distribution_closed_form(p):
    """Logits (log p, log(1 − p), −inf, −inf): the −inf entries have π = 0 and contribute exactly 0."""
    q = 1 - p
    logits = torch.tensor([[math.log(p), math.log(q), -math.inf, -math.inf]], dtype=torch.float64)
    stats = logit_statistics(logits, torch.tensor([1]))
    assert stats.log_prob.item() == pytest.approx(math.log(q), rel=1e-12)
    assert stats.entropy.item() == pytest.approx(-(p * math.log(p) + q * math.log(q)), rel=1e-10)
    assert stats.sum_pi_squared.item() == pytest.approx(p * p + q * q, rel=1e-12)
    assert stats.sum_pi_squared_log_pi.item() == pytest.approx(p * p * math.log(p) + q * q * math.log(q), rel=1e-10)
    assert logit_statistics(logits, torch.tensor([3])).log_prob.item() == -math.inf


def test_shift_and_temperature_invariance_and_dtypes():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(9, 40, generator=g, dtype=torch.float64) * 4
    labels = torch.randint(0, 40, (9,), generator=g)
    per_token = torch.linspace(0.5, 1.5, 9, dtype=torch.float64)
    ref = logit_statistics(logits / per_token.unsqueeze(-1), labels)
    for got in (logit_statistics(logits, labels, per_token),
                logit_statistics(logits + 100.0 * per_token.unsqueeze(-1), labels, per_token)):
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert all(t.dtype == torch.float64 for t in ref)
    low = logit_statistics(logits.to(torch.bfloat16), labels, 0.7)  # D3: float32 whatever the logits' dtype
    assert all(t.dtype == torch.float32 and not t.requires_grad for t in low)
    scalar = logit_statistics(logits, labels, torch.tensor(0.7, dtype=torch.float64))
    for a, b in zip(scalar, logit_statistics(logits / 0.7, labels)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_masked_rows_are_zero_and_may_hold_garbage():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(30, 50, generator=g)
    labels = torch.randint(0, 50, (30,), generator=g)
    logits[5], logits[6], labels[29] = float("nan"), float("-inf"), -100  # padding may hold anything
    valid = torch.ones(30, dtype=torch.bool)
    valid[[5, 6, 29]] = False
    stats = logit_statistics(logits, labels, valid=valid)
    keep = torch.tensor([i for i in range(30) if valid[i]])
    ref = logit_statistics(logits[keep], labels[keep])
    for got, want in zip(stats, ref):
        assert (got[~valid] == 0).all() and torch.isfinite(got).all()
        torch.testing.assert_close(got[keep], want, rtol=0, atol=0)


def test_no_labels_gives_no_log_prob():
    stats = logit_statistics(torch.randn(4, 9), None)
    assert stats.log_prob is None and stats.entropy.shape == (4,)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\[N, V\]"):
        logit_statistics(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="temperature"):
        logit_statistics(torch.randn(3, 4), temperature=torch.ones(5))
