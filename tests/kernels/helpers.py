"""The float64 oracle of every kernel test: the reference statistics of papo_verl.algorithm.papo."""

import torch

from papo_verl.algorithm import logit_statistics

NAMES = ("log_prob", "entropy", "sum_pi_squared", "sum_pi_squared_log_pi")


def brute_force(logits, labels, temperature=1.0):
    """``(log π_k, H, Σπ², Σπ² log π)`` in float64 from the full softmax; ``π = 0`` terms count as 0."""
    if torch.is_tensor(temperature):
        temperature = temperature.double()
    return tuple(logit_statistics(logits.double(), labels, temperature))


def brute_force_partial_sums(logits, temperature=1.0):
    """``[N, 5]`` float64 ``(m, Z, Σe(z−m), Σe², Σe²(z−m))`` of ``z = logits / T``."""
    t = temperature.double().unsqueeze(-1) if torch.is_tensor(temperature) and temperature.numel() > 1 \
        else float(temperature)
    z = logits.double() / t
    m = z.amax(-1, keepdim=True)
    d = z - m
    e = torch.exp(d)
    ed = torch.where(e > 0, e * d, torch.zeros_like(e))
    return torch.cat([m, e.sum(-1, keepdim=True), ed.sum(-1, keepdim=True), (e * e).sum(-1, keepdim=True),
                      (e * ed).sum(-1, keepdim=True)], dim=-1)


def assert_stats(stats, ref, valid=None, rtol=2e-5, atol=2e-6):
    """Each field float32, equal to the float64 reference; exactly 0 on masked rows."""
    for name, got, want in zip(NAMES, stats, ref):
        if want is None:
            assert got is None, name
            continue
        assert got.dtype == torch.float32, name
        assert not got.requires_grad, name
        if valid is not None:
            assert (got[~valid] == 0).all(), f"{name} must be 0 on masked tokens"
            got, want = got[valid], want[valid]
        torch.testing.assert_close(got.double(), want, rtol=rtol, atol=atol, msg=name)


def make_logits(n, vocab, dtype=torch.float32, seed=0, scale=4.0):
    """Random logits with a near-uniform row 0 and a near-one-hot row 1 (the hardest cases)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=g) * scale
    if n > 0:
        logits[0] *= 0.01
    if n > 1:
        logits[1, min(3, vocab - 1)] = 60.0
    labels = torch.randint(0, vocab, (n,), generator=g)
    return logits.to(dtype), labels
