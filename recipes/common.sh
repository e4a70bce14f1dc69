# shellcheck shell=bash
# Shared base of the math RLVR recipes (PAPO, GRPO, DAPO, Clip-Cov, KL-Cov, PAPO+DAPO).
#
# Sourced by recipes/<algo>_math.sh, never run on its own. The recipes are Hydra configs: the fixed
# base is papo_verl/config/math_rlvr.yaml (papo_trainer.yaml + what every run shares) and the
# algorithm is one preset of papo_verl/config/algorithm_preset/ (its keys, written once). This file
# holds only what Hydra cannot do: settings from environment variables (model preset, paths, cluster
# sizing, lengths and batch sizes, optimiser, evaluation, seeds, logging), quoting of paths, and the
# launch. So every recipe runs the same model, data, lengths, batch sizes, optimiser, rollout,
# evaluation, seeds, logging and checkpointing, and the recipes differ only in their preset (see
# recipes/README.md; tests/recipes/test_recipes_on_cpu.py checks it on the resolved configs). Any
# extra command-line argument of a recipe is passed on to Hydra as an override (last one wins).
#
#   bash recipes/papo_math.sh                      # launch (Ray cluster already up when NNODES > 1)
#   bash recipes/papo_math.sh --dry-run [k=v ...]  # compose + validate, print the resolved config
#   bash recipes/papo_math.sh --print-args [k=v ...]  # print the Hydra arguments (NUL-separated)
#   bash recipes/papo_math.sh --help               # list the environment variables
#
# Every recipe launches the same entry point, `python -m papo_verl.main --config-name math_rlvr`
# (verl 0.9.1's v1 trainer); algorithm.adv_estimator=papo selects the PAPO trainer, any other
# estimator runs verl's own synchronous trainer.

if [[ "${BASH_SOURCE[0]}" == "${0}" ]]; then
    echo "recipes/common.sh is sourced by the recipes; run e.g. bash recipes/papo_math.sh --help" >&2
    exit 2
fi

set -euo pipefail

PAPO_RECIPES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# ------------------------------------------------------------------------------------------------
# Cluster
# ------------------------------------------------------------------------------------------------
NNODES="${NNODES:-1}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
PYTHON="${PYTHON:-python3}"

# ------------------------------------------------------------------------------------------------
# Model presets. MODEL_PRESET picks the defaults below; each one can still be set on its own.
#   qwen2.5-math-7b: max_position_embeddings is 4096, so prompt+response = 1024+3072 (as verl's DAPO
#                    test on this model); overlong buffer 512.
#   qwen3-4b-base / qwen3-8b-base: 32k context; 1024+8192, overlong buffer 1536 (~ DAPO's 20 %).
# Qwen2.5 base models are reported to be contaminated on AIME/MATH (arXiv 2507.10532): also run a
# Qwen3 base preset, and report AIME 2025 alongside AIME 2024.
# ------------------------------------------------------------------------------------------------
MODEL_PRESET="${MODEL_PRESET:-qwen2.5-math-7b}"
case "${MODEL_PRESET}" in
    qwen2.5-math-7b)
        _preset_model="Qwen/Qwen2.5-Math-7B"; _preset_resp=3072; _preset_overlong=512; _preset_tp=1 ;;
    qwen3-4b-base)
        _preset_model="Qwen/Qwen3-4B-Base"; _preset_resp=8192; _preset_overlong=1536; _preset_tp=1 ;;
    qwen3-8b-base)
        _preset_model="Qwen/Qwen3-8B-Base"; _preset_resp=8192; _preset_overlong=1536; _preset_tp=1 ;;
    *)
        echo "recipes: unknown MODEL_PRESET='${MODEL_PRESET}' (qwen2.5-math-7b | qwen3-4b-base | qwen3-8b-base)" >&2
        exit 2 ;;
esac
# A local HF folder or a hub id (resolved through the HF cache / hub on every node).
MODEL_PATH="${MODEL_PATH:-${_preset_model}}"
MODEL_TAG="${MODEL_TAG:-${MODEL_PRESET}}"

