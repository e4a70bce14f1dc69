"""(A1)–(A4): base advantage, pressure-conserving reweighting, and its invariances.

The invariances are checked on both implementations: the reference
(:func:`papo_verl.algorithm.papo.papo_advantage`, whole-tensor) and the estimator's row-chunked path
(:func:`papo_verl.kernels.advantage.papo_advantage`).
"""

import numpy as np
import pytest
import torch

from papo_verl.algorithm import (
    SPLITS,
    apply_branch_weights,
    branch_masses,
    conserve_pressure,
    group_advantage,
    group_ids,
    polarity_coefficient,
)
from papo_verl.algorithm import papo as reference
from papo_verl.kernels import advantage as production
from papo_verl.algorithm.metrics import advantage_metrics

from .helpers import make_batch

IMPLEMENTATIONS = {"reference": reference.papo_advantage, "production": production.papo_advantage}


def call(papo_advantage, batch, expand=1.4, contract=0.6, mass_reduce=None, rows=None, **kw):
    b = batch if rows is None else {k: v[rows] for k, v in batch.items()}
    return papo_advantage(
        b["token_level_rewards"].sum(-1), group_ids(b["index"]), b["response_mask"], b["old_log_probs"],
        b["entropys"], b["sum_pi_squared"], b["sum_pi_squared_log_pi"], expand, contract,
        mass_reduce=mass_reduce, **kw,
    )


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def run(request):
    """``run(batch, expand, contract, ...)`` with the reference or the production implementation."""
    return lambda *args, **kw: call(IMPLEMENTATIONS[request.param], *args, **kw)


def test_group_advantage_matches_a_per_group_loop():
    scores = torch.tensor([1.0, 0.0, 1.0, 0.5, 0.5, 3.0, -1.0, 2.0, 0.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3])
    adv = group_advantage(scores, groups)
    expected = torch.zeros(9)
    for grp in range(4):
        idx = groups == grp
        x = scores[idx].double()
        if idx.sum() > 1 and x.std() > 0:
            expected[idx] = ((x - x.mean()) / (x.std() + 1e-6)).float()
    torch.testing.assert_close(adv, expected)
    assert (adv[3:6] == 0).all(), "zero-variance group and singleton get exactly 0"
    no_std = group_advantage(scores, groups, norm_by_std=False)
    torch.testing.assert_close(no_std[:3], torch.tensor([1 / 3, -2 / 3, 1 / 3]))


def test_group_ids_are_dense_for_strings_and_tensors():
    ids = group_ids(np.array(["b", "a", "b", "c"], dtype=object))
    assert ids.tolist() == [1, 0, 1, 2]
    assert group_ids(torch.tensor([7, 3, 7])).tolist() == [1, 0, 1]


@pytest.mark.parametrize("expand,contract", [(1.5, 0.5), (0.7, 1.3), (1.0, 1.0), (1.99, 0.01)])
def test_pressure_is_conserved_before_clamping(run, expand, contract):
    batch = make_batch(seed=1)
    out = run(batch, expand, contract, w_min=1e-9, w_max=1e9)
    valid = batch["response_mask"].bool()
    total_before = out.base_advantages.abs()[valid].double().sum()
    total_after = out.advantages.abs()[valid].double().sum()
    torch.testing.assert_close(total_after, total_before, rtol=1e-6, atol=0)
    assert out.expand_weight > 0 and out.contract_weight > 0
    # the ratio of the weights is the tracker's ratio: conservation only rescales
    assert out.expand_weight / out.contract_weight == pytest.approx(expand / contract, rel=1e-9)


def test_clamping_bounds_the_weights():
    masses = torch.tensor([1.0, 1000.0], dtype=torch.float64)
    w_plus, w_minus, scale = conserve_pressure(masses, 1.9, 0.1, w_min=0.2, w_max=5.0)
    assert 0.2 <= w_plus <= 5.0 and 0.2 <= w_minus <= 5.0
    assert w_plus == 5.0  # c·1.9 ≈ 9.5 clamped
    with pytest.raises(ValueError, match="> 0"):
        conserve_pressure(masses, 1.0, 0.0)


def test_branch_labels_and_weights_follow_polarity_sign():
    adv = torch.tensor([[1.0, -1.0, 2.0, 0.0]])
    rho = torch.tensor([[0.3, 0.2, -0.1, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1]])
    out, branch = apply_branch_weights(adv, rho, mask, 2.0, 0.5)
    assert branch.tolist() == [[1, 1, -1, 0]] and branch.dtype == torch.int8
    torch.testing.assert_close(out, torch.tensor([[2.0, -2.0, 1.0, 0.0]]))


def test_degenerate_batches_produce_no_nan(run):
    # all groups zero-variance, a singleton, all-masked rows
    batch = make_batch(n_groups=3, zero_var_groups=(0, 1, 2), singleton=True, seed=4)
    batch["response_mask"][1] = 0
    out = run(batch)
    for t in (out.advantages, out.base_advantages, out.rho, out.coefficient):
        assert torch.isfinite(t).all()
    assert (out.advantages == 0).all() and out.scale == 1.0 and (out.branch == 0).all()
    # empty expand branch: only contracting tokens
    masses = torch.tensor([0.0, 3.0], dtype=torch.float64)
    w_plus, w_minus, scale = conserve_pressure(masses, 1.5, 0.5)
    assert w_minus * 3.0 == pytest.approx(3.0) and w_plus > 0
    # all rows masked
    batch2 = make_batch(seed=5)
    batch2["response_mask"].zero_()
    out2 = run(batch2)
    assert (out2.advantages == 0).all() and torch.isfinite(out2.rho).all()


def test_alpha_zero_reduces_to_grpo_advantage(run):
    batch = make_batch(seed=6)
    out = run(batch, 1.0, 1.0)
    torch.testing.assert_close(out.advantages, out.base_advantages)


