"""A real local Ray + TransferQueue (SimpleStorage) for trainer-stage tests, and verl-shaped batches."""

import os

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

import papo_verl

CONFIG_DIR = os.path.join(os.path.dirname(papo_verl.__file__), "config")


def compose_config(*overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="papo_trainer", overrides=list(overrides))
    with open_dict(cfg):
        cfg.trainer.v1.trainer_mode = "papo"
    return cfg


@pytest.fixture(scope="module")
def transfer_queue():
    ray = pytest.importorskip("ray")
    import transfer_queue as tq

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    tq.init(OmegaConf.create({"backend": {"storage_backend": "SimpleStorage",
                                          "SimpleStorage": {"total_storage_size": 10000, "num_data_storage_units": 1}}}))
    try:
        yield tq
    finally:
        tq.close()
        if started:
            ray.shutdown()


def make_rollouts(n_prompts=4, n=4, vocab=23, seed=0, padding_rows=1, rewards=None):
    """Per-sample dicts as verl's agent loop + compute_log_prob leave them in TransferQueue.

    Statistics are computed from real logits so that they are mutually consistent; padding rows
    mimic verl's batch balancing (shared 'pad…' uid, response_mask 0, one response token).
    """
    from papo_verl.algorithm import logit_statistics, polarity_coefficient

    g = torch.Generator().manual_seed(seed)
    samples, keys = [], []
    for p in range(n_prompts):
        for s in range(n):
            prompt_len = int(torch.randint(2, 6, (1,), generator=g))
            resp_len = int(torch.randint(1, 8, (1,), generator=g))
            total = prompt_len + resp_len
            logits = torch.randn(total, vocab, generator=g) * 2
            ids = torch.randint(0, vocab, (total,), generator=g)
            labels = torch.roll(ids, -1)
            st = logit_statistics(logits, labels, 0.9)
            score = float(rewards[p][s]) if rewards is not None else float(torch.randint(0, 2, (1,), generator=g))
            rm = torch.zeros(resp_len)
            rm[-1] = score
            # full-sequence outputs hold at position t the quantity for predicting token t+1
            resp = slice(prompt_len - 1, total - 1)
            samples.append({
                "uid": f"prompt{p}",
                "prompts": ids[:prompt_len], "responses": ids[prompt_len:], "input_ids": ids,
                "response_mask": torch.ones(resp_len, dtype=torch.int64),
                "rm_scores": rm,
                "rollout_log_probs": st.log_prob[resp].clone(),
                "old_log_probs": st.log_prob[resp].clone(),
                "entropy": st.entropy[resp].clone(),
                "papo_sum_pi_squared": st.sum_pi_squared.clone(),
                "papo_sum_pi_squared_log_pi": st.sum_pi_squared_log_pi.clone(),
                "papo_polarity_coefficient": polarity_coefficient(st.log_prob, st.entropy, st.sum_pi_squared,
                                                                  st.sum_pi_squared_log_pi),
            })
            keys.append(f"prompt{p}_{s}_{seed}")
    for i in range(padding_rows):
        pad = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in samples[0].items()}
        pad.update(uid=f"pad{seed}", responses=torch.tensor([0]), response_mask=torch.zeros(1, dtype=torch.int64),
                   rm_scores=torch.zeros(1), rollout_log_probs=torch.zeros(1), old_log_probs=torch.zeros(1),
                   entropy=torch.zeros(1))
        pad["input_ids"] = torch.cat([pad["prompts"], pad["responses"]])
        pl = pad["prompts"].numel()
        pad["papo_sum_pi_squared"] = pad["papo_sum_pi_squared"][: pl + 1].clone()
        pad["papo_sum_pi_squared_log_pi"] = pad["papo_sum_pi_squared_log_pi"][: pl + 1].clone()
        pad["papo_polarity_coefficient"] = pad["papo_polarity_coefficient"][: pl + 1].clone()
        samples.append(pad)
        keys.append(f"pad{seed}_{i}_0")
    return keys, samples


def put_rollouts(tq, keys, samples, partition_id="train"):
    from transfer_queue import KVBatchMeta

    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    tags = [{"is_padding": k.startswith("pad")} for k in keys]
    tq.kv_batch_put(keys=keys, partition_id=partition_id, fields=list_of_dict_to_tensordict(samples), tags=tags)
    return KVBatchMeta(keys=keys, tags=tags, partition_id=partition_id)


def padded(samples, key):
    return torch.nn.utils.rnn.pad_sequence([s[key] for s in samples], batch_first=True).float()


def uids(samples):
    return np.array([s["uid"] for s in samples], dtype=object)
