#!/usr/bin/env bash
# PAPO on top of DAPO's loss and sampling settings (docs/algorithm.md §6); one key apart from
# dapo_math.sh.
# Algorithm keys: papo_verl/config/algorithm_preset/papo_dapo.yaml; everything else: recipes/common.sh and
# papo_verl/config/math_rlvr.yaml, shared by every recipe.
#   bash recipes/papo_dapo_math.sh [--dry-run] [hydra overrides]
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"
papo_recipe_main papo_dapo "$@"
