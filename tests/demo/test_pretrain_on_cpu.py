"""Pre-training smoke test (the loss falls on real traces with a real HF model) and the evaluation helper."""

import math

import pytest

from papo_verl.demo.evaluate import evaluate_policy, pass_at_k
from papo_verl.demo.pretrain import PretrainConfig, pretrain, trace_stream
from papo_verl.demo.task import TaskConfig, iter_problems


def test_pass_at_k_estimator():
    assert pass_at_k(8, 0, 1) == 0.0 and pass_at_k(8, 8, 4) == 1.0
    assert pass_at_k(8, 2, 1) == pytest.approx(0.25)
    assert pass_at_k(8, 1, 8) == 1.0 and pass_at_k(8, 7, 2) == 1.0
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - (3 / 4) * (2 / 3))
    with pytest.raises(ValueError, match="exceeds"):
        pass_at_k(4, 1, 8)


def test_pretraining_lowers_the_loss_and_the_model_evaluates(tmp_path, demo_tokenizer_dir, demo_problems):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from papo_verl.demo import tiny

    tok = AutoTokenizer.from_pretrained(demo_tokenizer_dir)
    model_dir = str(tmp_path / "policy")
    tok.save_pretrained(model_dir)
    tiny.build_model(model_dir, tok, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                     intermediate_size=64, max_position_embeddings=128)
    before = {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(model_dir).state_dict().items()}
    cfg = PretrainConfig(steps=30, batch_size=16, lr=3e-3, warmup_steps=3, threads=1)
    stream = trace_stream(iter_problems(TaskConfig(), seed=0), seed=0, max_steps=2)
    result = pretrain(model_dir, tok, stream, cfg, log_every=10)
    assert len(result.losses) == 3 and all(math.isfinite(x) for x in result.losses)
    assert result.losses[-1] < 0.7 * result.losses[0], result.losses  # random init starts near log(vocab)
    assert result.first_loss > math.log(len(tok)) - 1.0
    after = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()  # saved back for from_pretrained
    assert any(not (after[k] == before[k]).all() for k in before)

    ev = evaluate_policy(model_dir, demo_problems[:4], n_samples=4, max_new_tokens=12, threads=1)
    assert ev.n_problems == 4 and set(ev.pass_at) == {1, 2, 4}
    assert 0.0 <= ev.pass_at[1] <= ev.pass_at[2] <= ev.pass_at[4] <= 1.0
    assert 0.0 < ev.mean_entropy < math.log(len(tok)) + 1e-6
    assert 1 <= ev.mean_response_tokens <= 12 and 0.0 <= ev.well_formed <= 1.0
    assert ev.solvable_distinct >= 2


def test_stream_that_runs_dry_is_reported(tmp_path, demo_tokenizer_dir, demo_problems):
    from transformers import AutoTokenizer

    from papo_verl.demo import tiny

    tok = AutoTokenizer.from_pretrained(demo_tokenizer_dir)
    model_dir = str(tmp_path / "policy")
    tok.save_pretrained(model_dir)
    tiny.build_model(model_dir, tok, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32)
    with pytest.raises(ValueError, match="ran out at step 1"):
        pretrain(model_dir, tok, trace_stream(demo_problems[:5], seed=0), PretrainConfig(steps=3, batch_size=4))
