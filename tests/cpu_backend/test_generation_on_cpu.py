"""BatchedGenerator: one transformers generate() for many requests with per-row sampling.

Identities checked on a real tiny Qwen2 (fp32, sdpa):
* the log-probs returned for sampled tokens equal log_softmax(logits / T) of a direct, unpadded
  fp32 forward of prompt + response (< 1e-5), for every row of a left-padded mixed batch;
* greedy rows give the same tokens batched as alone; top_k=1 and a tiny top_p sample the argmax;
* max_tokens, stop tokens, ignore_eos and repetition penalty act per row.
"""

import pytest
import torch

from papo_verl.cpu.generation import BatchedGenerator, SamplingError, SamplingParams

PROMPTS = ["3 + 4", "the answer is user assistant system solve compute", "5", "yes no think because so then 12 * 9"]


def direct_log_probs(model, prompt, tokens, temperature):
    """log_softmax(logits / T)[token] for each response token, from one unpadded fp32 forward. Shape (L,)."""
    ids = torch.tensor([list(prompt) + list(tokens)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()
    return torch.log_softmax(logits / temperature, dim=-1).gather(1, torch.tensor(tokens)[:, None]).squeeze(1)


@pytest.fixture(scope="module")
def generator(tiny_model):
    model, tok = tiny_model
    return BatchedGenerator(model, [tok.eos_token_id], tok.pad_token_id)


@pytest.fixture(scope="module")
def prompts(tiny_model):
    _, tok = tiny_model
    return [tok.encode(p) for p in PROMPTS]


def test_batched_log_probs_equal_a_direct_fp32_forward(tiny_model, generator, prompts):
    model, _ = tiny_model
    assert len({len(p) for p in prompts}) == len(prompts)  # every row has a different amount of left padding
    params = [SamplingParams(temperature=1.0, max_tokens=12, ignore_eos=True),
              SamplingParams(temperature=0.6, max_tokens=9, ignore_eos=True),
              SamplingParams(temperature=0, max_tokens=12, ignore_eos=True),
              SamplingParams(temperature=1.7, top_k=20, top_p=0.9, max_tokens=12, ignore_eos=True)]
    torch.manual_seed(1)
    completions = generator.generate(prompts, params)
    for prompt, p, c in zip(prompts, params, completions):
        assert len(c.token_ids) == p.max_tokens and c.finish_reason == "length"
        expected = direct_log_probs(model, prompt, c.token_ids, p.logprob_temperature)
        assert torch.allclose(torch.tensor(c.log_probs), expected, atol=1e-5, rtol=0), (p, c)


def test_temperature_scales_the_reported_log_probs(tiny_model, generator, prompts):
    """Same tokens (greedy) reported at T=1 vs recomputed at T=0.5: log-probs are of logits / T."""
    model, _ = tiny_model
    greedy = generator.generate([prompts[0]], [SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)])[0]
    at_one = direct_log_probs(model, prompts[0], greedy.token_ids, 1.0)
    at_half = direct_log_probs(model, prompts[0], greedy.token_ids, 0.5)
    assert torch.allclose(torch.tensor(greedy.log_probs), at_one, atol=1e-5)  # greedy reports T = 1
    assert not torch.allclose(at_one, at_half, atol=1e-3)
    torch.manual_seed(0)
    cold = generator.generate([prompts[0]], [SamplingParams(temperature=0.5, max_tokens=8, ignore_eos=True)])[0]
    assert torch.allclose(torch.tensor(cold.log_probs), direct_log_probs(model, prompts[0], cold.token_ids, 0.5),
                          atol=1e-5)


def test_greedy_batched_equals_unbatched(generator, prompts):
    params = [SamplingParams(temperature=0, max_tokens=10, ignore_eos=True) for _ in prompts]
    batched = generator.generate(prompts, params)
    for prompt, p, b in zip(prompts, params, batched):
        alone = generator.generate([prompt], [p])[0]
        assert b.token_ids == alone.token_ids
        assert torch.allclose(torch.tensor(b.log_probs), torch.tensor(alone.log_probs), atol=1e-5)


@pytest.mark.parametrize("restriction", [dict(top_k=1), dict(top_p=1e-6)])
def test_top_k_1_and_tiny_top_p_sample_the_argmax(generator, prompts, restriction):
    greedy = generator.generate(prompts, [SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)] * len(prompts))
    for seed in range(3):
        torch.manual_seed(seed)
        sampled = generator.generate(
            prompts, [SamplingParams(temperature=1.3, max_tokens=10, ignore_eos=True, **restriction)] * len(prompts))
        assert [s.token_ids for s in sampled] == [g.token_ids for g in greedy]


def test_sampling_is_random_without_restrictions(generator, prompts):
    draws = set()
    for seed in range(4):
        torch.manual_seed(seed)
        out = generator.generate([prompts[0]], [SamplingParams(max_tokens=10, ignore_eos=True)])[0]
        draws.add(tuple(out.token_ids))
    assert len(draws) > 1


