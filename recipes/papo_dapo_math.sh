#!/usr/bin/env bash
# PAPO on top of DAPO's loss and sampling settings (PAPO.md §5: "PAPO composes with DAPO's loss
# settings; it changes the advantages, not the clipping"). Compare with dapo_math.sh: one key apart.
# The shared base is recipes/common.sh; this file sets the algorithm keys only.
#   bash recipes/papo_dapo_math.sh [--dry-run] [hydra overrides]
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

ALGO_ARGS=(
    # PAPO's polarity-reweighted advantage (selects trainer.v1.trainer_mode=papo).
    "algorithm.adv_estimator=papo"
    "algorithm.norm_adv_by_std_in_grpo=True"
    # Everything below is dapo_math.sh verbatim.
    "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla"
    "actor_rollout_ref.actor.clip_ratio_low=0.2"
    "actor_rollout_ref.actor.clip_ratio_high=0.28"
    "actor_rollout_ref.actor.clip_ratio_c=10.0"
    "actor_rollout_ref.actor.loss_agg_mode=token-mean"
    "algorithm.filter_groups.enable=True"
    "algorithm.filter_groups.metric=acc"
    "algorithm.filter_groups.max_inflight_gen_batches=1"
    "reward.reward_manager.name=dapo"
    "+reward.reward_kwargs.overlong_buffer_cfg.enable=True"
    "+reward.reward_kwargs.overlong_buffer_cfg.len=${OVERLONG_BUFFER_LEN}"
    "+reward.reward_kwargs.overlong_buffer_cfg.penalty_factor=1.0"
    "+reward.reward_kwargs.overlong_buffer_cfg.log=False"
    "+reward.reward_kwargs.max_resp_len=\${data.max_response_length}"
)

papo_recipe_main papo-dapo "$@"
