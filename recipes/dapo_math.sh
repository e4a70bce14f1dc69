#!/usr/bin/env bash
# DAPO (arXiv 2503.14476) on math RLVR, with verl 0.9.1's built-in keys (no forked trainer):
# clip-higher, token-level loss, dynamic sampling, overlong reward shaping.
# Algorithm keys: papo_verl/config/algorithm_preset/dapo.yaml; everything else: recipes/common.sh and
# papo_verl/config/math_rlvr.yaml, shared by every recipe.
#   bash recipes/dapo_math.sh [--dry-run] [hydra overrides]
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"
papo_recipe_main dapo "$@"
