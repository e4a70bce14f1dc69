"""papo_verl.kernels.logit_sums: chunk sizing (the sums themselves: test_dispatch_on_cpu.py, through the dispatcher)."""

import torch

from papo_verl.kernels.logit_sums import auto_chunk_size, default_chunk_size


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
