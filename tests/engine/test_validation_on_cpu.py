"""Validation of polarity in the actor engine (docs/algorithm.md §4) on a real FSDP2 engine over gloo.

A real :class:`~papo_verl.integration.engine.PapoFSDPEngineWithLMHead` (verl's FSDP2 set-up, optimizer and
``forward_backward_batch``) on a tiny Qwen2 runs in spawned ranks; the main process checks it against
float64 autograd on the same weights:

* the branch response ``−∇H̄·∇L_S`` equals the float64 value, and an explicit trial step
  ``θ − η∇L_S`` changes ``H̄`` by ``η r_S`` to first order (agreement improves as η shrinks);
* it is the same however the batch is split into micro-batches and data-parallel ranks;
* after an optimizer step, the same batch's entropies at θ_new equal an explicit forward, and
  ``∇H̄(θ_old)·(θ_new − θ_old)`` equals the float64 dot product.
"""

import os
import pickle
import queue as queue_module
import socket

import pytest
import torch
import torch.multiprocessing as mp

N_ROWS, PROMPT_LEN, RESPONSE_LEN = 8, 5, 7
OPTIONS = {"backend": "torch", "chunk_size": None, "entropy_needs_grad": False, "correction": "exact"}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_batch(vocab, seed=0):
    """Left-padded prompts, right-padded responses, base advantages and polarity signs (padded tensors)."""
    g = torch.Generator().manual_seed(seed)
    plen = torch.randint(2, PROMPT_LEN + 1, (N_ROWS,), generator=g)
    rlen = torch.randint(2, RESPONSE_LEN + 1, (N_ROWS,), generator=g)
    prompts = torch.zeros(N_ROWS, PROMPT_LEN, dtype=torch.long)
    responses = torch.zeros(N_ROWS, RESPONSE_LEN, dtype=torch.long)
    attention = torch.zeros(N_ROWS, PROMPT_LEN + RESPONSE_LEN, dtype=torch.long)
    response_mask = torch.zeros(N_ROWS, RESPONSE_LEN)
    for i in range(N_ROWS):
        prompts[i, PROMPT_LEN - plen[i]:] = torch.randint(3, vocab, (int(plen[i]),), generator=g)
        responses[i, : rlen[i]] = torch.randint(3, vocab, (int(rlen[i]),), generator=g)
        attention[i, PROMPT_LEN - plen[i]: PROMPT_LEN + rlen[i]] = 1
        response_mask[i, : rlen[i]] = 1
    advantages = torch.randn(N_ROWS, generator=g).unsqueeze(1) * response_mask
    polarity = (torch.sign(torch.randn(N_ROWS, RESPONSE_LEN, generator=g)) * response_mask).to(torch.int8)
    return dict(prompts=prompts, responses=responses, attention_mask=attention, response_mask=response_mask,
                advantages=advantages, polarity=polarity)


