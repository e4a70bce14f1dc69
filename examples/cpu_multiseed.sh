#!/usr/bin/env bash
# Multi-seed comparison on the CPU demo task: PAPO, GRPO and DAPO with 3 seeds each, one run after
# the other (verl's real trainer each time), then papo-compare on all their metric logs.
#
#   bash examples/cpu_multiseed.sh [OUT_DIR] [extra Hydra overrides for every run]
#   SEEDS="0 1 2 3" ALGORITHMS="papo grpo" DEMO_STEPS=40 bash examples/cpu_multiseed.sh
#
# About 5 minutes per run on 2 cores (9 runs: ~45 minutes). Writes OUT_DIR/logs (metrics + resolved
# configs), OUT_DIR/compare (compare.png, panels/, summary.md, aggregate.csv) and the demo's own figure.
set -euo pipefail

PYTHON="${PYTHON:-python}"
OUT="${1:-outputs/multiseed/$(date +%Y%m%d-%H%M%S)}"
shift || true
read -r -a SEEDS_ARR <<< "${SEEDS:-0 1 2}"
read -r -a ALGOS_ARR <<< "${ALGORITHMS:-papo grpo dapo}"

"${PYTHON}" -m papo_verl.demo --quiet --out "${OUT}" --algorithms "${ALGOS_ARR[@]}" --seeds "${SEEDS_ARR[@]}" "$@"
"${PYTHON}" -m papo_verl.compare "${OUT}/logs" -o "${OUT}/compare" --svg \
    --title "CPU demo task: ${ALGOS_ARR[*]}, seeds ${SEEDS_ARR[*]}"
echo "comparison: ${OUT}/compare/compare.png and ${OUT}/compare/summary.md"
