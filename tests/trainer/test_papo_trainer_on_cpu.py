"""PapoTrainer's driver-side stages on a real local Ray + TransferQueue: advantage write-back,
tracker feeding, GRPO equivalence at α = 0, padding rows, checkpoint round trip and resume."""

import json
import os

import numpy as np
import pytest
import torch

import verl  # noqa: F401  -- plugin
from papo_verl.integration.estimator import compute_papo_outcome_advantage
from papo_verl.algorithm.metrics import METRICS_GLOSSARY
from papo_verl.integration.trainer import PAPO_STATE_FILE, PAPO_STATE_VERSION, PapoState, PapoTrainer
from papo_verl.algorithm.tracker import PhaseWeights
from verl.trainer.ppo.v1 import PPOTrainerSync
from verl.workers.utils.padding import response_from_nested

from .conftest import compose_config, make_rollouts, padded, put_rollouts, uids


def bare_trainer(cls, cfg, steps=1):
    """A trainer object without workers: only the driver-side state the advantage stage uses."""
    trainer = object.__new__(cls)
    trainer.config = cfg
    trainer.global_steps = steps
    if cls is PapoTrainer:
        from papo_verl.integration.estimator import papo_config_from_algorithm

        trainer.papo = PapoState(papo_config_from_algorithm(cfg.algorithm))
    return trainer


def fetch(tq, batch, fields):
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
    return data


@pytest.mark.slow  # starts Ray (the TransferQueue fixture)
def test_advantage_stage_writes_papo_advantages_and_labels(transfer_queue):
    tq = transfer_queue
    cfg = compose_config("actor_rollout_ref.rollout.n=4", "algorithm.papo.warmup_steps=1")
    keys, samples = make_rollouts(seed=1)
    batch = put_rollouts(tq, keys, samples)
    trainer = bare_trainer(PapoTrainer, cfg)
    trainer.papo.ensure_tracker(10)
    # put the tracker past warm-up with a falling trajectory so that the weights are not neutral
    for h in (3.0, 2.9, 2.8):
        trainer.papo.tracker.update(h)
    metrics = {}
    out = trainer._compute_advantage(batch, metrics)
    assert {"advantages", "returns", "papo_branch"} <= set(out.fields)

    data = fetch(tq, batch, ["advantages", "papo_branch", "response_mask"])
    adv = data["advantages"].to_padded_tensor(0.0)
    branch = data["papo_branch"].to_padded_tensor(0)
    # reference: the registered estimator on the same inputs (response-aligned, padded)
    mask = padded(samples, "response_mask")
    stats = {k: padded(samples, k) for k in ("old_log_probs", "entropy")}
    s2 = [s["papo_sum_pi_squared"][s["prompts"].numel() - 1: -1] for s in samples]
    s2l = [s["papo_sum_pi_squared_log_pi"][s["prompts"].numel() - 1: -1] for s in samples]
    pad = lambda xs: torch.nn.utils.rnn.pad_sequence(xs, batch_first=True)  # noqa: E731
    h_bar = float((stats["entropy"] * mask).sum() / mask.sum())
    assert metrics["papo/entropy"] == pytest.approx(h_bar, rel=1e-6)
    phase = trainer.papo.phase
    assert phase.tilt > 0  # entropy kept falling: expansion favoured
    ref, _ = compute_papo_outcome_advantage(
        token_level_rewards=padded(samples, "rm_scores"), response_mask=mask, index=uids(samples),
        config=cfg.algorithm, old_log_probs=stats["old_log_probs"], entropys=stats["entropy"],
        sum_pi_squared=pad(s2), sum_pi_squared_log_pi=pad(s2l), phase_weights=phase)
    torch.testing.assert_close(adv, ref, rtol=1e-6, atol=1e-7)
    # padding row: zero advantage, neutral label
    assert torch.all(adv[-1] == 0) and torch.all(branch[-1] == 0)
    # labels are the sign of the polarity on valid tokens
    assert set(branch[mask.bool()].unique().tolist()) <= {-1, 0, 1}
    # every logged papo/* metric is finite and explained in the glossary
    papo_keys = [k for k in metrics if k.startswith("papo/")]
    assert papo_keys and all(k in METRICS_GLOSSARY for k in papo_keys), set(papo_keys) - set(METRICS_GLOSSARY)
    assert all(np.isfinite(metrics[k]) for k in papo_keys)
    assert trainer._papo_broadcast["expand"] == metrics["papo/expand_weight"] > 1.0
    tq.kv_clear(keys=batch.keys, partition_id=batch.partition_id)


