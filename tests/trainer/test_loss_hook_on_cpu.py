"""PapoPolicyLoss: exactly verl's ppo_loss, plus per-branch metrics that are identical however the
mini-batch is split into micro-batches and data-parallel ranks (aggregated with verl's own Metric)."""

import pytest
import torch
from tensordict import TensorDict

import verl  # noqa: F401
from papo_verl.algorithm import logit_statistics, polarity_coefficient
from papo_verl.integration.engine import POLARITY_KEY, SUM_PI_SQUARED_KEY, SUM_PI_SQUARED_LOG_PI_KEY
from papo_verl.integration.loss import BRANCH_FIELD, PHASE_KEY, RAW_COUNT_KEYS, PapoPolicyLoss, branch_shares
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.metric import Metric, reduce_metrics
from verl.utils.py_functional import append_to_dict
from verl.workers.utils.losses import ppo_loss

from .conftest import compose_config

VOCAB = 17


def actor_config(*overrides):
    cfg = compose_config("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", *overrides)
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def make_samples(n=12, seed=0):
    """Per-sample tensors: prompt/response ids, old and current statistics from real logits."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        pl, rl = int(torch.randint(2, 5, (1,), generator=g)), int(torch.randint(1, 7, (1,), generator=g))
        ids = torch.randint(0, VOCAB, (pl + rl,), generator=g)
        old_logits = torch.randn(pl + rl, VOCAB, generator=g) * 2
        new_logits = old_logits + 0.6 * torch.randn(pl + rl, VOCAB, generator=g)  # the policy moved
        labels = torch.roll(ids, -1)
        old = logit_statistics(old_logits, labels)
        new = logit_statistics(new_logits, labels)
        resp = slice(pl - 1, pl + rl - 1)
        adv = float(torch.randn(1, generator=g))
        coeff = polarity_coefficient(old.log_prob[resp], old.entropy[resp], old.sum_pi_squared[resp],
                                     old.sum_pi_squared_log_pi[resp])
        out.append(dict(prompts=ids[:pl], responses=ids[pl:], response_mask=torch.ones(rl, dtype=torch.int64),
                        old_log_probs=old.log_prob[resp], advantages=torch.full((rl,), adv),
                        papo_branch=torch.sign(adv * coeff).to(torch.int8), new=new))
    return out


def micro_batch(samples, dp_size, batch_num_tokens, global_batch_size):
    nested = lambda key: torch.nested.as_nested_tensor([s[key] for s in samples], layout=torch.jagged)  # noqa: E731
    td = TensorDict({k: nested(k) for k in ("prompts", "responses", "response_mask", "old_log_probs", "advantages",
                                            BRANCH_FIELD)}, batch_size=[len(samples)])
    tu.assign_non_tensor(td, dp_size=dp_size, batch_num_tokens=batch_num_tokens, global_batch_size=global_batch_size)
    tu.assign_non_tensor_data(td, PHASE_KEY, {"expand": 1.3, "contract": 0.7, "tilt": 0.6})
    full = lambda field: torch.nested.nested_tensor_from_jagged(  # noqa: E731
        torch.cat([getattr(s["new"], field) for s in samples]),
        torch.tensor([0] + [len(s["prompts"]) + len(s["responses"]) for s in samples]).cumsum(0))
    leaf = torch.cat([s["new"].log_prob for s in samples]).clone().requires_grad_(True)
    offsets = torch.tensor([0] + [len(s["prompts"]) + len(s["responses"]) for s in samples]).cumsum(0)
    model_output = {"log_probs": torch.nested.nested_tensor_from_jagged(leaf, offsets),
                    "entropy": full("entropy"), SUM_PI_SQUARED_KEY: full("sum_pi_squared"),
                    SUM_PI_SQUARED_LOG_PI_KEY: full("sum_pi_squared_log_pi")}
    return model_output, td, leaf


def run_split(hook, samples, ranks, micro, raw=False):
    """Simulate DP ranks × micro-batches and verl's aggregation (engine → worker → trainer)."""
    n_tokens = sum(len(s["responses"]) for s in samples)
    shards = [samples[r::ranks] for r in range(ranks)]
    per_rank = []
    for shard in shards:
        agg = {}
        chunks = [shard[i::micro] for i in range(micro)]
        for chunk in chunks:
            mo, td, _ = micro_batch(chunk, ranks, n_tokens, len(samples))
            _, metrics = hook(mo, td)
            append_to_dict(agg, metrics)
        per_rank.append(agg)
    # worker: all-gather across dp then Metric.aggregate_dp; plain values are flattened
    final = {}
    for key in per_rank[0]:
        vals = [r[key] for r in per_rank]
        if isinstance(vals[0], Metric):
            final[key] = Metric.aggregate_dp(vals)
        else:
            final[key] = [v for r in vals for v in r]
    reduced = reduce_metrics({k: ([v] if not isinstance(v, list) else v) for k, v in final.items()})
    return reduced if raw else branch_shares(reduced)


@pytest.mark.parametrize("loss_mode", ["vanilla", "clip_cov"])
def test_loss_is_exactly_verls_ppo_loss(loss_mode):
    cfg = actor_config(f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode}",
                       "actor_rollout_ref.actor.policy_loss.clip_cov_ratio=0.2")
    samples = make_samples(seed=1)
    hook = PapoPolicyLoss(cfg)
    n_tokens = sum(len(s["responses"]) for s in samples)
    mo, td, leaf = micro_batch(samples, 1, n_tokens, len(samples))
    torch.manual_seed(5)
    ours, metrics = hook(mo, td)
    (g_ours,) = torch.autograd.grad(ours, leaf)
    mo2, td2, leaf2 = micro_batch(samples, 1, n_tokens, len(samples))
    torch.manual_seed(5)
    theirs, their_metrics = ppo_loss(cfg, mo2, td2)
    (g_theirs,) = torch.autograd.grad(theirs, leaf2)
    assert torch.equal(ours.detach(), theirs.detach())
    assert torch.equal(g_ours, g_theirs)
    assert set(their_metrics) <= set(metrics)
    assert set(RAW_COUNT_KEYS) <= set(metrics)


