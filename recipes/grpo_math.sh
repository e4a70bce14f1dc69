#!/usr/bin/env bash
# GRPO baseline on math RLVR (the reference every other recipe is compared with).
# Algorithm keys: papo_verl/config/algorithm_preset/grpo.yaml; everything else: recipes/common.sh and
# papo_verl/config/math_rlvr.yaml, shared by every recipe.
#   bash recipes/grpo_math.sh [--dry-run] [hydra overrides]
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"
papo_recipe_main grpo "$@"
