#!/usr/bin/env bash
# DAPO (arXiv 2503.14476) on math RLVR, with verl 0.9.1's built-in keys (no forked trainer):
# clip-higher, token-level loss, dynamic sampling, overlong reward shaping (recipes/dapo_keys.sh).
# The shared base is recipes/common.sh; this file sets the algorithm keys only.
#   bash recipes/dapo_math.sh [--dry-run] [hydra overrides]
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"
source "${PAPO_RECIPES_DIR}/dapo_keys.sh"

ALGO_ARGS=(
    "algorithm.adv_estimator=grpo"
    "algorithm.norm_adv_by_std_in_grpo=True"
    "${DAPO_ARGS[@]}"
)

papo_recipe_main dapo "$@"
