"""The registered 'papo' estimator: verl's generic path fails clearly; extended kwargs follow the core."""

import pytest
import torch
from omegaconf import OmegaConf

import verl  # noqa: F401  -- loads the plugin
from papo_verl.algorithm import group_ids
from papo_verl.kernels.advantage import papo_advantage
from papo_verl.algorithm.config import PapoConfigError
from papo_verl.integration.estimator import PapoInputsMissing, compute_papo_outcome_advantage
from papo_verl.algorithm.tracker import PhaseWeights
from verl import DataProto
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage, get_adv_estimator_fn
from verl.trainer.ppo.ray_trainer import compute_advantage

from ..algo.helpers import make_batch


def algo_config(**papo):
    return OmegaConf.create({"adv_estimator": "papo", "norm_adv_by_std_in_grpo": True, "papo": papo})


def test_registry_returns_our_function():
    assert get_adv_estimator_fn("papo") is compute_papo_outcome_advantage


def test_verl_generic_path_raises_a_clear_error():
    batch = make_batch(seed=1)
    data = DataProto.from_dict(tensors={"token_level_rewards": batch["token_level_rewards"],
                                        "response_mask": batch["response_mask"]},
                               non_tensors={"uid": batch["index"]})
    with pytest.raises(PapoInputsMissing) as err:
        compute_advantage(data, adv_estimator="papo", config=algo_config())
    msg = str(err.value)
    assert "python -m papo_verl.main" in msg and "trainer.v1.trainer_mode=papo" in msg and "old_log_probs" in msg


def test_extended_kwargs_match_the_core_and_fill_details():
    batch = make_batch(seed=2)
    details = {}
    adv, ret = compute_papo_outcome_advantage(**batch, config=algo_config(alpha=0.4, w_max=3.0),
                                              phase_weights=PhaseWeights(1.3, 0.7, 0.6), details=details)
    core = papo_advantage(batch["token_level_rewards"].sum(-1), group_ids(batch["index"]), batch["response_mask"],
                          batch["old_log_probs"], batch["entropys"], batch["sum_pi_squared"],
                          batch["sum_pi_squared_log_pi"], 1.3, 0.7, w_max=3.0)
    torch.testing.assert_close(adv, core.advantages)
    # an outcome estimator's returns are its advantages (verl's GRPO convention), not e.g. the scores
    torch.testing.assert_close(ret, core.advantages)
    assert torch.equal(details["branch"], core.branch)
    m = details["metrics"]
    assert m["papo/expand_weight"] == core.expand_weight and m["papo/expand_weight_raw"] == 1.3
    # the token shares are the branch labels' shares of the valid tokens
    valid = batch["response_mask"].bool()
    for label, name in ((1, "expand"), (-1, "contract"), (0, "neutral")):
        expected = (core.branch[valid] == label).double().mean().item()
        assert m[f"papo/token_share_{name}"] == pytest.approx(expected, rel=1e-12), name
    assert 0 < m["papo/token_share_expand"] < 1 and 0 < m["papo/token_share_contract"] < 1  # both branches occur
    assert 0 <= m["papo/correction_flip_share"] <= 1
    # a (expand, contract) pair works too
    adv2, _ = compute_papo_outcome_advantage(**batch, config=algo_config(alpha=0.4, w_max=3.0),
                                             phase_weights=(1.3, 0.7))
    torch.testing.assert_close(adv2, adv)


def test_neutral_weights_equal_verl_grpo_on_groups_with_variance():
    batch = make_batch(n_groups=8, group_size=4, seed=3)
    for norm in (True, False):
        cfg = OmegaConf.create({"norm_adv_by_std_in_grpo": norm, "papo": {}})
        adv, _ = compute_papo_outcome_advantage(**batch, config=cfg, phase_weights=(1.0, 1.0))
        grpo, _ = compute_grpo_outcome_advantage(batch["token_level_rewards"], batch["response_mask"], batch["index"],
                                                 norm_adv_by_std_in_grpo=norm)
        torch.testing.assert_close(adv, grpo, rtol=1e-5, atol=1e-6)


def test_bad_inputs_are_named():
    batch = make_batch(seed=4)
    with pytest.raises(PapoConfigError, match="algorithm.papo.alpah"):
        compute_papo_outcome_advantage(**batch, config=algo_config(alpah=0.1), phase_weights=(1, 1))
    bad = dict(batch)
    bad["entropys"] = batch["entropys"].clone()
    bad["entropys"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="entropys has 1 non-finite"):
        compute_papo_outcome_advantage(**bad, config=algo_config(), phase_weights=(1, 1))
    short = dict(batch)
    short["sum_pi_squared"] = batch["sum_pi_squared"][:, :-1]
    with pytest.raises(ValueError, match="sum_pi_squared has shape"):
        compute_papo_outcome_advantage(**short, config=algo_config(), phase_weights=(1, 1))
    with pytest.raises(PapoInputsMissing, match="index"):
        compute_papo_outcome_advantage(**{**batch, "index": None}, phase_weights=(1, 1))
    # NaN on masked (padding) positions is ignored: the advantages are those of the clean batch
    pad = dict(batch)
    padding = batch["response_mask"] == 0
    assert padding.any()
    for key in ("entropys", "old_log_probs", "sum_pi_squared"):
        pad[key] = batch[key].clone()
        pad[key][padding] = float("nan")
    clean, _ = compute_papo_outcome_advantage(**batch, config=algo_config(), phase_weights=(1.3, 0.7))
    dirty, _ = compute_papo_outcome_advantage(**pad, config=algo_config(), phase_weights=(1.3, 0.7))
    assert torch.equal(clean, dirty) and torch.isfinite(dirty).all()
