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