def test_max_tokens_and_stop_tokens_act_per_row(generator, prompts):
    greedy = generator.generate([prompts[1]], [SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)])[0]
    stop_at = greedy.token_ids[3]
    first = greedy.token_ids.index(stop_at)
    params = [SamplingParams(temperature=0, max_tokens=2, ignore_eos=True),
              SamplingParams(temperature=0, max_tokens=10, stop_token_ids=(stop_at,)),
              SamplingParams(temperature=0, max_tokens=7, ignore_eos=True)]
    out = generator.generate([prompts[0], prompts[1], prompts[2]], params)
    assert len(out[0].token_ids) == 2 and out[0].finish_reason == "length"
    assert out[1].token_ids == greedy.token_ids[: first + 1] and out[1].finish_reason == "stop"
    assert len(out[1].log_probs) == len(out[1].token_ids)
    assert len(out[2].token_ids) == 7 and out[2].finish_reason == "length"


def test_eos_ends_a_row_unless_ignore_eos(tiny_model, prompts):
    """Declare the token greedy decoding emits 4th as EOS: rows stop there, ignore_eos rows do not."""
    model, tok = tiny_model
    probe = BatchedGenerator(model, [tok.eos_token_id], tok.pad_token_id)
    greedy = probe.generate([prompts[3]], [SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)])[0]
    eos = greedy.token_ids[3]
    gen = BatchedGenerator(model, [eos], tok.pad_token_id)
    stop, keep = gen.generate([prompts[3]] * 2, [SamplingParams(temperature=0, max_tokens=8),
                                                 SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)])
    assert stop.token_ids == greedy.token_ids[: greedy.token_ids.index(eos) + 1] and stop.finish_reason == "stop"
    assert keep.token_ids == greedy.token_ids and keep.finish_reason == "length"


def test_repetition_penalty_applies_to_its_row_only(generator, prompts):
    plain = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    penalised = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, repetition_penalty=1e4)
    out = generator.generate([prompts[2], prompts[2]], [plain, penalised])
    alone = generator.generate([prompts[2]], [plain])[0]
    assert out[0].token_ids == alone.token_ids and len(set(alone.token_ids)) < len(alone.token_ids)  # repeats
    seen = set(prompts[2])
    for token in out[1].token_ids:  # a huge penalty forbids every token already in prompt or response
        assert token not in seen
        seen.add(token)


def test_logprobs_false_returns_none(generator, prompts):
    out = generator.generate([prompts[0]], [SamplingParams(max_tokens=3, logprobs=False)])[0]
    assert out.log_probs is None and len(out.token_ids) >= 1


def test_request_parsing_defaults_clamps_and_names_bad_keys():
    p = SamplingParams.from_request({"temperature": 0.7, "top_k": -1, "top_p": 1.0, "repetition_penalty": 1.0,
                                     "logprobs": True}, default_max_tokens=16, max_possible_tokens=100)
    assert (p.temperature, p.top_k, p.max_tokens, p.logprobs) == (0.7, -1, 16, True)
    for request, expected in [({"max_tokens": 500}, 40), ({"max_new_tokens": 0}, 1)]:
        parsed = SamplingParams.from_request(request, default_max_tokens=16, max_possible_tokens=40)
        assert parsed.max_tokens == expected
    assert SamplingParams.from_request({"n": 1, "seed": 3, "stop": None}, default_max_tokens=4,
                                       max_possible_tokens=9).max_tokens == 4
    for bad, key in [({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"), ({"n": 2}, "n"),
                     ({"frobnicate": 1}, "frobnicate"), ({"presence_penalty": 0.5}, "presence_penalty")]:
        with pytest.raises(SamplingError, match=f"sampling_params.{key}"):
            SamplingParams.from_request(bad, default_max_tokens=4, max_possible_tokens=9)
    with pytest.raises(SamplingError, match="no room to generate"):
        SamplingParams.from_request({}, default_max_tokens=4, max_possible_tokens=0)


def test_a_batch_that_would_overrun_the_context_is_split(tiny_model, prompts):
    model, tok = tiny_model
    short, long_ = prompts[2], prompts[1]
    limit = len(long_) + 4
    gen = BatchedGenerator(model, [tok.eos_token_id], tok.pad_token_id, max_model_len=limit)
    params = [SamplingParams(temperature=0, max_tokens=limit - len(short), ignore_eos=True),
              SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)]
    assert gen._fitting_groups([short, long_], params) == [[0], [1]]  # together: len(long) + (limit - len(short))
    together = gen.generate([short, long_], params)
    alone = [gen.generate([p], [q])[0] for p, q in zip([short, long_], params)]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert [len(c.token_ids) for c in together] == [limit - len(short), 4]
    unlimited = BatchedGenerator(model, [tok.eos_token_id], tok.pad_token_id)
    assert unlimited._fitting_groups([short, long_], params) == [[0, 1]]
