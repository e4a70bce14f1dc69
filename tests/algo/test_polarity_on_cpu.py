"""(E3)–(E4): the polarity coefficient predicts the entropy change of one softmax-logit step.

Oracle: a float64 softmax over free logits; one step Δz = ηA(e_k − π) must change the entropy by
ηA·P_t to relative error < 1e-3 at η = 1e-4 (docs/algorithm.md §1).
"""

import math

import pytest
import torch

from papo_verl.algorithm import logit_statistics, polarity, polarity_coefficient
from papo_verl.kernels import logit_stats

ETA = 1e-4


def entropy(z):
    logp = torch.log_softmax(z, -1)
    return -(logp.exp() * logp).sum(-1)


def measured_dh(z, k, adv, eta=ETA):
    pi = torch.softmax(z, -1)
    step = eta * adv * (torch.nn.functional.one_hot(torch.tensor(k), z.numel()).double() - pi)
    return float(entropy(z + step) - entropy(z))


def coefficient(z, k, correction="exact"):
    """P_t from the production float32 statistics (the chunked torch path)."""
    s = logit_stats(z.unsqueeze(0), torch.tensor([k]), backend="torch")
    return float(polarity_coefficient(s.log_prob, s.entropy, s.sum_pi_squared, s.sum_pi_squared_log_pi, correction)[0])


def coefficient64(z, k, correction="exact"):
    """The closed form evaluated in float64 directly (independent of the statistics' code)."""
    logp = torch.log_softmax(z, -1)
    pi = logp.exp()
    h = -(pi * logp).sum()
    sampled = -pi[k] * (logp[k] + h)
    corr = (pi * pi * (logp + h)).sum()
    return float(sampled + (corr if correction == "exact" else 0.0))


def cases():
    g = torch.Generator().manual_seed(1)
    for trial in range(6):
        z = torch.randn(50, generator=g, dtype=torch.float64) * (0.5 + trial)
        pi = torch.softmax(z, -1)
        h = float(entropy(z))
        above = int(torch.argmax(pi))  # π_k > e^{-H}
        below = int(torch.argmin(pi))  # π_k < e^{-H}
        assert float(pi[above]) > math.exp(-h) > float(pi[below])
        yield z, above
        yield z, below


@pytest.mark.parametrize("adv", [1.0, -1.0, 0.37, -2.5])
def test_first_order_entropy_change_matches_finite_difference(adv):
    for z, k in cases():
        p = coefficient64(z, k)
        dh = measured_dh(z, k, adv)
        assert abs(dh - ETA * adv * p) <= 1e-3 * abs(ETA * adv * p), (k, dh, ETA * adv * p)
        # the float32 production statistics give the same coefficient
        assert coefficient(z, k) == pytest.approx(p, rel=1e-4, abs=1e-6)


def test_high_probability_reinforcement_contracts_and_rare_expands():
    for z, k in cases():
        pi = torch.softmax(z, -1)
        p = coefficient64(z, k)
        if float(pi[k]) > math.exp(-float(entropy(z))) and float(pi[k]) == float(pi.max()):
            assert p < 0 and measured_dh(z, k, +1.0) < 0  # reinforcing the mode contracts
        if float(pi[k]) == float(pi.min()):
            assert p > 0 and measured_dh(z, k, +1.0) > 0  # reinforcing a rare token expands


def test_correction_flips_the_sampled_term_sign():
    """Just above π_k = e^{-H} the sampled-only term says 'contract' but the exact P_t (and the
    measured change) say 'expand': C_t = Cov_π(π, log π) ≥ 0 outweighs it."""
    z = torch.tensor([2.0, 1.5, 1.5, 0.0, 0.0, 0.0], dtype=torch.float64)  # tokens 1, 2: π_k ≈ 0.232 > e^{-H} ≈ 0.222
    pi = torch.softmax(z, -1)
    threshold = math.exp(-float(entropy(z)))
    candidates = [k for k in range(z.numel()) if float(pi[k]) > threshold]
    found = False
    for k in candidates:
        sampled, exact = coefficient64(z, k, "none"), coefficient64(z, k)
        if sampled < 0 < exact:
            found = True
            for adv in (1.0, -1.0):
                dh = measured_dh(z, k, adv)
                assert math.copysign(1, dh) == math.copysign(1, adv * exact) != math.copysign(1, adv * sampled)
                assert abs(dh - ETA * adv * exact) <= 1e-3 * abs(ETA * adv * exact)
            assert coefficient(z, k, "none") == pytest.approx(sampled, rel=1e-4)
    assert found, "the example must contain a token whose sign the correction flips"


def test_correction_term_is_nonnegative_and_sums_vanish():
    """Σ π (log π + H) = 0 and C_t = Cov_π(π, log π) ≥ 0 (identities of docs/algorithm.md §1)."""
    g = torch.Generator().manual_seed(3)
    z = torch.randn(64, 200, generator=g, dtype=torch.float64) * 3
    logp = torch.log_softmax(z, -1)
    pi = logp.exp()
    h = -(pi * logp).sum(-1, keepdim=True)
    assert torch.allclose((pi * (logp + h)).sum(-1), torch.zeros(64, dtype=torch.float64), atol=1e-12)
    s = logit_statistics(z, torch.zeros(64, dtype=torch.long))
    c = s.sum_pi_squared_log_pi + s.entropy * s.sum_pi_squared
    assert (c > -1e-6).all()
    # Σπ² log π = (S₂/2)(log S₂ − H(softmax(2z)))
    s2 = (pi * pi).sum(-1)
    ident = 0.5 * s2 * (torch.log(s2) - entropy(2 * z))
    torch.testing.assert_close(s.sum_pi_squared_log_pi.double(), ident, rtol=1e-4, atol=1e-6)


def test_polarity_is_advantage_times_coefficient_and_rejects_unknown_correction():
    a = torch.tensor([[1.0, -2.0], [0.0, 0.5]])
    c = torch.tensor([[0.1, 0.1], [-0.3, -0.2]])
    torch.testing.assert_close(polarity(a, c), a * c)
    with pytest.raises(ValueError, match="correction"):
        polarity_coefficient(a, a, a, a, correction="approx")
