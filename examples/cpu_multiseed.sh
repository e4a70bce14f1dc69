#!/usr/bin/env bash
# Multi-seed comparison on the CPU demo task: PAPO, GRPO and DAPO with 3 seeds each, one run after
# the other (verl's real trainer each time), then papo-compare on all their metric logs.
#
#   bash examples/cpu_multiseed.sh [OUT_DIR] [extra Hydra overrides for every run]
#   SEEDS="0 1 2 3" ALGORITHMS="papo grpo" DEMO_STEPS=40 bash examples/cpu_multiseed.sh
#   COMPARE_ONLY=1 bash examples/cpu_multiseed.sh OUT_DIR    # redo only the comparison of OUT_DIR/logs
#
# About 4.5-5 minutes per run on 2 cores (9 runs: ~45 minutes). Writes OUT_DIR/logs (metrics + resolved
# configs), OUT_DIR/compare (compare.png, panels/, summary.md, aggregate.csv) and the demo's own figure.
# The table's "final" values are each run's mean over its last FINAL_WINDOW logged steps (default 5):
# one step of 128 responses is too noisy to call a result.
set -euo pipefail

PYTHON="${PYTHON:-python}"
OUT="${1:-outputs/multiseed/$(date +%Y%m%d-%H%M%S)}"
shift || true
read -r -a SEEDS_ARR <<< "${SEEDS:-0 1 2}"
read -r -a ALGOS_ARR <<< "${ALGORITHMS:-papo grpo dapo}"
FINAL_WINDOW="${FINAL_WINDOW:-5}"

if [[ -z "${COMPARE_ONLY:-}" ]]; then
    "${PYTHON}" -m papo_verl.demo --quiet --out "${OUT}" --algorithms "${ALGOS_ARR[@]}" --seeds "${SEEDS_ARR[@]}" "$@"
fi
# pass@8 of the validation samples: what entropy collapse would cost
"${PYTHON}" -m papo_verl.compare "${OUT}/logs" -o "${OUT}/compare" --svg --final-window "${FINAL_WINDOW}" \
    --metric "val-core/papo_demo/countdown/acc/best@8/mean" \
    --title "CPU demo task: ${ALGOS_ARR[*]}, seeds ${SEEDS_ARR[*]}"
echo "comparison: ${OUT}/compare/compare.png and ${OUT}/compare/summary.md"
