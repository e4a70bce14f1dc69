#!/usr/bin/env bash
# PAPO (Polarity-Aware Policy Optimization, arXiv 2605.11775) on math RLVR: GRPO's keys with the PAPO
# estimator (one key apart from grpo_math.sh).
# Algorithm keys: papo_verl/config/algorithm_preset/papo.yaml; everything else: recipes/common.sh and
# papo_verl/config/math_rlvr.yaml, shared by every recipe.
#   bash recipes/papo_math.sh [--dry-run] [hydra overrides, e.g. algorithm.papo.alpha=0.3]
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"
papo_recipe_main papo "$@"
