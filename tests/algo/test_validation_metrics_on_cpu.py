"""The driver side of the polarity validation (papo_verl.algorithm.validation): identities and brute force."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from papo_verl.algorithm.validation import ValidationHistory, branch_response_metrics, same_batch_metrics


@pytest.mark.parametrize("split", ["polarity", "advantage_sign"])
def test_branch_responses_add_up(split):
    values = torch.tensor([0.3, 1.1, -0.4, 2.0], dtype=torch.float64)
    m = branch_response_metrics(values, 1.4, 0.6, split=split)
    assert m["papo/val/branch_dH_expand"] + m["papo/val/branch_dH_contract"] == pytest.approx(0.3)
    assert m["papo/val/sign_split_dH_neg_adv"] + m["papo/val/sign_split_dH_pos_adv"] == pytest.approx(0.3)
    assert m["papo/val/branch_dH_grpo"] == 0.3 and m["papo/val/entropy_before"] == 2.0
    expanding = 1.1 if split == "polarity" else 0.7
    assert m["papo/val/branch_dH_applied"] == pytest.approx(1.4 * expanding + 0.6 * (0.3 - expanding))


def _inputs(seed=0, rows=12, width=9):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (rows,), generator=g)
    mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).float()
    base = torch.randn(rows, generator=g).unsqueeze(1).expand(rows, width).clone()
    base[:3] = 0.0  # zero-variance groups: not moved by the update
    adv = base * torch.where(torch.rand(rows, width, generator=g) > 0.5, 1.3, 0.7)
    before = torch.rand(rows, width, generator=g) * 2
    after = before + 0.1 * torch.randn(rows, width, generator=g)
    log_prob = -torch.rand(rows, width, generator=g) * 3
    coeff = 0.2 * torch.randn(rows, width, generator=g)
    return before, after, log_prob, base, adv, coeff, mask


def test_same_batch_metrics_match_a_brute_force():
    before, after, log_prob, base, adv, coeff, mask = _inputs()
    m = same_batch_metrics(before, after, log_prob, base, adv, coeff, mask, first_order=0.01)
    rows = [(float(after[i, j] - before[i, j]), float(adv[i, j] * coeff[i, j]),
             float(-adv[i, j] * log_prob[i, j].exp() * (log_prob[i, j] + before[i, j])), float(base[i, j]))
            for i in range(mask.shape[0]) for j in range(mask.shape[1]) if mask[i, j]]
    frame = pd.DataFrame(rows, columns=["dh", "pred", "sampled", "a"])
    assert m["papo/val/dH_measured"] == pytest.approx(frame.dh.mean(), rel=1e-6)
    assert m["papo/val/dH_predicted"] == pytest.approx(frame.pred.mean(), rel=1e-6)
    moved = frame[frame.a != 0]
    assert m["papo/val/token_corr_pearson"] == pytest.approx(moved.dh.corr(moved.pred), rel=1e-6)
    assert m["papo/val/token_corr_spearman"] == pytest.approx(moved.dh.corr(moved.pred, method="spearman"), rel=1e-6)
    assert m["papo/val/sign_agreement"] == pytest.approx(np.mean(np.sign(moved.dh) == np.sign(moved.pred)))
    assert m["papo/val/sign_agreement_sampled_only"] == pytest.approx(np.mean(np.sign(moved.dh) == np.sign(moved.sampled)))
    assert m["papo/val/dH_first_order"] == 0.01
    # padding (any value, NaN included) changes nothing
    pad = [torch.nn.functional.pad(t, (0, 4), value=float("nan")) for t in (before, after, log_prob, base, adv, coeff)]
    padded = same_batch_metrics(*pad, torch.nn.functional.pad(mask, (0, 4)), first_order=0.01)
    assert padded == pytest.approx(m, rel=1e-12)


def test_perfect_prediction_agrees_everywhere():
    before, _, log_prob, base, adv, coeff, mask = _inputs(seed=1)
    after = before + 0.01 * adv * coeff  # the first-order change of each token's own update
    m = same_batch_metrics(before, after, log_prob, base, adv, coeff, mask)
    assert m["papo/val/sign_agreement"] == 1.0 and m["papo/val/token_corr_spearman"] == pytest.approx(1.0)


def test_history_correlates_and_round_trips():
    history = ValidationHistory(window=4)
    assert history.add(0.1, 0.2) == {} and history.add(0.2, 0.5) == {}
    out = history.add(0.3, 0.7)
    assert out["papo/val/dH_corr_pearson"] > 0.9 and out["papo/val/dH_corr_window"] == 3.0
    history.add(float("nan"), 1.0)  # not recorded
    restored = ValidationHistory(window=4)
    restored.load_state_dict(json.loads(json.dumps(history.state_dict())))
    assert restored.pairs == history.pairs and len(restored.pairs) == 3
