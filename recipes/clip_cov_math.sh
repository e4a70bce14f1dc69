#!/usr/bin/env bash
# Clip-Cov (Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning LMs", arXiv 2505.22617):
# verl's built-in `clip_cov` policy loss on the GRPO advantage.
# The shared base is recipes/common.sh; this file sets the algorithm keys only.
#   bash recipes/clip_cov_math.sh [--dry-run] [hydra overrides]
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

ALGO_ARGS=(
    "algorithm.adv_estimator=grpo"
    "algorithm.norm_adv_by_std_in_grpo=True"
    # In every micro-batch, a random clip_cov_ratio share of the tokens whose centred covariance
    # (A - mean A)(log pi - mean log pi) lies in (clip_cov_lb, clip_cov_ub) gets zero gradient.
    # Values from the paper's recipe: ratio 2e-4, bounds (1, 5).
    "actor_rollout_ref.actor.policy_loss.loss_mode=clip_cov"
    "actor_rollout_ref.actor.policy_loss.clip_cov_ratio=0.0002"
    "actor_rollout_ref.actor.policy_loss.clip_cov_lb=1.0"
    "actor_rollout_ref.actor.policy_loss.clip_cov_ub=5.0"
    # As in the paper's recipe the ratio clip is opened to [0, 2] (clip 1.0/1.0): the covariance
    # rule replaces it. clip_ratio_c is not read by clip_cov; verl's default is kept.
    "actor_rollout_ref.actor.clip_ratio_low=1.0"
    "actor_rollout_ref.actor.clip_ratio_high=1.0"
    "actor_rollout_ref.actor.clip_ratio_c=3.0"
    "actor_rollout_ref.actor.loss_agg_mode=token-mean"
    "algorithm.filter_groups.enable=False"
    "reward.reward_manager.name=naive"
)

papo_recipe_main clip-cov "$@"