def _engine_worker(rank, world, port, folder, micro_batch, queue):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from tensordict import TensorDict

        import verl  # noqa: F401
        from papo_verl.integration.engine import STATS_FLAG, _policy_gradient_loss
        from papo_verl.integration.fields import (VAL_ADVANTAGES_FIELD, VAL_BRANCH_KEY, VAL_FIRST_ORDER_KEY, VAL_OUTPUT_PREFIX,
                                      VAL_POLARITY_FIELD, VALIDATE_FLAG)
        from verl.trainer.config import CheckpointConfig
        from verl.utils import tensordict_utils as tu
        from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig, HFModelConfig
        from verl.workers.engine.base import EngineRegistry
        from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding

        model = HFModelConfig(path=folder, override_config={"attn_implementation": "sdpa"},
                              enable_gradient_checkpointing=False, use_remove_padding=True)
        model.model_type = "language_model"
        fp32 = {"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"}
        engine_cfg = FSDPEngineConfig(strategy="fsdp2", use_torch_compile=False, mixed_precision=fp32,
                                      micro_batch_size_per_gpu=micro_batch, infer_micro_batch_size_per_gpu=micro_batch)
        engine = EngineRegistry.new(model_type="language_model", backend="fsdp2", model_config=model,
                                    engine_config=engine_cfg, optimizer_config=FSDPOptimizerConfig(lr=3e-2),
                                    checkpoint_config=CheckpointConfig())
        engine.initialize()

        def full_params():
            return {n: p.full_tensor().detach().clone() for n, p in engine.module.named_parameters()}

        b = make_batch(engine.module.config.vocab_size)
        rows = slice(rank * N_ROWS // world, (rank + 1) * N_ROWS // world)
        input_ids = torch.cat([b["prompts"], b["responses"]], 1)[rows]
        attention = b["attention_mask"][rows]
        td = TensorDict({"input_ids": input_ids, "attention_mask": attention,
                         "position_ids": (attention.cumsum(1) - 1).clamp_min(0), "response_mask": b["response_mask"][rows],
                         "prompts": b["prompts"][rows], "responses": b["responses"][rows],
                         VAL_ADVANTAGES_FIELD: b["advantages"][rows], VAL_POLARITY_FIELD: b["polarity"][rows]},
                        batch_size=[N_ROWS // world])
        td = left_right_2_no_padding(td)
        tu.assign_non_tensor(td, temperature=1.0, use_remove_padding=True, use_dynamic_bsz=False,
                             micro_batch_size_per_gpu=micro_batch, max_token_len_per_gpu=4096, use_fused_kernels=False,
                             calculate_entropy=True, compute_loss=False)
        before = full_params()
        tu.assign_non_tensor_data(td, VALIDATE_FLAG, {"stage": "branch_response"})
        with engine.eval_mode():
            response = engine.infer_batch(td)["model_output"][VAL_BRANCH_KEY][0]
        with engine.train_mode():  # one optimizer step on the whole batch's policy-gradient loss
            engine.train_batch(td, loss_function=_policy_gradient_loss("all"))
        after = full_params()
        tu.assign_non_tensor_data(td, VALIDATE_FLAG, {"stage": "after_update"})
        tu.assign_non_tensor_data(td, STATS_FLAG, OPTIONS)
        with engine.eval_mode():
            out = engine.infer_batch(td)["model_output"]
        entropy = no_padding_2_padding(out[VAL_OUTPUT_PREFIX + "entropy"], td)  # (rows, response_len)
        # plain pickle: torch's multiprocessing pickler would share the tensors' memory with a process that exits
        queue.put(pickle.dumps((rank, {"response": response, "first_order": float(out[VAL_FIRST_ORDER_KEY][0, 0]),
                          "entropy_after": entropy,
                          "before": before if rank == 0 else None, "after": after if rank == 0 else None})))
    finally:
        dist.destroy_process_group()


def run_ranks(folder, world, micro_batch):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_engine_worker, args=(r, world, port, folder, micro_batch, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results = {}
    try:
        while len(results) < world:
            try:
                rank, result = pickle.loads(queue.get(timeout=5))
                results[rank] = result
            except queue_module.Empty:  # stop waiting as soon as a rank died or all exited
                if any(p.exitcode not in (None, 0) for p in procs) or all(p.exitcode is not None for p in procs):
                    break
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs) and len(results) == world, [p.exitcode for p in procs]
    return [results[r] for r in range(world)]


# ------------------------------------------------------------------------------------------------ float64
def reference_model(folder, params):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").double()
    model.load_state_dict({k: v.double() for k, v in params.items()}, strict=False)
    return model


def token_tensors(model, batch):
    """``(H, log π)`` of every response token, ``[N_ROWS, RESPONSE_LEN]`` float64 (0 on padding)."""
    entropy = torch.zeros(N_ROWS, RESPONSE_LEN, dtype=torch.float64)
    log_prob = torch.zeros_like(entropy)
    entropy_rows, logp_rows = [], []
    for i in range(N_ROWS):
        ids = torch.cat([batch["prompts"][i], batch["responses"][i]])[batch["attention_mask"][i].bool()]
        n_resp = int(batch["response_mask"][i].sum())
        logits = model(input_ids=ids.unsqueeze(0), use_cache=False).logits[0]
        z = torch.log_softmax(logits[len(ids) - n_resp - 1: len(ids) - 1], -1)
        entropy_rows.append(-(z.exp() * z).sum(-1))
        logp_rows.append(z.gather(1, ids[len(ids) - n_resp:].unsqueeze(1)).squeeze(1))
    for i in range(N_ROWS):
        n = len(entropy_rows[i])
        entropy = entropy.index_put((torch.full((n,), i), torch.arange(n)), entropy_rows[i])
        log_prob = log_prob.index_put((torch.full((n,), i), torch.arange(n)), logp_rows[i])
    return entropy, log_prob


def mean_entropy_and_losses(model, batch):
    entropy, log_prob = token_tensors(model, batch)
    mask = batch["response_mask"].double()
    n = mask.sum()
    adv = batch["advantages"].double() * mask
    subsets = {"all": adv, "expand": adv * (batch["polarity"] > 0), "positive": adv * (adv > 0)}
    losses = {k: -(w * log_prob).sum() / n for k, w in subsets.items()}
    return (entropy * mask).sum() / n, losses


def flat_grad(value, model):
    grads = torch.autograd.grad(value, list(model.parameters()), retain_graph=True, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, model.parameters())])


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from papo_verl.demo.tiny import build_tiny_assets

    folder = str(tmp_path_factory.mktemp("tiny_validation"))
    build_tiny_assets(folder, num_layers=1, hidden_size=32)
    return folder


@pytest.fixture(scope="module")
def single_rank(tiny_folder):
    return run_ranks(tiny_folder, world=1, micro_batch=4)[0]


@pytest.mark.slow
def test_branch_response_equals_float64_autograd_and_a_trial_step(tiny_folder, single_rank):
    batch = make_batch(single_rank["before"]["model.embed_tokens.weight"].shape[0])
    model = reference_model(tiny_folder, single_rank["before"])
    mean_h, losses = mean_entropy_and_losses(model, batch)
    grad_h = flat_grad(mean_h, model)
    expected = [float(-grad_h @ flat_grad(losses[k], model)) for k in ("all", "expand", "positive")]
    got = single_rank["response"].tolist()
    assert got[3] == pytest.approx(float(mean_h.detach()), rel=1e-6)
    for g, e in zip(got[:3], expected):
        assert g == pytest.approx(e, rel=2e-3, abs=1e-9)
    assert len({round(v, 12) for v in expected}) == 3  # three different subsets, three different responses

    # an explicit SGD step θ − η∇L on the A > 0 tokens alone: ΔH̄/η → r as η → 0 (first order)
    params = list(model.parameters())
    grad_l = flat_grad(losses["positive"], model)
    theta = torch.cat([p.detach().reshape(-1) for p in params])
    errors = []
    for eta in (3e-2, 3e-3, 3e-4):
        step = theta - eta * grad_l
        torch.nn.utils.vector_to_parameters(step, params)
        with torch.no_grad():
            moved, _ = mean_entropy_and_losses(model, batch)
        errors.append(abs((float(moved) - float(mean_h.detach())) / eta - expected[2]))
    torch.nn.utils.vector_to_parameters(theta, params)
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.05 * abs(expected[2])


@pytest.mark.slow
@pytest.mark.parametrize("world,micro_batch", [(1, 8), (2, 2)])
def test_branch_response_does_not_depend_on_micro_batches_or_ranks(tiny_folder, single_rank, world, micro_batch):
    results = run_ranks(tiny_folder, world=world, micro_batch=micro_batch)
    for result in results:
        torch.testing.assert_close(result["response"], single_rank["response"], rtol=1e-5, atol=1e-10)
        assert result["first_order"] == pytest.approx(single_rank["first_order"], rel=1e-4)


@pytest.mark.slow
def test_same_batch_after_the_update_equals_an_explicit_forward(tiny_folder, single_rank):
    batch = make_batch(single_rank["before"]["model.embed_tokens.weight"].shape[0])
    old = reference_model(tiny_folder, single_rank["before"])
    mean_h, _ = mean_entropy_and_losses(old, batch)
    grad_h = flat_grad(mean_h, old)
    delta = torch.cat([(single_rank["after"][n].double() - single_rank["before"][n].double()).reshape(-1)
                       for n, _ in old.named_parameters()])
    assert float(delta.abs().max()) > 0  # the optimizer moved the weights
    assert single_rank["first_order"] == pytest.approx(float(grad_h @ delta), rel=1e-3)
    new = reference_model(tiny_folder, single_rank["after"])
    with torch.no_grad():
        entropy_new, _ = token_tensors(new, batch)
    mask = batch["response_mask"].bool()
    got = single_rank["entropy_after"][:, :RESPONSE_LEN].double()
    torch.testing.assert_close(got[mask], entropy_new[mask], rtol=1e-4, atol=1e-5)
