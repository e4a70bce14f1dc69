"""PapoFSDPEngineWithLMHead through verl's real prepare_model_inputs → HF forward → prepare_model_outputs
on a tiny Qwen2: the statistics equal a float64 brute force of the same logits (rmpad on/off, T ≠ 1)."""

import types

import pytest
import torch
from tensordict import TensorDict

import verl  # noqa: F401
from papo_verl.integration.engine import ENTROPY_KEY, POLARITY_KEY, STATS_FLAG, SUM_PI_SQUARED_KEY, SUM_PI_SQUARED_LOG_PI_KEY, \
    PapoFSDPEngineWithLMHead
from papo_verl.demo.tiny import build_tiny_assets
from verl.utils import tensordict_utils as tu
from verl.utils import torch_functional as verl_F
from verl.utils.dataset.dataset_utils import DatasetPadMode
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

OPTIONS = {"backend": "torch", "chunk_size": 3, "entropy_needs_grad": False}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    folder = str(tmp_path_factory.mktemp("tiny"))
    build_tiny_assets(folder, num_layers=1, hidden_size=32)
    m = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").float().eval()
    return m


def engine_stub(cls, model):
    """The engine without FSDP set-up: only the attributes the input/output preparation touches."""
    eng = object.__new__(cls)
    eng.use_ulysses_sp = False
    eng.ulysses_sequence_parallel_size = 1
    eng.pad_to_length = False
    eng.pad_to_length_bucket = 0
    eng.module = model
    eng.engine_config = types.SimpleNamespace(entropy_from_logits_with_chunking=False, entropy_checkpointing=False,
                                              entropy_from_logits_chunk_size=2048)
    eng.compute_entropy_from_logits = verl_F.entropy_from_logits
    return eng


def sequences(vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(3, vocab, (n,), generator=g) for n in (7, 3, 11, 5)]
    seqs.append(torch.full((16,), 2))  # a verl-style synthetic padding row: eos tokens only
    return seqs


def micro_batch(seqs, temperature, rmpad, calculate_entropy=True, stats=OPTIONS):
    ids = torch.nested.as_nested_tensor(seqs, layout=torch.jagged)
    pos = torch.nested.as_nested_tensor([torch.arange(len(s)) for s in seqs], layout=torch.jagged)
    td = TensorDict({"input_ids": ids, "position_ids": pos}, batch_size=[len(seqs)])
    tu.assign_non_tensor(td, temperature=temperature, use_remove_padding=rmpad, pad_mode=DatasetPadMode.NO_PADDING,
                         use_fused_kernels=False, calculate_entropy=calculate_entropy, pad_token_id=0)
    if stats is not None:
        tu.assign_non_tensor_data(td, STATS_FLAG, stats)
    return td


def forward(eng, model, td):
    model_inputs, output_args = eng.prepare_model_inputs(td)
    output = model(**model_inputs, use_cache=False)
    return eng.prepare_model_outputs(output=output, output_args=output_args, micro_batch=td, logits_processor_func=None)


def brute_force(model, seqs, temperature):
    """Per sequence, alone (no packing, no padding): float64 statistics of logits / T."""
    out = {"entropy": [], "s2": [], "s2l": [], "logp": []}
    with torch.no_grad():
        for s in seqs:
            z = model(input_ids=s.unsqueeze(0), use_cache=False).logits[0].double() / temperature
            logp = torch.log_softmax(z, -1)
            pi = logp.exp()
            out["entropy"].append(-(pi * logp).sum(-1))
            out["s2"].append((pi * pi).sum(-1))
            out["s2l"].append((pi * pi * logp).sum(-1))
            out["logp"].append(logp.gather(1, torch.roll(s, -1).unsqueeze(-1)).squeeze(-1))
    out = {k: torch.cat(v) for k, v in out.items()}
    # the polarity coefficient P_t = Σπ²(log π + H) − π_k(log π_k + H), float64
    out["P"] = out["s2l"] + out["entropy"] * out["s2"] - out["logp"].exp() * (out["logp"] + out["entropy"])
    return out


