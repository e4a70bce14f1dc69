"""The row-chunked two-pass advantage of papo_verl.kernels.advantage equals the reference.

``papo_advantage`` processes ``[B, T]`` float32 inputs in cache-sized row chunks (two passes,
per-response aggregates); the oracle is :func:`papo_verl.algorithm.papo.papo_advantage` evaluated in
float64 on the same inputs. Values agree to float32 rounding, branch labels exactly wherever the
polarity sign is not a rounding question.
"""

import pytest
import torch

from papo_verl.algorithm import papo as reference
from papo_verl.kernels import advantage
from papo_verl.kernels.advantage import papo_advantage


def oracle(scores, groups, mask, stats, expand, contract, **kw):
    """The reference in float64 on the float32 inputs."""
    return reference.papo_advantage(scores.double(), groups, mask, *(t.double() for t in stats), expand, contract, **kw)


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
@pytest.mark.parametrize("correction", reference.CORRECTIONS)
@pytest.mark.parametrize("split", reference.SPLITS)
def test_chunked_papo_advantage_equals_the_reference(monkeypatch, rows, cols, chunk, correction, split):
    monkeypatch.setattr(advantage, "_ADV_CHUNK_ELEMENTS", chunk)
    scores, groups, mask, stats = make_inputs(rows, cols, seed=rows + cols)
    valid = mask.bool()
    for expand, contract in ((1.4, 0.6), (0.7, 1.3), (1.0, 1.0)):
        got = papo_advantage(scores, groups, mask, *stats, expand, contract, correction=correction, split=split)
        want = oracle(scores, groups, mask, stats, expand, contract, correction=correction, split=split)
        clear = valid & (want.coefficient.abs() > 1e-5)  # polarity sign not decided by float rounding
        assert torch.equal(got.branch[clear], want.branch[clear])
        assert torch.equal(got.branch[~valid], torch.zeros_like(got.branch[~valid]))
        for name in ("advantages", "base_advantages", "coefficient", "rho"):
            a, b = getattr(got, name), getattr(want, name)
            assert a.dtype == torch.float32 and a.shape == b.shape, name
            torch.testing.assert_close(a[clear].double(), b[clear], rtol=1e-5, atol=1e-6, msg=name)
            assert torch.equal(a[~valid], torch.zeros_like(a[~valid])), name  # padding garbage never leaks
        torch.testing.assert_close(got.masses, want.masses, rtol=1e-6, atol=1e-6)
        assert got.expand_weight == pytest.approx(want.expand_weight, rel=1e-6)
        assert got.contract_weight == pytest.approx(want.contract_weight, rel=1e-6)
        assert got.scale == pytest.approx(want.scale, rel=1e-6)


def test_given_coefficient_equals_the_computed_one():
    """The estimator's path with the actor's P_t (two sums omitted) gives the same result."""
    scores, groups, mask, stats = make_inputs(20, 60, seed=4)
    computed = papo_advantage(scores, groups, mask, *stats, 1.3, 0.7)
    given = papo_advantage(scores, groups, mask, stats[0], stats[1], None, None, 1.3, 0.7,
                           coefficient=reference.polarity_coefficient(*stats))
    for name in ("advantages", "branch", "masses"):
        assert torch.equal(getattr(given, name), getattr(computed, name)), name
    assert torch.equal(given.row_stats, computed.row_stats)


def test_polarity_coefficient_float32_equals_float64():
    _, _, _, stats = make_inputs(30, 77, seed=3)
    stats = tuple(torch.nan_to_num(t, nan=1.0) for t in stats)
    for correction in reference.CORRECTIONS:
        got = reference.polarity_coefficient(*stats, correction)
        assert got.dtype == torch.float32
        want = reference.polarity_coefficient(*(t.double() for t in stats), correction)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    # broadcasting shapes
    scalar_h = torch.tensor(0.5)
    torch.testing.assert_close(reference.polarity_coefficient(stats[0], scalar_h, stats[2], stats[3]).double(),
                               reference.polarity_coefficient(stats[0].double(), scalar_h.double(), stats[2].double(),
                                                              stats[3].double()), rtol=1e-5, atol=1e-6)


def test_mass_reduce_is_applied_once():
    scores, groups, mask, stats = make_inputs(12, 40, seed=9)
    calls = []

    def double_masses(m):
        calls.append(m.clone())
        return m * 2

    got = papo_advantage(scores, groups, mask, *stats, 1.3, 0.7, mass_reduce=double_masses)
    assert len(calls) == 1 and torch.equal(got.masses, calls[0] * 2)
