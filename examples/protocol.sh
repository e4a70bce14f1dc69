#!/usr/bin/env bash
# The pre-registered comparison of docs/results.md: one command per task setting.
#
#   bash examples/protocol.sh default    # 6 arms x 5 seeds on the demo task
#   bash examples/protocol.sh harder     # GRPO, PAPO and PAPO's advantage-sign split x 5 seeds, 5 numbers
#   COMPARE_ONLY=1 bash examples/protocol.sh default     # redo the comparison from docs/runs/default
#
# Every run: 60 steps of 32 prompts x 8 responses, held-out evaluation of 256 problems x 16 samples at
# steps 0, 15, 30, 45 and 60, a checkpoint every 15 steps. Resumable: run the same command again after
# an interruption (finished runs are kept, interrupted ones resume from their last checkpoint, runs
# already committed to docs/runs/<setting>/ are not run again, even from a fresh clone). Runs
# go to outputs/protocol/<setting>/ (OUT_ROOT); once all are finished, their metric logs (JSONL,
# resolved configs, held-out evaluations) are copied to docs/runs/<setting>/ and papo-compare's
# figure and tables, computed from those copies, to docs/figures/<setting>/ (differences to GRPO) and
# docs/figures/<setting>/vs_papo/ (the same tables with differences to the default PAPO: the ablations).
set -euo pipefail
cd "$(dirname "$0")/.."

SETTING="${1:?usage: bash examples/protocol.sh default|harder}"
case "${SETTING}" in
    default) ARMS="grpo papo papo_target papo_sign papo_nocorr kl_cov"; TASK="" ;;
    harder) ARMS="grpo papo papo_sign"; TASK="n_numbers=5 max_value=12 target_min=20 target_max=80" ;;
    *) echo "examples/protocol.sh: unknown setting '${SETTING}' (default, harder)" >&2; exit 2 ;;
esac
PYTHON="${PYTHON:-.venv/bin/python}"
OUT="${OUT_ROOT:-outputs/protocol}/${SETTING}"
RUNS="${RUNS_ROOT:-docs/runs}/${SETTING}"
FIGURES="${FIGURES_ROOT:-docs/figures}/${SETTING}"
SEEDS="0 1 2 3 4"

copy_new() {  # copy_new DIR FILE...: copy each FILE into DIR unless DIR has it (nothing is overwritten)
    local dir="$1" file
    shift
    mkdir -p "${dir}"
    for file in "$@"; do
        [[ -f "${file}" && ! -e "${dir}/${file##*/}" ]] && cp "${file}" "${dir}/" || true
    done
}

if [[ -z "${COMPARE_ONLY:-}" ]]; then
    # runs committed to docs/runs count as finished (a fresh clone or a new machine skips them)
    copy_new "${OUT}/logs/papo_demo" "${RUNS}"/*.jsonl "${RUNS}"/*.config.yaml
    SEEDS="${SEEDS}" ALGORITHMS="${ARMS}" TASK="${TASK}" DEMO_STEPS=60 PYTHON="${PYTHON}" \
        bash examples/cpu_multiseed.sh "${OUT}" \
        data.train_batch_size=32 actor_rollout_ref.actor.ppo_mini_batch_size=16 \
        data.val_max_samples=256 trainer.test_freq=15 trainer.save_freq=15 trainer.max_actor_ckpt_to_keep=1
    copy_new "${RUNS}" "${OUT}"/logs/*/*.jsonl "${OUT}"/logs/*/*.config.yaml
fi
"${PYTHON}" -m papo_verl.compare "${RUNS}" -o "${FIGURES}" --final-window 5 --baseline grpo \
    --title "pre-registered comparison, ${SETTING} task: ${ARMS}, seeds ${SEEDS}"
rm -f "${FIGURES}/aggregate.csv"  # every metric at every step: large, and recomputable from docs/runs
# the ablations (split, correction, controller) against the default PAPO: the same statistics, Welch vs papo
"${PYTHON}" -m papo_verl.compare "${RUNS}" -o "${FIGURES}/vs_papo" --final-window 5 --baseline papo \
    --title "pre-registered comparison, ${SETTING} task: against papo" > /dev/null
rm -rf "${FIGURES}/vs_papo/aggregate.csv" "${FIGURES}/vs_papo/compare.png" "${FIGURES}/vs_papo/panels"  # as above
echo "comparison: ${FIGURES}/compare.png, ${FIGURES}/summary.md, ${FIGURES}/stats.csv (against grpo);" \
    "${FIGURES}/vs_papo/summary.md, ${FIGURES}/vs_papo/stats.csv (against papo)"
