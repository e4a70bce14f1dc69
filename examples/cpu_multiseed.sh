#!/usr/bin/env bash
# Multi-seed comparison on the CPU demo task: every algorithm with every seed, one run after the other
# (verl's real trainer each time), then papo-compare on all their metric logs.
#
#   bash examples/cpu_multiseed.sh [OUT_DIR] [extra Hydra overrides for every run]
#   SEEDS="0 1 2 3" ALGORITHMS="papo grpo" DEMO_STEPS=40 bash examples/cpu_multiseed.sh
#   TASK="n_numbers=5 target_max=60" bash examples/cpu_multiseed.sh      # another task difficulty
#   COMPARE_ONLY=1 bash examples/cpu_multiseed.sh OUT_DIR    # redo only the comparison of OUT_DIR/logs
#
# Resumable: run the same command again after an interruption. Finished runs (last step logged and
# held-out evaluation written) are kept, an interrupted run resumes from its last checkpoint when
# trainer.save_freq > 0 (else it starts over, logging to a new <experiment>-2.jsonl), missing runs run.
# ALGORITHMS: algorithm presets (papo_verl/config/algorithm_preset/: papo, grpo, dapo, papo_dapo, clip_cov,
# kl_cov, and PAPO's ablations papo_target, papo_sign, papo_nocorr). About 4-5 minutes per 40-step run at 16 x 8 on 2 cores. Writes OUT_DIR/logs
# (metrics, resolved configs, held-out evaluations), OUT_DIR/validation (verl's validation samples) and
# OUT_DIR/compare (compare.png, panels/, summary.md, stats.csv, aggregate.csv). The table's "final"
# values of training metrics are each run's mean over its last FINAL_WINDOW logged steps (default 5);
# held-out metrics use their last evaluation. Differences, intervals and p-values are against BASELINE.
set -euo pipefail

PYTHON="${PYTHON:-python}"
OUT="${1:-outputs/multiseed/$(date +%Y%m%d-%H%M%S)}"
shift || true
read -r -a SEEDS_ARR <<< "${SEEDS:-0 1 2}"
read -r -a ALGOS_ARR <<< "${ALGORITHMS:-papo grpo dapo}"
read -r -a TASK_ARR <<< "${TASK:-}"
FINAL_WINDOW="${FINAL_WINDOW:-5}"
BASELINE="${BASELINE:-grpo}"

if [[ -z "${COMPARE_ONLY:-}" ]]; then
    task_args=()
    if (( ${#TASK_ARR[@]} )); then task_args=(--task "${TASK_ARR[@]}"); fi
    "${PYTHON}" -m papo_verl.demo --quiet --resume --out "${OUT}" --algorithms "${ALGOS_ARR[@]}" \
        --seeds "${SEEDS_ARR[@]}" "${task_args[@]}" -- "$@"
fi
"${PYTHON}" -m papo_verl.compare "${OUT}/logs" -o "${OUT}/compare" --svg --final-window "${FINAL_WINDOW}" \
    --baseline "${BASELINE}" --title "CPU demo task${TASK:+ (${TASK})}: ${ALGOS_ARR[*]}, seeds ${SEEDS_ARR[*]}"
echo "comparison: ${OUT}/compare/compare.png and ${OUT}/compare/summary.md"
