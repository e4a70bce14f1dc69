"""Shared test set-up: deterministic seeds and a quiet, single-threaded torch on the 2-core CI box."""

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
