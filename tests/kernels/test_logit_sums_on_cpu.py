"""papo_verl.kernels.logit_sums: chunk sizing and the shift-invariant partial sums of vocabulary shards."""

import torch

from papo_verl.kernels.logit_sums import auto_chunk_size, default_chunk_size, finalize_logit_sums, \
    logit_partial_sums, merge_logit_partial_sums

from .helpers import brute_force, make_logits


def test_vocabulary_shards_merge_exactly():
    """Online log-sum-exp merge: stats of the whole vocabulary = merge of disjoint shards (TP path)."""
    logits, _ = make_logits(13, 1000, seed=11, scale=5.0)
    whole = finalize_logit_sums(logit_partial_sums(logits.clone()))
    for got, want in zip(whole[1:], brute_force(logits, None)[1:]):
        torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=2e-6)
    for cuts in ([500], [1, 999], [137, 600, 999]):
        bounds = [0, *cuts, 1000]
        parts = torch.stack([logit_partial_sums(logits[:, a:b].clone()) for a, b in zip(bounds, bounds[1:])])
        merged = finalize_logit_sums(merge_logit_partial_sums(parts))
        for got, want in zip(merged, whole):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_default_chunk_bounds_the_float32_temporaries():
    assert default_chunk_size(151_936) * 151_936 <= 1 << 22
    assert default_chunk_size(256_000) >= 1
    assert default_chunk_size(7) == (1 << 22) // 7


def test_cpu_chunk_is_cache_sized_and_bounded(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert auto_chunk_size(151_936, cpu) * 151_936 <= 1 << 19
    assert auto_chunk_size(1 << 21, cpu) == 1  # a huge vocabulary still works, one row at a time
    assert auto_chunk_size(7, cpu) == (1 << 19) // 7
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)  # 2**19 logits per thread, at most 8 threads
    assert auto_chunk_size(7, cpu) == (8 << 19) // 7
    assert auto_chunk_size(151_936, torch.device("meta")) * 151_936 <= 1 << 22  # GPUs: default_chunk_size
