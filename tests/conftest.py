"""Shared test set-up: deterministic seeds and a quiet, single-threaded torch on the 2-core CI box."""

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# session fixtures with real CPU training runs, shared by tests/e2e and tests/compare (each run starts once)
pytest_plugins = ["tests.e2e.fixtures"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
