"""End to end: GRPO through `python -m papo_verl.main --config-name papo_trainer_cpu algorithm.adv_estimator=grpo`:
verl's real v1 trainer (local Ray, TransferQueue, FSDP2 over gloo, agent loop, reward loop, hf_cpu
rollout, naive weight sync) for 3 steps on a tiny random Qwen2.

Asserted: exit code 0; in every step the rollout's log-probs equal the trainer's (fp32,
training/rollout_probs_diff_max and rollout_corr/log_ppl_abs_diff < 1e-5); the server received the
trained weights after every step (its log-probs of a fixed probe change from step to step); no
process of the run survives it; GRPO logs no PAPO metric.
"""

import pytest

from .fixtures import read_jsonl

pytestmark = pytest.mark.slow


def test_grpo_on_cpu_end_to_end(grpo_run):
    run = grpo_run
    assert run.rc == 0, f"exit code {run.rc} after {run.wall_s:.0f} s; log tail:\n{run.log_tail}"
    assert not run.leftovers, f"processes of the run survived it: {run.leftovers}"
    assert sorted(run.steps) == [1, 2, 3], sorted(run.steps)
    for step, m in run.steps.items():
        assert m["training/rollout_probs_diff_valid"] == 1
        assert m["training/rollout_probs_diff_max"] < 1e-5, (step, m["training/rollout_probs_diff_max"])
        assert abs(m["rollout_corr/log_ppl_abs_diff"]) < 1e-5, (step, m["rollout_corr/log_ppl_abs_diff"])
        assert m["actor/grad_norm"] > 0
        assert not any(k.startswith(("papo/", "actor/papo/")) for k in m)

    syncs = read_jsonl(run.weight_log)
    assert [s["global_steps"] for s in syncs] == [0, 1, 2, 3]  # after init, then after every step
    assert all(s["tensors"] > 0 for s in syncs)
    for before, after in zip(syncs, syncs[1:]):
        change = max(abs(a - b) for a, b in zip(before["probe_log_probs"], after["probe_log_probs"]))
        assert change > 1e-3, (before["global_steps"], after["global_steps"], change)

    step_times = [run.steps[s]["timing_s/step"] for s in sorted(run.steps)]
    print(f"\nGRPO CPU e2e: wall {run.wall_s:.1f} s, startup ≈ {run.wall_s - sum(step_times):.1f} s, step times "
          f"{[round(t, 2) for t in step_times]} s; peak PSS {run.peak_pss_gib:.2f} GiB, "
          f"peak RSS {run.peak_rss_gib:.2f} GiB")
