"""Names of what PAPO adds to verl's data flow (TransferQueue fields and non-tensor batch keys).

Kept free of verl imports, so that every module (engine, loss hook, trainer, tests) can share them.
"""

# non-tensor flag set by the PAPO trainer on the θ_old pass (and on the update when polarity flips are
# tracked): None/False, or {"backend", "chunk_size", "entropy_needs_grad", "correction"}
STATS_FLAG = "papo_logit_stats"

# per-token outputs of the PAPO engine: nested (bsz, prompt_len + response_len), like verl's log_probs
SUM_PI_SQUARED_KEY = "papo_sum_pi_squared"  # Σ_a π_a²
SUM_PI_SQUARED_LOG_PI_KEY = "papo_sum_pi_squared_log_pi"  # Σ_a π_a² log π_a
POLARITY_KEY = "papo_polarity_coefficient"  # P_t of the same tokens (PapoConfig.correction)
ENTROPY_KEY = "papo_entropy"  # only when verl itself was not asked for the entropy
OUTPUT_KEYS = (SUM_PI_SQUARED_KEY, SUM_PI_SQUARED_LOG_PI_KEY, POLARITY_KEY)

# written by the PAPO trainer for the update
BRANCH_FIELD = "papo_branch"  # int8 (bsz, response_len): +1 expanding, −1 contracting, 0 neutral or masked
PHASE_KEY = "papo"  # non-tensor dict broadcast with the batch: expand, contract, tilt, step

# validation of polarity (PapoConfig.validate_every): the trainer sets VALIDATE_FLAG on two extra
# compute_log_prob calls of a validation step: {"stage": "branch_response"} at θ_old, before the
# update, and {"stage": "after_update"} on the same batch at θ_new
VALIDATE_FLAG = "papo_validate"
VAL_ADVANTAGES_FIELD = "papo_val_advantages"  # float32 (bsz, response_len): base advantage A_t (written by the trainer)
VAL_POLARITY_FIELD = "papo_val_polarity"  # int8 (bsz, response_len): sign(ρ_t), whatever the configured split
# worker outputs; each row holds the same global values (replicated per sample so they travel through TransferQueue)
VAL_BRANCH_KEY = "papo_val_branch_response"  # float64 (bsz, 4): −∇H̄·∇L for all tokens, ρ > 0, A > 0, and H̄
VAL_FIRST_ORDER_KEY = "papo_val_first_order"  # float64 (bsz, 1): ∇H̄(θ_old)·(θ_new − θ_old)
VAL_OUTPUT_PREFIX = "papo_val_"  # after_update: log_probs, entropy and P_t at θ_new as papo_val_<name>
