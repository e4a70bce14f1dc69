"""Shared fixtures for the demo tests: a real tiny tokenizer trained on the task's chats."""

import random

import pytest


@pytest.fixture(scope="session")
def demo_problems():
    from papo_verl.demo.task import TaskConfig, generate_problems

    return generate_problems(TaskConfig(n_numbers=(3, 4), min_solutions=2), 24, seed=0)


@pytest.fixture(scope="session")
def demo_tokenizer_dir(tmp_path_factory, demo_problems):
    from papo_verl.demo import tiny
    from papo_verl.demo.assets import tiny_chat
    from papo_verl.demo.task import sample_trace

    rng = random.Random(0)
    out = tmp_path_factory.mktemp("demo_tok")
    tiny.build_tokenizer(str(out), [tiny_chat(p.prompt(), sample_trace(p, rng)) for p in demo_problems * 4],
                         vocab_size=320)
    return str(out)


@pytest.fixture(scope="session")
def demo_tokenizer(demo_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_tokenizer_dir)
