"""Builders of consistent PAPO inputs: statistics come from real logits, not independent noise."""

import numpy as np
import torch

from papo_verl.algorithm import logit_statistics


def make_batch(n_groups=5, group_size=4, max_len=9, vocab=11, seed=0, zero_var_groups=(), singleton=False):
    g = torch.Generator().manual_seed(seed)
    sizes = [group_size] * n_groups
    if singleton:
        sizes.append(1)
    uids = np.array([f"uid-{i}" for i, s in enumerate(sizes) for _ in range(s)], dtype=object)
    b = len(uids)
    lengths = torch.randint(1, max_len + 1, (b,), generator=g)
    mask = (torch.arange(max_len).unsqueeze(0) < lengths.unsqueeze(1)).float()
    scores = torch.randint(0, 2, (b,), generator=g).float()
    for grp in zero_var_groups:
        scores[torch.as_tensor(uids == f"uid-{grp}")] = 1.0
    rewards = torch.zeros(b, max_len)
    rewards[torch.arange(b), lengths - 1] = scores
    logits = torch.randn(b * max_len, vocab, generator=g) * 2.5
    labels = torch.randint(0, vocab, (b * max_len,), generator=g)
    s = logit_statistics(logits, labels)
    stats = {k: v.reshape(b, max_len) * mask for k, v in zip(("old_log_probs", "entropys", "sum_pi_squared",
                                                              "sum_pi_squared_log_pi"), s)}
    return dict(token_level_rewards=rewards, response_mask=mask, index=uids, **stats)