@pytest.mark.parametrize("rmpad", [True, False])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_statistics_equal_float64_brute_force(model, rmpad, temperature):
    seqs = sequences(model.config.vocab_size)
    eng = engine_stub(PapoFSDPEngineWithLMHead, model)
    with torch.no_grad():
        mo = forward(eng, model, micro_batch(seqs, temperature, rmpad))
    ref = brute_force(model, seqs, temperature)
    tol = dict(rtol=2e-4, atol=2e-5)
    for key, name in (("entropy", "entropy"), (SUM_PI_SQUARED_KEY, "s2"), (SUM_PI_SQUARED_LOG_PI_KEY, "s2l")):
        got = mo[key]
        assert got.is_nested and torch.equal(got.offsets(), mo["log_probs"].offsets())
        torch.testing.assert_close(got.values().double(), ref[name], **tol, msg=key)
    # the last position of each sequence predicts nothing (packed: verl's roll wraps into the next
    # sequence); response-aligned outputs never read it
    inner = torch.cat([torch.arange(len(s)) < len(s) - 1 for s in seqs])
    torch.testing.assert_close(mo["log_probs"].values().double()[inner], ref["logp"][inner], **tol)
    torch.testing.assert_close(mo[POLARITY_KEY].values().double()[inner], ref["P"][inner], rtol=1e-4, atol=2e-5)

    # verl's own path on the same micro-batch: identical log-probs, the same entropy
    base = engine_stub(FSDPEngineWithLMHead, model)
    with torch.no_grad():
        theirs = forward(base, model, micro_batch(seqs, temperature, rmpad, stats=None))
    torch.testing.assert_close(mo["log_probs"].values(), theirs["log_probs"].values(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mo["entropy"].values(), theirs["entropy"].values(), rtol=1e-5, atol=1e-5)
    assert SUM_PI_SQUARED_KEY not in theirs


def test_without_the_flag_the_subclass_is_verls_engine(model):
    seqs = sequences(model.config.vocab_size, seed=1)
    with torch.no_grad():
        ours = forward(engine_stub(PapoFSDPEngineWithLMHead, model), model, micro_batch(seqs, 1.0, True, stats=None))
        theirs = forward(engine_stub(FSDPEngineWithLMHead, model), model, micro_batch(seqs, 1.0, True, stats=None))
    assert set(ours) == set(theirs)
    for k in ours:
        assert torch.equal(ours[k].values(), theirs[k].values())


def test_update_pass_keeps_verls_entropy_when_it_needs_a_gradient(model):
    seqs = sequences(model.config.vocab_size, seed=2)
    eng = engine_stub(PapoFSDPEngineWithLMHead, model)
    needs_grad = {**OPTIONS, "entropy_needs_grad": True}
    with torch.enable_grad():
        mo = forward(eng, model, micro_batch(seqs, 1.0, True, stats=needs_grad))
    assert mo["entropy"].requires_grad and mo["log_probs"].requires_grad
    assert not mo[SUM_PI_SQUARED_KEY].requires_grad
    # entropy_coeff == 0: our single pass serves the entropy, detached
    with torch.enable_grad():
        mo2 = forward(eng, model, micro_batch(seqs, 1.0, True))
    assert not mo2["entropy"].requires_grad and mo2["log_probs"].requires_grad
    torch.testing.assert_close(mo2["entropy"].values(), mo["entropy"].values().detach(), rtol=1e-5, atol=1e-5)
    # entropy not requested (calculate_entropy=False): PAPO's pass still provides it under its own key
    with torch.no_grad():
        mo3 = forward(eng, model, micro_batch(seqs, 1.0, True, calculate_entropy=False))
    assert "entropy" not in mo3 and ENTROPY_KEY in mo3
    torch.testing.assert_close(mo3[ENTROPY_KEY].values(), mo2["entropy"].values())


def test_fused_kernels_are_refused(model):
    seqs = sequences(model.config.vocab_size)
    td = micro_batch(seqs, 1.0, True)
    tu.assign_non_tensor(td, use_fused_kernels=True)
    eng = engine_stub(PapoFSDPEngineWithLMHead, model)
    with pytest.raises(RuntimeError, match="use_fused_kernels"):
        eng.prepare_model_outputs(output=types.SimpleNamespace(logits=None), output_args={}, micro_batch=td,
                                  logits_processor_func=None)


def test_registry_returns_the_subclass_for_fsdp_and_fsdp2():
    from verl.workers.engine.base import EngineRegistry

    for backend in ("fsdp", "fsdp2"):
        assert EngineRegistry.get_engine_cls("language_model", backend) is PapoFSDPEngineWithLMHead
    assert EngineRegistry.get_engine_cls("value_model", "fsdp") is not PapoFSDPEngineWithLMHead
