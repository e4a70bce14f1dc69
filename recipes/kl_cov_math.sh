#!/usr/bin/env bash
# KL-Cov (Cui et al. 2025, arXiv 2505.22617): verl's built-in `kl_cov` policy loss on the GRPO advantage.
# Algorithm keys: papo_verl/config/algorithm_preset/kl_cov.yaml; everything else: recipes/common.sh and
# papo_verl/config/math_rlvr.yaml, shared by every recipe.
#   bash recipes/kl_cov_math.sh [--dry-run] [hydra overrides]
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"
papo_recipe_main kl_cov "$@"
