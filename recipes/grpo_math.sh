#!/usr/bin/env bash
# GRPO baseline on math RLVR (the reference every other recipe is compared with).
# The shared base is recipes/common.sh; this file sets the algorithm keys only.
#   bash recipes/grpo_math.sh [--dry-run] [hydra overrides]
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

ALGO_ARGS=(
    # Group-relative outcome advantage, divided by the group std (False: no std division, as Dr. GRPO).
    "algorithm.adv_estimator=grpo"
    "algorithm.norm_adv_by_std_in_grpo=True"
    # Symmetric PPO clip 0.2.
    "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla"
    "actor_rollout_ref.actor.clip_ratio_low=0.2"
    "actor_rollout_ref.actor.clip_ratio_high=0.2"
    # Dual-clip bound for negative advantages (verl's default).
    "actor_rollout_ref.actor.clip_ratio_c=3.0"
    # Token-mean aggregation (verl's default; the GRPO baseline of Cui et al. 2025, arXiv 2505.22617).
    # It is also how verl aggregates the logged actor/entropy, so every recipe logs it the same way.
    "actor_rollout_ref.actor.loss_agg_mode=token-mean"
    # No dynamic sampling, no overlong shaping.
    "algorithm.filter_groups.enable=False"
    "reward.reward_manager.name=naive"
)

papo_recipe_main grpo "$@"