def test_permutation_invariance(run):
    batch = make_batch(n_groups=6, seed=7)
    full = run(batch)
    perm = torch.randperm(len(batch["index"]), generator=torch.Generator().manual_seed(8))
    permuted = run(batch, rows=perm.numpy())
    for name in ("advantages", "base_advantages", "rho", "branch"):
        torch.testing.assert_close(getattr(permuted, name), getattr(full, name)[perm], rtol=1e-6, atol=1e-7)
    assert permuted.expand_weight == pytest.approx(full.expand_weight, rel=1e-12)


def test_split_keeping_groups_whole_equals_full_batch(run):
    """Shards that all-reduce the branch masses reproduce the full batch exactly (DP / micro-batches)."""
    batch = make_batch(n_groups=6, group_size=3, seed=9)
    full = run(batch)
    uids = batch["index"]
    cut_groups = [{"uid-0", "uid-3"}, {"uid-1", "uid-5"}, {"uid-2", "uid-4"}]
    shards = [np.flatnonzero(np.isin(uids, list(gs))) for gs in cut_groups]

    def masses_of(rows):
        b = {k: v[rows] for k, v in batch.items()}
        base = group_advantage(b["token_level_rewards"].sum(-1), group_ids(b["index"])).unsqueeze(-1) * b["response_mask"]
        coeff = polarity_coefficient(b["old_log_probs"], b["entropys"], b["sum_pi_squared"], b["sum_pi_squared_log_pi"])
        return branch_masses(base * coeff, base, b["response_mask"])

    total = sum(masses_of(rows) for rows in shards)  # what an all-reduce would give every shard
    torch.testing.assert_close(total, full.masses, rtol=1e-12, atol=0)
    parts = [run(batch, rows=rows, mass_reduce=lambda m: total) for rows in shards]
    order = np.concatenate(shards)
    got = torch.cat([p.advantages for p in parts])
    torch.testing.assert_close(got, full.advantages[order], rtol=1e-6, atol=1e-7)
    assert all(p.expand_weight == pytest.approx(full.expand_weight, rel=1e-12) for p in parts)


def test_padding_length_does_not_change_results(run):
    batch = make_batch(seed=10)
    base = run(batch)
    padded = {k: (torch.nn.functional.pad(v, (0, 7)) if torch.is_tensor(v) else v) for k, v in batch.items()}
    out = run(padded)
    t = batch["response_mask"].shape[1]
    for name in ("advantages", "rho", "branch"):
        torch.testing.assert_close(getattr(out, name)[:, :t], getattr(base, name))
        assert (getattr(out, name)[:, t:] == 0).all()
    assert out.expand_weight == base.expand_weight


@pytest.mark.parametrize("split", SPLITS)
def test_split_labels_masses_and_metrics_match_the_float64_reference(split):
    """Both splits: the production labels, masses and conserved advantages equal the reference evaluated in
    float64, and every share of the O(B) metrics (from per-response aggregates) equals a per-token count
    over the reference's tensors."""
    batch = make_batch(n_groups=7, seed=11)
    out = call(production.papo_advantage, batch, 1.4, 0.6, split=split)
    as64 = {k: v.double() if torch.is_tensor(v) else v for k, v in batch.items()}
    ref = call(reference.papo_advantage, as64, 1.4, 0.6, split=split)
    metrics = advantage_metrics(out, raw_weights=(1.4, 0.6))
    valid = batch["response_mask"].bool()
    a, p, adv, b = ref.base_advantages, ref.coefficient, ref.advantages, ref.branch
    assert torch.equal(out.branch, b)
    expected = torch.sign(a * p) if split == "polarity" else -torch.sign(a)
    assert torch.equal(b, (expected * valid).to(torch.int8))
    torch.testing.assert_close(out.masses, ref.masses, rtol=1e-6, atol=0)  # A: float32 vs float64
    torch.testing.assert_close(adv.abs()[valid].sum(), a.abs()[valid].sum(), rtol=1e-12, atol=0)
    torch.testing.assert_close(out.advantages.double(), adv, rtol=1e-6, atol=1e-7)
    assert (out.expand_weight, out.contract_weight) == pytest.approx((ref.expand_weight, ref.contract_weight), rel=1e-6)
    n = float(valid.sum())
    brute = {
        "papo/token_share_expand": float((b > 0).sum()) / n,
        "papo/token_share_contract": float((b < 0).sum()) / n,
        "papo/token_share_neutral": float((valid & (b == 0)).sum()) / n,
        "papo/adv_mass_share_expand": float(a.abs()[b > 0].sum() / a.abs()[valid].sum()),
        "papo/adv_mass_share_expand_reweighted": float(adv.abs()[b > 0].sum() / adv.abs()[valid].sum()),
        "papo/polarity_mean": float((a * p)[valid].sum()) / n,
        "papo/polarity_mean_reweighted": float((adv * p)[valid].sum()) / n,
        "papo/quadrant_pos_adv_expand": float((valid & (a > 0) & (a * p > 0)).sum()) / n,
        "papo/quadrant_neg_adv_contract": float((valid & (a < 0) & (a * p < 0)).sum()) / n,
    }
    sampled = polarity_coefficient(as64["old_log_probs"], as64["entropys"], None, None, "none")
    flips = valid & (a != 0) & (torch.sign(p) != torch.sign(sampled))
    brute["papo/correction_flip_share"] = float(flips.sum()) / float((valid & (a != 0)).sum())
    for key, value in brute.items():
        assert metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-9), key
    if split == "advantage_sign":  # the ablation differs from polarity on this batch
        assert not torch.equal(out.branch, call(production.papo_advantage, batch, 1.4, 0.6).branch)
