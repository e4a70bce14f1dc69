#!/usr/bin/env bash
# KL-Cov (Cui et al. 2025, arXiv 2505.22617): verl's built-in `kl_cov` policy loss on the GRPO advantage.
# The shared base is recipes/common.sh; this file sets the algorithm keys only.
#   bash recipes/kl_cov_math.sh [--dry-run] [hydra overrides]
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

ALGO_ARGS=(
    "algorithm.adv_estimator=grpo"
    "algorithm.norm_adv_by_std_in_grpo=True"
    # Unclipped -A*ratio loss; the kl_cov_ratio share of tokens with the largest centred covariance
    # (per micro-batch) get an extra ppo_kl_coef*|log ratio| penalty. The paper's 7B setting:
    # ratio 2e-3 (2e-4 for 32B), coefficient 1.
    "actor_rollout_ref.actor.policy_loss.loss_mode=kl_cov"
    "actor_rollout_ref.actor.policy_loss.kl_cov_ratio=0.002"
    "actor_rollout_ref.actor.policy_loss.ppo_kl_coef=1.0"
    # kl_cov reads none of the clip keys; they keep the GRPO values so that the diff stays minimal.
    "actor_rollout_ref.actor.clip_ratio_low=0.2"
    "actor_rollout_ref.actor.clip_ratio_high=0.2"
    "actor_rollout_ref.actor.clip_ratio_c=3.0"
    "actor_rollout_ref.actor.loss_agg_mode=token-mean"
    "algorithm.filter_groups.enable=False"
    "reward.reward_manager.name=naive"
)

papo_recipe_main kl-cov "$@"
