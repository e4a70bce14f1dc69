"""The controller's input: the batch's token-mean entropy and its ratio-estimator standard error."""

import math

import numpy as np
import pytest
import torch

from papo_verl.algorithm import entropy_mean_stderr, group_ids, ratio_mean_stderr
from papo_verl.kernels import advantage
from papo_verl.kernels.advantage import response_sums


def ragged(n_rows=40, max_len=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (n_rows,), generator=g)
    mask = (torch.arange(max_len).unsqueeze(0) < lengths.unsqueeze(1)).float()
    entropy = torch.rand(n_rows, max_len, generator=g) * 2.0
    return entropy, mask


def test_matches_a_float64_brute_force():
    entropy, mask = ragged()
    mean, stderr = entropy_mean_stderr(entropy, mask)
    h = [float(entropy[i][mask[i].bool()].double().sum()) for i in range(len(mask))]
    n = [float(mask[i].sum()) for i in range(len(mask))]
    ratio = sum(h) / sum(n)
    b = len(h)
    var = b / (b - 1) * sum((hi - ratio * ni) ** 2 for hi, ni in zip(h, n)) / sum(n) ** 2
    assert mean == pytest.approx(ratio, rel=1e-12) and stderr == pytest.approx(math.sqrt(var), rel=1e-10)


def test_invariant_to_padding_permutation_and_splits():
    entropy, mask = ragged(seed=1)
    ref = entropy_mean_stderr(entropy, mask)
    padded_e = torch.cat([entropy, torch.full((40, 7), float("nan"))], dim=1)  # garbage in padding columns
    padded_m = torch.cat([mask, torch.zeros(40, 7)], dim=1)
    padded_e = torch.cat([padded_e, torch.full((3, 37), float("nan"))])  # balance-padding rows: no valid token
    padded_m = torch.cat([padded_m, torch.zeros(3, 37)])
    assert entropy_mean_stderr(padded_e, padded_m) == pytest.approx(ref, rel=1e-12)
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    assert entropy_mean_stderr(entropy[perm], mask[perm]) == pytest.approx(ref, rel=1e-12)
    # per-response sums from any split of the tokens (micro-batches / ranks) add up to the same input
    s1, n1 = response_sums(entropy[:, :13], mask[:, :13])
    s2, n2 = response_sums(entropy[:, 13:], mask[:, 13:])
    full_s, full_n = response_sums(entropy, mask)
    torch.testing.assert_close(s1 + s2, full_s, rtol=1e-13, atol=0)
    torch.testing.assert_close(n1 + n2, full_n, rtol=0, atol=0)


@pytest.mark.parametrize("chunk", [1, 37, 1 << 18])
def test_row_chunked_sums_give_the_reference_estimate(monkeypatch, chunk):
    """The trainer's path (row-chunked response_sums, then ratio_mean_stderr) equals the reference."""
    monkeypatch.setattr(advantage, "_ADV_CHUNK_ELEMENTS", chunk)
    entropy, mask = ragged(seed=3)
    entropy = torch.where(mask.bool(), entropy, torch.tensor(float("nan")))
    groups = torch.arange(40) // 4
    for g in (None, groups):
        assert ratio_mean_stderr(*response_sums(entropy, mask), g) == entropy_mean_stderr(entropy, mask, g)


def test_clusters_sum_their_responses():
    entropy, mask = ragged(seed=2)
    groups = torch.arange(40) // 4
    mean_c, se_c = entropy_mean_stderr(entropy, mask, groups)
    mean_r, se_r = entropy_mean_stderr(entropy, mask)
    assert mean_c == pytest.approx(mean_r, rel=1e-12)
    singletons = entropy_mean_stderr(entropy, mask, torch.arange(40))
    assert singletons == pytest.approx((mean_r, se_r), rel=1e-12)
    assert group_ids(np.array(["x", "y", "x"], dtype=object)).tolist() == [0, 1, 0]


def test_degenerate_batches():
    entropy, mask = ragged(n_rows=1)
    mean, stderr = entropy_mean_stderr(entropy, mask)
    assert math.isfinite(mean) and math.isnan(stderr)
    assert all(math.isnan(v) for v in entropy_mean_stderr(entropy, torch.zeros_like(mask)))


def _sample_batch(rng, n_prompts, n, prompt_sd, response_sd, token_sd, rho):
    """Token entropies with a prompt effect, a response effect and AR(1)-correlated tokens."""
    rows, lengths = [], []
    for _ in range(n_prompts):
        prompt = prompt_sd * rng.normal()
        for _ in range(n):
            length = int(rng.integers(5, 40))
            eps = np.empty(length)
            eps[0] = rng.normal()
            for t in range(1, length):
                eps[t] = rho * eps[t - 1] + math.sqrt(1 - rho * rho) * rng.normal()
            rows.append(1.0 + prompt + response_sd * rng.normal() + token_sd * eps)
            lengths.append(length)
    width = max(lengths)
    entropy = torch.zeros(len(rows), width, dtype=torch.float64)
    mask = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        entropy[i, : len(r)] = torch.from_numpy(r)
        mask[i, : len(r)] = 1
    return entropy, mask


@pytest.mark.parametrize("prompt_sd,use_groups", [(0.0, False), (0.15, True)])
def test_standard_error_matches_the_spread_over_batches(prompt_sd, use_groups):
    """The estimate is honest: over many batches drawn from the same distribution, the sd of H̄
    equals the average reported standard error (tokens correlated within a response; with a prompt
    effect, prompt clusters are the units). Token-level i.i.d. formulas would be far too small."""
    rng = np.random.default_rng(0)
    means, errors, naive = [], [], []
    groups = torch.arange(16 * 8) // 8
    for _ in range(300):
        entropy, mask = _sample_batch(rng, 16, 8, prompt_sd, 0.2, 0.3, 0.8)
        mean, stderr = entropy_mean_stderr(entropy, mask, groups if use_groups else None)
        means.append(mean)
        errors.append(stderr)
        tokens = entropy[mask.bool()]
        naive.append(float(tokens.std() / math.sqrt(tokens.numel())))
    spread = float(np.std(means))
    assert float(np.mean(errors)) == pytest.approx(spread, rel=0.15)
    assert float(np.mean(naive)) < 0.6 * spread
