#!/usr/bin/env bash
# PAPO (Polarity-Aware Policy Optimization, arXiv 2605.11775) on math RLVR.
# The shared base (model, data, lengths, batches, optimiser, rollout, eval, logging) is recipes/common.sh;
# this file sets the algorithm keys only. Compare with grpo_math.sh: one key apart (adv_estimator).
#   bash recipes/papo_math.sh [--dry-run] [hydra overrides, e.g. algorithm.papo.alpha=0.3]
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

ALGO_ARGS=(
    # Group-relative advantage reweighted per token by entropy polarity (docs/algorithm.md §2); the knobs are
    # algorithm.papo.* in papo_verl/config/papo_trainer.yaml. papo_verl selects
    # trainer.v1.trainer_mode=papo (PAPO's synchronous trainer) from this key.
    "algorithm.adv_estimator=papo"
    # Base advantage = GRPO's (mean-centred, divided by the group std).
    "algorithm.norm_adv_by_std_in_grpo=True"
    # Loss side identical to grpo_math.sh: PAPO changes the advantages, not the clipping.
    "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla"
    "actor_rollout_ref.actor.clip_ratio_low=0.2"
    "actor_rollout_ref.actor.clip_ratio_high=0.2"
    # Dual-clip bound for negative advantages (verl's default).
    "actor_rollout_ref.actor.clip_ratio_c=3.0"
    "actor_rollout_ref.actor.loss_agg_mode=token-mean"
    # No dynamic sampling, no overlong shaping.
    "algorithm.filter_groups.enable=False"
    "reward.reward_manager.name=naive"
)

papo_recipe_main papo "$@"
