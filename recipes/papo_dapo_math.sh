#!/usr/bin/env bash
# PAPO on top of DAPO's loss and sampling settings (docs/algorithm.md §6: "PAPO composes with DAPO's loss
# settings; it changes the advantages, not the clipping"). Compare with dapo_math.sh: one key apart
# (both take DAPO's keys from recipes/dapo_keys.sh).
# The shared base is recipes/common.sh; this file sets the algorithm keys only.
#   bash recipes/papo_dapo_math.sh [--dry-run] [hydra overrides]
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"
source "${PAPO_RECIPES_DIR}/dapo_keys.sh"

ALGO_ARGS=(
    # PAPO's polarity-reweighted advantage (selects trainer.v1.trainer_mode=papo).
    "algorithm.adv_estimator=papo"
    "algorithm.norm_adv_by_std_in_grpo=True"
    "${DAPO_ARGS[@]}"
)

papo_recipe_main papo-dapo "$@"
