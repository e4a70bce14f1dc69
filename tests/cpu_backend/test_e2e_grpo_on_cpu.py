"""End to end: `python -m papo_verl.main --config-name papo_trainer_cpu algorithm.adv_estimator=grpo`
runs verl's real v1 trainer (local Ray, TransferQueue, FSDP2 over gloo, agent loop, reward loop,
hf_cpu rollout, naive weight sync) for 3 steps on a tiny random Qwen2.

Asserted: exit code 0; in every step the rollout's log-probs equal the trainer's (fp32,
training/rollout_probs_diff_max and rollout_corr/log_ppl_abs_diff < 1e-5); the server received
the trained weights after every step (its log-probs of a fixed probe change from step to step, and
the agreement above holds for the weights of step k-1 that generated step k); no process of the
run survives it. Memory (summed PSS/RSS of the process tree) and timings are printed.
"""

import json
import os
import sys
import time

import pytest

from papo_verl.proctree import ProcessTreeRun

pytestmark = pytest.mark.slow

STEPS = 3
TIMEOUT_S = 900

REWARD_FN = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """Dense toy reward in [0, 1.5]: distinct characters, plus 0.5 if the answer appears."""
    return len(set(solution_str)) / 20.0 + (0.5 if ground_truth in solution_str else 0.0)
'''


def write_data(folder):
    import pandas as pd

    rows = [{
        "data_source": "toy_arithmetic",
        "prompt": [{"role": "user", "content": f"Compute {a} + {b}."}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": str(a + b)},
        "extra_info": {"split": "train", "index": i},
    } for i, (a, b) in enumerate((i % 7, (3 * i) % 5) for i in range(16))]
    pd.DataFrame(rows).to_parquet(os.path.join(folder, "train.parquet"))
    pd.DataFrame(rows[:4]).to_parquet(os.path.join(folder, "val.parquet"))
    with open(os.path.join(folder, "reward.py"), "w") as fh:
        fh.write(REWARD_FN)


def read_jsonl(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def test_grpo_on_cpu_end_to_end(tiny_model_dir, tmp_path):
    write_data(str(tmp_path))
    metrics_path, weight_log = str(tmp_path / "metrics.jsonl"), str(tmp_path / "weight_sync.jsonl")
    cmd = [
        sys.executable, "-m", "papo_verl.main", "--config-name", "papo_trainer_cpu",
        "algorithm.adv_estimator=grpo",
        f"actor_rollout_ref.model.path={tiny_model_dir}",
        f"data.train_files={tmp_path / 'train.parquet'}", f"data.val_files={tmp_path / 'val.parquet'}",
        "data.train_batch_size=2", "data.max_prompt_length=32", "data.max_response_length=16",
        "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.actor.optim.lr=1e-2",  # large steps: a stale rollout copy could not match
        f"reward.custom_reward_function.path={tmp_path / 'reward.py'}",
        "reward.custom_reward_function.name=compute_score",
        "trainer.logger=[console,file]", "trainer.project_name=papo_cpu_e2e", "trainer.experiment_name=grpo",
        "trainer.val_before_train=false", f"trainer.total_training_steps={STEPS}", "trainer.save_freq=-1",
        f"trainer.default_local_dir={tmp_path / 'checkpoints'}",
        f"actor_rollout_ref.rollout.engine_kwargs.hf_cpu.weight_sync_log={weight_log}",
        "+ray_kwargs.ray_init.address=local",  # a fresh local cluster, never someone else's
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VERL_PLATFORM", "VERL_FILE_LOGGER_ROOT")}
    env.update(VERL_FILE_LOGGER_PATH=metrics_path, TOKENIZERS_PARALLELISM="false", HYDRA_FULL_ERROR="1")
    log_path = str(tmp_path / "run.log")

    with ProcessTreeRun(cmd, env=env, cwd=str(tmp_path), log_path=log_path) as run:
        rc = run.wait(TIMEOUT_S)
        wall_s = time.time() - run.started_at
    leftovers = run.leftovers()
    with open(log_path, errors="replace") as fh:
        log_tail = fh.read()[-6000:]
    assert rc == 0, f"exit code {rc} after {wall_s:.0f} s; log tail:\n{log_tail}"
    assert not leftovers, f"processes of the run survived it: {leftovers}"

    steps = {row["step"]: row["data"] for row in read_jsonl(metrics_path) if "training/global_step" in row["data"]}
    assert sorted(steps) == list(range(1, STEPS + 1)), sorted(steps)
    for step, m in steps.items():
        assert m["training/rollout_probs_diff_valid"] == 1
        assert m["training/rollout_probs_diff_max"] < 1e-5, (step, m["training/rollout_probs_diff_max"])
        assert abs(m["rollout_corr/log_ppl_abs_diff"]) < 1e-5, (step, m["rollout_corr/log_ppl_abs_diff"])
        assert m["actor/grad_norm"] > 0

    syncs = read_jsonl(weight_log)
    assert [s["global_steps"] for s in syncs] == list(range(0, STEPS + 1))  # after init, then after every step
    assert all(s["tensors"] > 0 for s in syncs)
    for before, after in zip(syncs, syncs[1:]):
        change = max(abs(a - b) for a, b in zip(before["probe_log_probs"], after["probe_log_probs"]))
        assert change > 1e-3, (before["global_steps"], after["global_steps"], change)

    step_times = [steps[s]["timing_s/step"] for s in sorted(steps)]
    gib = 1024 ** 3
    print(f"\nCPU e2e: wall {wall_s:.1f} s, startup ≈ {wall_s - sum(step_times):.1f} s, step times "
          f"{[round(t, 2) for t in step_times]} s, "
          f"gen {[round(steps[s]['timing_s/gen'], 2) for s in sorted(steps)]} s; "
          f"peak PSS {run.memory.peak_pss / gib:.2f} GiB, peak RSS {run.memory.peak_rss / gib:.2f} GiB, "
          f"{run.memory.peak_processes} processes ({run.memory.samples} samples); biggest at the PSS peak: "
          f"{[(name, round(pss / 2**20)) for name, pss in run.memory.top_at_peak]} MiB; rollout_probs_diff_max "
          f"{[steps[s]['training/rollout_probs_diff_max'] for s in sorted(steps)]}")
