"""Tensor-parallel (DTensor vocabulary shards) and Ulysses sequence-parallel statistics, 2 gloo ranks."""

import os
import socket
import types

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

VOCAB, TOTAL = 37, 23


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _brute(logits, temperature):
    z = logits.double() / temperature.double().unsqueeze(-1)
    logp = torch.log_softmax(z, -1)
    pi = logp.exp()
    return -(pi * logp).sum(-1), (pi * pi).sum(-1), (pi * pi * logp).sum(-1)


def _tp_worker(rank, world, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import Shard, distribute_tensor

        import verl  # noqa: F401
        from papo_verl.integration.engine import token_statistics

        g = torch.Generator().manual_seed(0)
        logits = torch.randn(TOTAL, VOCAB, generator=g) * 3  # same on every rank
        temperature = torch.linspace(0.6, 1.4, TOTAL)
        mesh = init_device_mesh("cpu", (world,))
        sharded = distribute_tensor(logits, mesh, [Shard(1)])  # vocabulary split (37 = 19 + 18)
        got = token_statistics(sharded, temperature, {"backend": "torch", "chunk_size": 5})
        ref = _brute(logits, temperature)
        err = max(float((a.double() - b).abs().max()) for a, b in zip(got, ref))
        queue.put((rank, err))
    finally:
        dist.destroy_process_group()


def _sp_worker(rank, world, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from tensordict import TensorDict

        import verl  # noqa: F401
        from papo_verl.integration.engine import STATS_FLAG, SUM_PI_SQUARED_KEY, SUM_PI_SQUARED_LOG_PI_KEY, \
            PapoFSDPEngineWithLMHead
        from verl.utils import tensordict_utils as tu
        from verl.utils import torch_functional as verl_F
        from verl.utils.dataset.dataset_utils import DatasetPadMode
        from verl.utils.ulysses import set_ulysses_sequence_parallel_group

        set_ulysses_sequence_parallel_group(dist.group.WORLD)
        g = torch.Generator().manual_seed(1)
        table = torch.randn(VOCAB, VOCAB, generator=g) * 2  # "model": logits = table[token id]
        seqs = [torch.randint(0, VOCAB, (n,), generator=g) for n in (5, 9, 4)]  # 18 tokens: SP pads to 18 or 20
        ids = torch.nested.as_nested_tensor(seqs, layout=torch.jagged)
        pos = torch.nested.as_nested_tensor([torch.arange(len(s)) for s in seqs], layout=torch.jagged)
        td = TensorDict({"input_ids": ids, "position_ids": pos}, batch_size=[len(seqs)])
        tu.assign_non_tensor(td, temperature=0.8, use_remove_padding=True, pad_mode=DatasetPadMode.NO_PADDING,
                             use_fused_kernels=False, calculate_entropy=True)
        tu.assign_non_tensor_data(td, STATS_FLAG, {"backend": "torch", "chunk_size": 4})
        eng = object.__new__(PapoFSDPEngineWithLMHead)
        eng.use_ulysses_sp, eng.ulysses_sequence_parallel_size = True, world
        eng.pad_to_length, eng.pad_to_length_bucket = False, 0
        eng.module = types.SimpleNamespace(config=types.SimpleNamespace())
        eng.engine_config = types.SimpleNamespace(entropy_from_logits_with_chunking=False, entropy_checkpointing=False)
        eng.compute_entropy_from_logits = verl_F.entropy_from_logits
        model_inputs, output_args = eng.prepare_model_inputs(td)
        local_ids = model_inputs["input_ids"]  # (1, local tokens): this rank's shard of the packed sequence
        output = types.SimpleNamespace(logits=table[local_ids])
        mo = eng.prepare_model_outputs(output=output, output_args=output_args, micro_batch=td,
                                       logits_processor_func=None)
        full = torch.cat(seqs)
        ref = _brute(table[full], torch.full((len(full),), 0.8))
        err = max(float((mo[k].values().double() - r).abs().max()) for k, r in
                  zip(("entropy", SUM_PI_SQUARED_KEY, SUM_PI_SQUARED_LOG_PI_KEY), ref))
        queue.put((rank, err))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns two torch.distributed ranks
@pytest.mark.parametrize("worker", [_tp_worker, _sp_worker], ids=["tensor_parallel", "ulysses_sp"])
def test_two_rank_statistics_equal_brute_force(worker):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=240) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    for rank, err in results:
        assert err < 2e-5, (rank, err)
