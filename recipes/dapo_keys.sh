# shellcheck shell=bash
# DAPO's loss and sampling keys (arXiv 2503.14476) with verl 0.9.1's built-in options: clip-higher,
# token-level loss, dynamic sampling, overlong reward shaping. Sourced by dapo_math.sh and
# papo_dapo_math.sh after common.sh, so that the two recipes differ only in the advantage estimator.
# Defines the array DAPO_ARGS; reads OVERLONG_BUFFER_LEN from common.sh.

if [[ "${BASH_SOURCE[0]}" == "${0}" ]]; then
    echo "recipes/dapo_keys.sh is sourced by the DAPO-style recipes; run e.g. bash recipes/dapo_math.sh --help" >&2
    exit 2
fi

DAPO_ARGS=(
    # Clip-higher: decoupled clip range [1-0.2, 1+0.28].
    "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla"
    "actor_rollout_ref.actor.clip_ratio_low=0.2"
    "actor_rollout_ref.actor.clip_ratio_high=0.28"
    # Dual-clip bound for negative advantages, as verl's DAPO recipes.
    "actor_rollout_ref.actor.clip_ratio_c=10.0"
    # Token-level policy-gradient loss.
    "actor_rollout_ref.actor.loss_agg_mode=token-mean"
    # Dynamic sampling: drop groups whose accuracy has zero std (all right / all wrong) and refill
    # the batch with fresh prompts. `acc` is math_dapo's correctness flag (reward_extra_info), not
    # the shaped reward. One train batch of prompts in flight keeps the refill exact and on-policy.
    "algorithm.filter_groups.enable=True"
    "algorithm.filter_groups.metric=acc"
    "algorithm.filter_groups.max_inflight_gen_batches=1"
    # Overlong reward shaping (0.9.1 keys; the legacy reward_model.overlong_buffer.* no longer
    # compose): a linear penalty up to -penalty_factor over the last `len` tokens before
    # max_resp_len. max_resp_len follows data.max_response_length.
    "reward.reward_manager.name=dapo"
    "+reward.reward_kwargs.overlong_buffer_cfg.enable=True"
    "+reward.reward_kwargs.overlong_buffer_cfg.len=${OVERLONG_BUFFER_LEN}"
    "+reward.reward_kwargs.overlong_buffer_cfg.penalty_factor=1.0"
    "+reward.reward_kwargs.overlong_buffer_cfg.log=False"
    "+reward.reward_kwargs.max_resp_len=\${data.max_response_length}"
)
