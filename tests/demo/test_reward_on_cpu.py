"""The demo verifier and verl reward function: exact identities on valid, invalid and malformed answers."""

import json
import time

import pytest

from papo_verl.demo.reward import (DATA_SOURCE, answer_key, check_solution, compute_score, parse_ground_truth,
                                   parse_steps, ParseError)


def gt(numbers, target):
    return json.dumps({"numbers": numbers, "target": target})


def score(text, numbers, target, **kw):
    return compute_score(data_source=DATA_SOURCE, solution_str=text, ground_truth=gt(numbers, target), **kw)


@pytest.mark.parametrize("text,numbers,target", [
    ("7+9=16", [3, 7, 9], 16),
    ("9+7=16", [3, 7, 9], 16),
    ("9-3=6\n6*7=42", [3, 7, 9], 42),
    ("3*4=12\n12+4=16", [3, 4, 4], 16),  # equal values: each occurrence usable once
    ("  7 + 9 = 16  \n", [3, 7, 9], 16),  # spaces and a trailing newline
    ("9-3=6; 6+7=13", [3, 7, 9], 13),
    ("9-3=6, 6+7=13", [3, 7, 9], 13),
    ("8-8=0\n0+5=5", [8, 8, 5], 5),  # zero results are allowed
    ("2+3=5\n9*4=36\n36-5=31", [2, 3, 9, 4], 31),
    ("7+9=16<|im_end|>", [3, 7, 9], 16),  # an end-of-turn marker left in by the caller
])
def test_valid_answers_score_one(text, numbers, target):
    out = score(text, numbers, target)
    assert out == {"score": 1.0, "acc": 1.0, "well_formed": 1.0}
    assert check_solution(text.replace("<|im_end|>", ""), numbers, target).reason == "correct"


@pytest.mark.parametrize("text,numbers,target,reason", [
    ("7+9=15", [3, 7, 9], 15, "wrong arithmetic"),
    ("8+8=16", [3, 8, 9], 16, "not available"),  # a number used twice
    ("10+6=16", [3, 7, 9], 16, "not available"),  # a number that is not given
    ("3+3=6\n6+6=12", [3, 3], 12, "not available"),  # a step result used twice
    ("3+7=10", [3, 7, 9], 16, "not the target"),
    ("3*7=21\n21-9=12", [3, 7, 9], 16, "not the target"),
    ("9-3=6\n3+7=10", [3, 7, 9], 10, "not available"),  # 3 already consumed
])
def test_invalid_answers_score_zero_and_say_why(text, numbers, target, reason):
    out = score(text, numbers, target)
    assert out == {"score": 0.0, "acc": 0.0, "well_formed": 1.0}
    assert reason in check_solution(text, numbers, target).reason


@pytest.mark.parametrize("text", [
    "", "   \n ", "16", "the answer is 16", "7+9", "7+9=16 because", "=16", "-3+19=16", "07+9=16", "7/9=1",
    "7+9=16\nso the answer is 16", "7 ++ 9 = 16", "7+9==16", "(7+9)=16", "7+9=1e1", "٧+٩=١٦",
    "<|im_end|>7+9=16",
])
def test_malformed_answers_score_zero(text):
    out = score(text, [3, 7, 9], 16)
    assert out == {"score": 0.0, "acc": 0.0, "well_formed": 0.0}
    with pytest.raises(ParseError):
        parse_steps(text)


def test_operator_set_comes_from_extra_info():
    assert score("3*4=12", [3, 4], 12)["score"] == 1.0
    assert score("3*4=12", [3, 4], 12, extra_info={"ops": "+-"})["score"] == 0.0
    assert "not allowed" in check_solution("3*4=12", [3, 4], 12, ops="+-").reason


def test_format_bonus_only_for_well_formed_wrong_answers():
    assert score("3+7=10", [3, 7, 9], 16, format_bonus=0.1)["score"] == pytest.approx(0.1)
    assert score("nonsense", [3, 7, 9], 16, format_bonus=0.1)["score"] == 0.0
    assert score("7+9=16", [3, 7, 9], 16, format_bonus=0.1)["score"] == 1.0


def test_deterministic_and_bounded_on_adversarial_text():
    text = "9-3=6\n6*7=42"
    assert all(score(text, [3, 7, 9], 42) == score(text, [3, 7, 9], 42) for _ in range(5))
    t = time.time()
    assert score("1+1=2\n" * 5000, [1, 1], 2)["score"] == 0.0  # too long: rejected up front
    assert score("9" * 10000 + "+1=1", [1], 2)["score"] == 0.0
    assert score("1+0=1\n" * 15 + "1+1=2", [1, 0] * 16, 2)["score"] == 1.0  # long but valid: greedy key
    assert time.time() - t < 2.0
    assert score("__import__('os').system('echo hi')", [1], 1)["score"] == 0.0


def test_answer_key_identifies_equivalent_answers():
    k = lambda text, nums: check_solution(text, nums, eval_target(text)).key  # noqa: E731
    assert k("7+9=16", [3, 7, 9]) == k("9+7=16", [3, 7, 9])
    assert k("9-3=6\n6+4=10", [3, 4, 9]) == k("9+4=13\n13-3=10", [3, 4, 9])  # 9+4-3 either way
    assert k("3*4=12\n12+5=17", [3, 4, 5]) == k("4*3=12\n5+12=17", [3, 4, 5])
    assert k("7+9=16", [3, 7, 9]) != k("3*7=21\n21-5=16", [3, 5, 7, 9])
    # ambiguous text: the key prefers the reading in which every step feeds the answer
    assert answer_key([(8, "-", 6, 2), (2, "+", 6, 8), (2, "*", 8, 16)], [8, 6, 2, 6]) == "((2+6)*(8-6))"


def eval_target(text):
    return int(text.strip().split("\n")[-1].split("=")[-1])


def test_ground_truth_and_data_source_errors_are_explicit():
    with pytest.raises(ValueError, match="data_source"):
        compute_score("openai/gsm8k", "7+9=16", gt([3, 7, 9], 16))
    with pytest.raises(ValueError, match="not JSON"):
        compute_score(DATA_SOURCE, "7+9=16", "{numbers: 3 7 9}")
    with pytest.raises(ValueError, match="'numbers' and 'target'"):
        compute_score(DATA_SOURCE, "7+9=16", "16")
    with pytest.raises(ValueError, match="numbers"):
        compute_score(DATA_SOURCE, "7+9=16", json.dumps({"target": 16}))
    assert parse_ground_truth({"numbers": [3, 7, 9], "target": 16}) == ([3, 7, 9], 16)


def test_loads_through_verls_custom_reward_loader():
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    import papo_verl.demo.reward as mod

    cfg = OmegaConf.create({"reward": {"custom_reward_function": {
        "path": mod.__file__, "name": "compute_score", "reward_kwargs": {}}}})
    fn = get_custom_reward_fn(cfg)
    # verl's naive reward manager calls it with these keywords (extra_info gains num_turns etc.)
    out = fn(data_source=DATA_SOURCE, solution_str="7+9=16", ground_truth=gt([3, 7, 9], 16),
             extra_info={"split": "test", "index": 0, "num_turns": 2, "rollout_reward_scores": {}})
    assert out["score"] == 1.0 and out["acc"] == 1.0