# ------------------------------------------------------------------------------------------------
# Data (verl parquet schema; produce it with examples/data_preprocess/, see recipes/README.md).
# Comma-separated lists. Train: DAPO-Math-17k (deduplicated); eval: AIME 2024 + AIME 2025.
# ------------------------------------------------------------------------------------------------
DATA_DIR="${DATA_DIR:-${HOME}/data}"
TRAIN_FILES="${TRAIN_FILES:-${DATA_DIR}/dapo-math-17k/train.parquet}"
VAL_FILES="${VAL_FILES:-${DATA_DIR}/aime/aime-2024.parquet,${DATA_DIR}/aime/aime-2025.parquet}"

# ------------------------------------------------------------------------------------------------
# Lengths and batch sizes (tokens; prompts per step; responses per prompt)
# ------------------------------------------------------------------------------------------------
MAX_PROMPT_LENGTH="${MAX_PROMPT_LENGTH:-1024}"
MAX_RESPONSE_LENGTH="${MAX_RESPONSE_LENGTH:-${_preset_resp}}"
# DAPO's soft overlong penalty over the last OVERLONG_BUFFER_LEN tokens: passed to the presets with
# overlong shaping (dapo, papo_dapo), whose own default (512) is Qwen2.5-Math-7B's.
OVERLONG_BUFFER_LEN="${OVERLONG_BUFFER_LEN:-${_preset_overlong}}"
TRAIN_BATCH_SIZE="${TRAIN_BATCH_SIZE:-256}"     # prompts per step (as Cui et al.'s Clip-Cov/KL-Cov runs)
ROLLOUT_N="${ROLLOUT_N:-8}"                     # responses per prompt (the GRPO/PAPO group)
PPO_MINI_BATCH_SIZE="${PPO_MINI_BATCH_SIZE:-32}" # prompts per optimiser step: 256/32 = 8 updates per step
# Token budget per GPU of one packed micro-batch (use_dynamic_bsz); must hold one full sequence.
MAX_TOKENS_PER_GPU="${MAX_TOKENS_PER_GPU:-$(( 2 * (MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH) ))}"

# ------------------------------------------------------------------------------------------------
# Optimiser (DAPO's: lr 1e-6, 10 warm-up steps, weight decay 0.1, grad-norm clip 1.0)
# ------------------------------------------------------------------------------------------------
LR="${LR:-1e-6}"
LR_WARMUP_STEPS="${LR_WARMUP_STEPS:-10}"
WEIGHT_DECAY="${WEIGHT_DECAY:-0.1}"
GRAD_CLIP="${GRAD_CLIP:-1.0}"
PARAM_OFFLOAD="${PARAM_OFFLOAD:-False}"
OPTIMIZER_OFFLOAD="${OPTIMIZER_OFFLOAD:-False}"

# ------------------------------------------------------------------------------------------------
# Rollout (vLLM) and evaluation
# ------------------------------------------------------------------------------------------------
ROLLOUT_TP="${ROLLOUT_TP:-${_preset_tp}}"
GPU_MEMORY_UTILIZATION="${GPU_MEMORY_UTILIZATION:-0.7}"
TEMPERATURE="${TEMPERATURE:-1.0}"
# Evaluation protocol: avg@VAL_N sampled answers per problem (DAPO: T=1.0, top_p=0.7, avg@32).
VAL_N="${VAL_N:-16}"
VAL_TEMPERATURE="${VAL_TEMPERATURE:-1.0}"
VAL_TOP_P="${VAL_TOP_P:-0.7}"

# ------------------------------------------------------------------------------------------------
# Schedule, seeds, logging, checkpoints
# ------------------------------------------------------------------------------------------------
TOTAL_TRAINING_STEPS="${TOTAL_TRAINING_STEPS:-500}"
# Upper bound only: training stops at TOTAL_TRAINING_STEPS (dynamic sampling consumes prompts faster).
TOTAL_EPOCHS="${TOTAL_EPOCHS:-100}"
TEST_FREQ="${TEST_FREQ:-10}"
SAVE_FREQ="${SAVE_FREQ:-50}"
MAX_CKPT_TO_KEEP="${MAX_CKPT_TO_KEEP:-3}"
VAL_BEFORE_TRAIN="${VAL_BEFORE_TRAIN:-True}"
SEED="${SEED:-1}"
PROJECT_NAME="${PROJECT_NAME:-papo-math}"
# One W&B group per comparison (all algorithms and seeds of one model).
WANDB_RUN_GROUP="${WANDB_RUN_GROUP:-${PROJECT_NAME}-${MODEL_TAG}}"
LOGGER="${LOGGER:-console,wandb}"
CKPT_ROOT="${CKPT_ROOT:-${HOME}/ckpts}"

# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------

# "x" -> "'x'": a Hydra quoted string, so paths and names may hold characters (spaces, "=", ",", ...)
# that the override grammar would otherwise parse; ${...} interpolations inside still resolve.
papo_hydra_quote() {
    if [[ "$1" == *"'"* ]]; then
        echo "recipes: a value with a single quote cannot be passed to Hydra: $1" >&2
        return 2
    fi
    printf "'%s'" "$1"
}

# "a,b" -> "['a','b']" (Hydra list of quoted strings)
papo_hydra_list() {
    local IFS=','
    local -a items
    read -r -a items <<< "$1"
    local out="" item quoted
    for item in "${items[@]}"; do
        [[ -z "${item}" ]] && continue
        quoted="$(papo_hydra_quote "${item}")" || return 2
        out+="${out:+,}${quoted}"
    done
    printf '[%s]' "${out}"
}

# "console,wandb" -> "[console,wandb]"
papo_hydra_words() {
    printf '[%s]' "$1"
}

papo_abs_path() {
    case "$1" in
        /*) printf '%s' "$1" ;;
        "~"*) printf '%s' "${HOME}${1:1}" ;;
        *) printf '%s/%s' "${PWD}" "$1" ;;
    esac
}

papo_recipe_usage() {
    cat <<EOF
usage: bash ${0} [--dry-run | --print-args | --help] [hydra overrides ...]

  --dry-run     PAPO_DRY_RUN=1: compose, run papo_verl's and verl's config checks, print the fully
                resolved config as YAML; Ray is not started, missing model/data files only warn.
  --print-args  print the Hydra arguments this recipe would pass (NUL-separated), launch nothing.

Algorithm: algorithm_preset=${1} (papo_verl/config/algorithm_preset/${1}.yaml);
base config: papo_verl/config/math_rlvr.yaml.

Environment (current value):
  NNODES=${NNODES} GPUS_PER_NODE=${GPUS_PER_NODE} PYTHON=${PYTHON}
  MODEL_PRESET=${MODEL_PRESET} MODEL_PATH=${MODEL_PATH} MODEL_TAG=${MODEL_TAG}
  DATA_DIR=${DATA_DIR}
  TRAIN_FILES=${TRAIN_FILES}
  VAL_FILES=${VAL_FILES}
  MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH} MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH} OVERLONG_BUFFER_LEN=${OVERLONG_BUFFER_LEN}
  TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE} ROLLOUT_N=${ROLLOUT_N} PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE} MAX_TOKENS_PER_GPU=${MAX_TOKENS_PER_GPU}
  LR=${LR} LR_WARMUP_STEPS=${LR_WARMUP_STEPS} WEIGHT_DECAY=${WEIGHT_DECAY} GRAD_CLIP=${GRAD_CLIP}
  PARAM_OFFLOAD=${PARAM_OFFLOAD} OPTIMIZER_OFFLOAD=${OPTIMIZER_OFFLOAD}
  ROLLOUT_TP=${ROLLOUT_TP} GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION} TEMPERATURE=${TEMPERATURE}
  VAL_N=${VAL_N} VAL_TEMPERATURE=${VAL_TEMPERATURE} VAL_TOP_P=${VAL_TOP_P}
  TOTAL_TRAINING_STEPS=${TOTAL_TRAINING_STEPS} TOTAL_EPOCHS=${TOTAL_EPOCHS} TEST_FREQ=${TEST_FREQ} SAVE_FREQ=${SAVE_FREQ}
  MAX_CKPT_TO_KEEP=${MAX_CKPT_TO_KEEP} VAL_BEFORE_TRAIN=${VAL_BEFORE_TRAIN} SEED=${SEED}
  PROJECT_NAME=${PROJECT_NAME} EXPERIMENT_NAME=${EXPERIMENT_NAME:-<preset>-${MODEL_TAG}-seed${SEED}}
  WANDB_RUN_GROUP=${WANDB_RUN_GROUP} LOGGER=${LOGGER} CKPT_ROOT=${CKPT_ROOT}
EOF
}

# papo_recipe_main <preset> [args...]: launch (or dry-run, print) math_rlvr with algorithm_preset=<preset>.
papo_recipe_main() {
    local preset="$1"
    shift
    local dry_run=0 print_args=0 arg
    local -a user_args=()
    for arg in "$@"; do
        case "${arg}" in
            --dry-run) dry_run=1 ;;
            --print-args) print_args=1 ;;
            -h | --help) papo_recipe_usage "${preset}"; return 0 ;;
            *) user_args+=("${arg}") ;;
        esac
    done
    if [[ ! -f "${PAPO_RECIPES_DIR}/../papo_verl/config/algorithm_preset/${preset}.yaml" ]]; then
        echo "recipes: no algorithm preset '${preset}' in papo_verl/config/algorithm_preset/" >&2
        return 2
    fi

    local n_gpus=$(( NNODES * GPUS_PER_NODE ))
    if (( n_gpus % ROLLOUT_TP != 0 )); then
        echo "recipes: NNODES*GPUS_PER_NODE=${n_gpus} is not divisible by ROLLOUT_TP=${ROLLOUT_TP}" >&2
        return 2
    fi
    if (( MAX_TOKENS_PER_GPU < MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH )); then
        echo "recipes: MAX_TOKENS_PER_GPU=${MAX_TOKENS_PER_GPU} cannot hold one sequence of" \
             "MAX_PROMPT_LENGTH+MAX_RESPONSE_LENGTH=$(( MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH )) tokens" >&2
        return 2
    fi

    local experiment_name="${EXPERIMENT_NAME:-${preset//_/-}-${MODEL_TAG}-seed${SEED}}"
    local ckpt_root train_files val_files model_path project experiment ckpt_dir wandb_group
    ckpt_root="$(papo_abs_path "${CKPT_ROOT}")"
    train_files="$(papo_hydra_list "${TRAIN_FILES}")"
    val_files="$(papo_hydra_list "${VAL_FILES}")"
    model_path="$(papo_hydra_quote "${MODEL_PATH}")"
    project="$(papo_hydra_quote "${PROJECT_NAME}")"
    experiment="$(papo_hydra_quote "${experiment_name}")"
    ckpt_dir="$(papo_hydra_quote "${ckpt_root}/\${trainer.project_name}/\${trainer.experiment_name}")"
    wandb_group="$(papo_hydra_quote "${WANDB_RUN_GROUP}")"

    local -a base_args=(
        # --- data -------------------------------------------------------------------------------
        "data.train_files=${train_files}"
        "data.val_files=${val_files}"
        "data.max_prompt_length=${MAX_PROMPT_LENGTH}"
        "data.max_response_length=${MAX_RESPONSE_LENGTH}"
        "data.train_batch_size=${TRAIN_BATCH_SIZE}"
        "data.seed=${SEED}"
        # --- model ------------------------------------------------------------------------------
        "actor_rollout_ref.model.path=${model_path}"
        # --- actor: optimiser, token budget of the dynamic micro-batches ---------------------------
        "actor_rollout_ref.actor.optim.lr=${LR}"
        "actor_rollout_ref.actor.optim.lr_warmup_steps=${LR_WARMUP_STEPS}"
        "actor_rollout_ref.actor.optim.weight_decay=${WEIGHT_DECAY}"
        "actor_rollout_ref.actor.grad_clip=${GRAD_CLIP}"
        "actor_rollout_ref.actor.ppo_mini_batch_size=${PPO_MINI_BATCH_SIZE}"
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=${MAX_TOKENS_PER_GPU}"
        "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=${MAX_TOKENS_PER_GPU}"
        "actor_rollout_ref.actor.fsdp_config.param_offload=${PARAM_OFFLOAD}"
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload=${OPTIMIZER_OFFLOAD}"
        "actor_rollout_ref.actor.data_loader_seed=${SEED}"
        # --- rollout ------------------------------------------------------------------------------
        "actor_rollout_ref.rollout.n=${ROLLOUT_N}"
        "actor_rollout_ref.rollout.tensor_model_parallel_size=${ROLLOUT_TP}"
        "actor_rollout_ref.rollout.gpu_memory_utilization=${GPU_MEMORY_UTILIZATION}"
        "actor_rollout_ref.rollout.temperature=${TEMPERATURE}"
        "actor_rollout_ref.rollout.seed=${SEED}"
        # --- evaluation (AIME): avg@VAL_N sampled answers ----------------------------------------
        "actor_rollout_ref.rollout.val_kwargs.n=${VAL_N}"
        "actor_rollout_ref.rollout.val_kwargs.temperature=${VAL_TEMPERATURE}"
        "actor_rollout_ref.rollout.val_kwargs.top_p=${VAL_TOP_P}"
        # --- trainer ------------------------------------------------------------------------------
        "trainer.nnodes=${NNODES}"
        "trainer.n_gpus_per_node=${GPUS_PER_NODE}"
        "trainer.total_epochs=${TOTAL_EPOCHS}"
        "trainer.total_training_steps=${TOTAL_TRAINING_STEPS}"
        "trainer.test_freq=${TEST_FREQ}"
        "trainer.save_freq=${SAVE_FREQ}"
        "trainer.val_before_train=${VAL_BEFORE_TRAIN}"
        "trainer.logger=$(papo_hydra_words "${LOGGER}")"
        "trainer.project_name=${project}"
        "trainer.experiment_name=${experiment}"
        # Absolute, so Ray workers on any node agree.
        "trainer.default_local_dir=${ckpt_dir}"
        "trainer.max_actor_ckpt_to_keep=${MAX_CKPT_TO_KEEP}"
        # wandb.init reads WANDB_RUN_GROUP; the tracker runs inside a Ray actor, so pass it there.
        "+ray_kwargs.ray_init.runtime_env.env_vars.WANDB_RUN_GROUP=${wandb_group}"
    )

    # Hydra's --config-name goes before every override (argparse takes the overrides as one run).
    local -a config=("--config-name=math_rlvr")
    local -a args=("algorithm_preset=${preset}" "${base_args[@]}")
    # DAPO's overlong buffer follows the model's response budget (MODEL_PRESET), which no preset file knows.
    case "${preset}" in
        dapo | papo_dapo) args+=("reward.reward_kwargs.overlong_buffer_cfg.len=${OVERLONG_BUFFER_LEN}") ;;
    esac
    if (( ${#user_args[@]} > 0 )); then
        args+=("${user_args[@]}")
    fi

    if (( print_args )); then
        printf '%s\0' "${config[@]}" "${args[@]}"
        return 0
    fi

    if (( dry_run )); then
        # Nothing written to disk: Hydra's run dir is the current one and its log files are off.
        # (Hydra's own settings go first: Hydra flags such as --cfg among the user's arguments
        # must come after every override.)
        PAPO_DRY_RUN=1 "${PYTHON}" -m papo_verl.main "${config[@]}" \
            "hydra.run.dir=." "hydra.output_subdir=null" "hydra/job_logging=none" "hydra/hydra_logging=none" \
            "${args[@]}"
        return $?
    fi

    # With `file` in LOGGER, verl's file logger writes <root>/<project>/<experiment>.jsonl: put it
    # beside the run's checkpoint folder unless the caller chose a root.
    export VERL_FILE_LOGGER_ROOT="${VERL_FILE_LOGGER_ROOT:-${ckpt_root}}"
    # The composed config and the overrides (.hydra/) and the driver log are kept next to the
    # checkpoints of the run, one folder per launch.
    local run_dir
    run_dir="$(papo_hydra_quote "${ckpt_root}/\${trainer.project_name}/\${trainer.experiment_name}/launches/\${now:%Y%m%d-%H%M%S}")"
    exec "${PYTHON}" -m papo_verl.main "${config[@]}" "hydra.run.dir=${run_dir}" "${args[@]}"
}
