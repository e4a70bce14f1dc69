"""The chunked two-pass advantage path of papo_verl.algo equals the whole-tensor formulas.

``papo_advantage`` processes ``[B, T]`` inputs in cache-sized row chunks (two passes, per-response
aggregates); the reference here is the foundation's unchunked float64 formula. Values agree to
float32 rounding, branch labels exactly wherever the polarity sign is not a rounding question.
"""

import pytest
import torch

import papo_verl.algo as algo
from papo_verl.algo import (
    apply_branch_weights,
    branch_masses,
    conserve_pressure,
    group_advantage,
    papo_advantage,
    polarity,
    polarity_coefficient,
)


def reference_coefficient(log_prob, entropy, s2, s2l, correction="exact"):
    ell, h = log_prob.double(), entropy.double()
    coeff = -torch.exp(ell) * (ell + h)
    if correction == "exact":
        coeff = coeff + s2l.double() + h * s2.double()
    return coeff.float()


def reference_advantage(scores, groups, response_mask, stats, expand, contract, correction="exact", **kw):
    mask = response_mask.bool()
    base = group_advantage(scores, groups).unsqueeze(-1) * mask
    coeff = reference_coefficient(*stats, correction) * mask
    rho = polarity(base, coeff)
    masses = branch_masses(rho, base, mask)
    w_plus, w_minus, scale = conserve_pressure(masses, expand, contract, **kw)
    adv, branch = apply_branch_weights(base, rho, mask, w_plus, w_minus)
    return adv, base, coeff, rho, branch, masses, w_plus, w_minus, scale


def make_inputs(rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    groups = torch.arange(rows) // 4
    scores = torch.randint(0, 3, (rows,), generator=g).float()
    scores[:4] = 1.0  # a zero-variance group: A = 0 on its rows
    lengths = torch.randint(0, cols + 1, (rows,), generator=g)
    mask = (torch.arange(cols) < lengths.unsqueeze(1)).float()
    mask[1, 0] = 0.5  # non-binary mask values count as valid, as response_mask.bool() does
    log_prob = -torch.rand(rows, cols, generator=g) * 6
    entropy = torch.rand(rows, cols, generator=g) * 3
    s2 = torch.rand(rows, cols, generator=g)
    s2l = -torch.rand(rows, cols, generator=g) * s2 * 4
    # one-hot tokens: P = 0 exactly (neutral branch on valid tokens)
    log_prob[5, :3], entropy[5, :3], s2[5, :3], s2l[5, :3] = 0.0, 0.0, 1.0, 0.0
    # garbage on padding must not leak
    pad = mask == 0
    entropy[pad] = float("nan")
    return scores, groups, mask, (log_prob, entropy, s2, s2l)


@pytest.mark.parametrize("rows,cols,chunk", [(24, 50, 64), (24, 50, 7), (16, 300, 1 << 18), (9, 1000, 2000)])
@pytest.mark.parametrize("correction", ["exact", "none"])
def test_chunked_papo_advantage_equals_the_reference(monkeypatch, rows, cols, chunk, correction):
    monkeypatch.setattr(algo, "_ADV_CHUNK_ELEMENTS", chunk)
    scores, groups, mask, stats = make_inputs(rows, cols, seed=rows + cols)
    valid = mask.bool()
    for expand, contract in ((1.4, 0.6), (0.7, 1.3), (1.0, 1.0)):
        got = papo_advantage(scores, groups, mask, *stats, expand, contract, correction=correction)
        want = reference_advantage(scores, groups, mask, stats, expand, contract, correction)
        clear = valid & (want[2].abs() > 1e-5)  # polarity sign not decided by float rounding
        assert torch.equal(got.branch[clear], want[4][clear])
        assert torch.equal(got.branch[~valid], torch.zeros_like(got.branch[~valid]))
        for name, a, b in zip(("advantages", "base_advantages", "coefficient", "rho"),
                              (got.advantages, got.base_advantages, got.coefficient, got.rho), want):
            assert a.dtype == b.dtype and a.shape == b.shape, name
            torch.testing.assert_close(a[clear], b[clear], rtol=1e-5, atol=1e-6, msg=name)
            assert torch.equal(a[~valid], torch.zeros_like(a[~valid])), name  # padding garbage never leaks
        torch.testing.assert_close(got.masses, want[5], rtol=1e-6, atol=1e-6)
        assert got.expand_weight == pytest.approx(want[6], rel=1e-6)
        assert got.contract_weight == pytest.approx(want[7], rel=1e-6)


def test_polarity_coefficient_equals_the_float64_reference():
    _, _, _, stats = make_inputs(30, 77, seed=3)
    stats = tuple(torch.nan_to_num(t, nan=1.0) for t in stats)
    for correction in ("exact", "none"):
        torch.testing.assert_close(polarity_coefficient(*stats, correction), reference_coefficient(*stats, correction),
                                   rtol=1e-5, atol=1e-6)
    # broadcasting shapes
    scalar_h = torch.tensor(0.5)
    torch.testing.assert_close(polarity_coefficient(stats[0], scalar_h, stats[2], stats[3]),
                               reference_coefficient(stats[0], scalar_h, stats[2], stats[3]), rtol=1e-5, atol=1e-6)


def test_mass_reduce_is_applied_once():
    scores, groups, mask, stats = make_inputs(12, 40, seed=9)
    calls = []

    def double_masses(m):
        calls.append(m.clone())
        return m * 2

    got = papo_advantage(scores, groups, mask, *stats, 1.3, 0.7, mass_reduce=double_masses)
    assert len(calls) == 1 and torch.equal(got.masses, calls[0] * 2)