def test_zero_gradient_counts_match_the_clipped_tokens_of_the_real_loss():
    """Clip-Cov zeroes random tokens: the hook replays the RNG, so its zero-gradient tokens are exactly
    the ones the real loss zeroed; for vanilla PPO they are the clipped ones."""
    for loss_mode in ("clip_cov", "vanilla"):
        cfg = actor_config(f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode}",
                           "actor_rollout_ref.actor.policy_loss.clip_cov_ratio=0.3",
                           "actor_rollout_ref.actor.policy_loss.clip_cov_lb=-100",
                           "actor_rollout_ref.actor.policy_loss.clip_cov_ub=100")
        samples = make_samples(seed=2)
        n_tokens = sum(len(s["responses"]) for s in samples)
        mo, td, leaf = micro_batch(samples, 1, n_tokens, len(samples))
        torch.manual_seed(11)
        loss, metrics = PapoPolicyLoss(cfg)(mo, td)
        (g,) = torch.autograd.grad(loss, leaf)
        # response positions of the real gradient, with their branch labels
        zero = {1: 0, -1: 0}
        pos = 0
        for s in samples:
            pl, rl = len(s["prompts"]), len(s["responses"])
            gr = g[pos + pl - 1: pos + pl + rl - 1]
            for b in (1, -1):
                zero[b] += int(((gr == 0) & (s[BRANCH_FIELD] == b)).sum())
            pos += pl + rl
        assert metrics["actor/papo/n_zero_grad_expand"].aggregate() == zero[1]
        assert metrics["actor/papo/n_zero_grad_contract"].aggregate() == zero[-1]
        if loss_mode == "clip_cov":
            assert zero[1] + zero[-1] > 0


def test_branch_metrics_are_split_invariant():
    cfg = actor_config()
    samples = make_samples(n=12, seed=3)
    hook = PapoPolicyLoss(cfg)
    reference = run_split(hook, samples, ranks=1, micro=1)
    for ranks, micro in ((1, 3), (2, 1), (2, 3), (3, 2)):
        got = run_split(hook, samples, ranks, micro)
        for key in ("token_share_expand", "token_share_contract", "pg_mass_share_expand", "pg_mass_share_contract",
                    "clip_frac_expand", "clip_frac_contract", "polarity_flip_share"):
            assert got["actor/papo/" + key] == pytest.approx(reference["actor/papo/" + key], rel=1e-6, abs=1e-9), \
                (ranks, micro, key)
        # absolute counts are the global counts of the mini-batch (dp_size scaling undoes verl's DP mean)
        counts = run_split(hook, samples, ranks, micro, raw=True)
        assert counts["actor/papo/n_tokens"] == pytest.approx(sum(len(s["responses"]) for s in samples))
        assert counts["actor/papo/n_expand"] == pytest.approx(sum(int((s[BRANCH_FIELD] > 0).sum()) for s in samples))
    assert reference["actor/papo/expand_weight"] == pytest.approx(1.3)
    assert 0 < reference["actor/papo/token_share_expand"] < 1
    assert not any(k in reference for k in RAW_COUNT_KEYS)


@pytest.mark.parametrize("engine_coefficient", [False, True])
def test_polarity_flip_share_counts_sign_changes_under_the_current_policy(engine_coefficient):
    cfg = actor_config()
    samples = make_samples(n=10, seed=4)
    n_tokens = sum(len(s["responses"]) for s in samples)
    mo, td, _ = micro_batch(samples, 1, n_tokens, len(samples))
    if engine_coefficient:  # the engine's P_t of the current policy (what the PAPO engine emits)
        offsets = mo["log_probs"].offsets()
        coeff = polarity_coefficient(mo["log_probs"].values().detach(), mo["entropy"].values(),
                                     mo[SUM_PI_SQUARED_KEY].values(), mo[SUM_PI_SQUARED_LOG_PI_KEY].values())
        mo = {"log_probs": mo["log_probs"], POLARITY_KEY: torch.nested.nested_tensor_from_jagged(coeff, offsets)}
    _, metrics = PapoPolicyLoss(cfg)(mo, td)
    flipped = labelled = 0
    for s in samples:
        pl, rl = len(s["prompts"]), len(s["responses"])
        resp = slice(pl - 1, pl + rl - 1)
        n = s["new"]
        coeff = polarity_coefficient(n.log_prob[resp], n.entropy[resp], n.sum_pi_squared[resp],
                                     n.sum_pi_squared_log_pi[resp])
        now = torch.sign(s["advantages"] * coeff).to(torch.int8)
        lab = s[BRANCH_FIELD] != 0
        labelled += int(lab.sum())
        flipped += int((lab & (now != s[BRANCH_FIELD])).sum())
    assert metrics["actor/papo/n_labelled"].aggregate() == labelled
    assert metrics["actor/papo/n_flipped"].aggregate() == flipped
    assert 0 < flipped < labelled  # the perturbed policy flips some, not all


def test_non_papo_batches_get_plain_ppo_loss():
    cfg = actor_config()
    samples = make_samples(n=4, seed=5)
    mo, td, _ = micro_batch(samples, 1, sum(len(s["responses"]) for s in samples), 4)
    td = td.exclude(BRANCH_FIELD)
    _, metrics = PapoPolicyLoss(cfg)(mo, td)
    assert not any(k.startswith("actor/papo/") for k in metrics)