@pytest.mark.slow  # starts Ray (the TransferQueue fixture)
def test_alpha_zero_equals_verl_grpo_trainer_stage(transfer_queue):
    """Drift detector: with α = 0 the PAPO stage writes exactly what verl's own GRPO stage writes."""
    tq = transfer_queue
    keys, samples = make_rollouts(seed=2, rewards=[[1, 0, 0, 1], [0, 1, 1, 1], [0, 0, 0, 1], [1, 1, 0, 0]])
    keys_grpo = ["grpo-" + k for k in keys]  # verl parses keys as {uid}_{session}_{index}
    batch = put_rollouts(tq, keys, samples)
    batch_grpo = put_rollouts(tq, keys_grpo, samples)
    papo_cfg = compose_config("actor_rollout_ref.rollout.n=4", "algorithm.papo.alpha=0.0")
    grpo_cfg = compose_config("actor_rollout_ref.rollout.n=4", "algorithm.adv_estimator=grpo")
    bare_trainer(PapoTrainer, papo_cfg)._compute_advantage(batch, {})
    bare_trainer(PPOTrainerSync, grpo_cfg)._compute_advantage(batch_grpo, {})
    ours = fetch(tq, batch, ["advantages", "returns"])
    theirs = fetch(tq, batch_grpo, ["advantages", "returns"])
    for f in ("advantages", "returns"):
        torch.testing.assert_close(ours[f].to_padded_tensor(0.0), theirs[f].to_padded_tensor(0.0), rtol=1e-5, atol=1e-6)
    tq.kv_clear(keys=batch.keys + batch_grpo.keys, partition_id="train")


class _RecordingWorkerGroup:
    """Stands in for the actor worker group in the checkpoint unit test (writes a marker file)."""

    def save_checkpoint(self, local_path, hdfs_path, global_step, max_ckpt_to_keep=None):
        os.makedirs(local_path, exist_ok=True)
        with open(os.path.join(local_path, "marker"), "w") as fh:
            fh.write(str(global_step))

    def load_checkpoint(self, local_path, del_local_after_load=False):
        assert os.path.isfile(os.path.join(local_path, "marker"))


class _Loader:
    def state_dict(self):
        return {"pos": 0}

    def load_state_dict(self, state):
        self.state = state


@pytest.mark.slow  # starts Ray (the TransferQueue fixture)
def test_checkpoint_round_trip_and_resume_reproduce_phase_weights(transfer_queue, tmp_path):
    tq = transfer_queue
    ckpt = str(tmp_path / "ckpt")
    cfg = compose_config("actor_rollout_ref.rollout.n=4", f"trainer.default_local_dir={ckpt}", "trainer.resume_mode=auto")
    n_steps, cut = 9, 5
    batches = []
    for step in range(n_steps):
        keys, samples = make_rollouts(seed=100 + step)
        for s in samples:  # a falling, noisy entropy trajectory
            s["entropy"] = s["entropy"] * (0.93 ** step) * (1.0 + 0.05 * np.sin(step))
        batches.append((keys, samples))

    def run(trainer, steps):
        weights = []
        for step in steps:
            keys, samples = batches[step]
            batch = put_rollouts(tq, [f"t{id(trainer)}-{k}" for k in keys], samples)
            trainer.global_steps = step + 1
            m = {}
            trainer._compute_advantage(batch, m)
            weights.append((trainer.papo.phase, m["papo/expand_weight"], m["papo/contract_weight"]))
            tq.kv_clear(keys=batch.keys, partition_id="train")
        return weights

    def with_io(trainer):
        trainer.actor_rollout_wg = _RecordingWorkerGroup()
        trainer.train_dataloader = _Loader()
        trainer.use_critic = False
        trainer.total_training_steps = n_steps
        from verl.trainer.ppo.checkpoint_callback import build_checkpoint_callback

        trainer.checkpoint_callback = build_checkpoint_callback(cfg)
        return trainer

    uninterrupted = run(bare_trainer(PapoTrainer, cfg), range(n_steps))

    first = with_io(bare_trainer(PapoTrainer, cfg))
    first._load_checkpoint()  # nothing to resume: fresh start
    assert first.global_steps == 0
    head = run(first, range(cut))
    first._save_checkpoint()
    folder = os.path.join(ckpt, f"global_step_{cut}")
    state = json.load(open(os.path.join(folder, PAPO_STATE_FILE)))
    assert state["version"] == PAPO_STATE_VERSION and state["tracker"]["steps"] == cut
    assert open(os.path.join(ckpt, "latest_checkpointed_iteration.txt")).read() == str(cut)

    resumed = with_io(bare_trainer(PapoTrainer, cfg))
    resumed._load_checkpoint()
    assert resumed.global_steps == cut
    assert resumed.papo.tracker.state_dict() == first.papo.tracker.state_dict()
    tail = run(resumed, range(cut, n_steps))
    assert head + tail == uninterrupted  # bit-identical phase weights after resume
    assert any(w[0] != PhaseWeights() for w in tail)


def test_state_file_version_is_checked(tmp_path):
    from papo_verl.algorithm.config import PapoConfig

    state = PapoState(PapoConfig())
    path = state.save(str(tmp_path))
    data = json.load(open(path))
    data["version"] = 7
    json.dump(data, open(path, "w"))
    with pytest.raises(ValueError, match="version 7"):
        PapoState(PapoConfig()).load(str(tmp_path))
    assert not PapoState(PapoConfig()).load(str(tmp_path / "missing"))


def test_response_alignment_of_full_sequence_statistics():
    """The stage converts full-sequence fields with verl's response_from_nested: position t → token t+1."""
    keys, samples = make_rollouts(n_prompts=1, n=2, seed=3, padding_rows=0)
    s = samples[0]
    full = torch.nested.as_nested_tensor([s["papo_sum_pi_squared"]], layout=torch.jagged)
    mask = torch.nested.as_nested_tensor([s["response_mask"]], layout=torch.jagged)
    got = response_from_nested(full, mask).values()
    pl = s["prompts"].numel()
    torch.testing.assert_close(got, s["papo_sum_pi_squared"][pl - 1: -1])
