"""The CPU config sends DataProtos between Ray actors with verl's raw-bytes method
(``VERL_DATAPROTO_SERIALIZATION_METHOD=numpy``): set for every actor, and lossless for what travels."""

import numpy as np
import pytest
import ray.cloudpickle as pickle
import torch
from tensordict import TensorDict
from verl.protocol import DataProto

from tests.cpu_backend.test_accelerator_check_on_cpu import compose

ENV = "VERL_DATAPROTO_SERIALIZATION_METHOD"


def test_cpu_config_sets_the_method_for_every_ray_actor():
    cfg = compose("papo_trainer_cpu", [])
    assert cfg.ray_kwargs.ray_init.runtime_env.env_vars[ENV] == "numpy"


def _batch():
    g = torch.Generator().manual_seed(0)
    return DataProto(
        batch=TensorDict({
            "responses": torch.randint(0, 50_000, (3, 7), generator=g),
            "attention_mask": torch.ones(3, 11, dtype=torch.int64),
            "response_mask": torch.rand(3, 7, generator=g) > 0.3,
            "old_log_probs": torch.randn(3, 7, generator=g) * 1e-30,  # subnormal-adjacent floats survive as bits
            "rollout_log_probs": torch.randn(3, 7, generator=g).to(torch.bfloat16),
            "position_ids": torch.arange(11).expand(3, 11),  # a non-contiguous view
        }, batch_size=3),
        non_tensor_batch={"data_source": np.array(["a", "b", "c"]),
                          "reward_model": np.array([{"ground_truth": str(i)} for i in range(3)], dtype=object)},
        meta_info={"global_steps": 4})


@pytest.mark.parametrize("method", ["numpy", None])
def test_round_trip_is_bit_identical(method, monkeypatch):
    if method is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, method)
    data = _batch()
    back = pickle.loads(pickle.dumps(data))
    assert back.batch.batch_size == data.batch.batch_size and set(back.batch.keys()) == set(data.batch.keys())
    def bits(t):
        return t.contiguous().view(-1).view(torch.uint8)

    for key, value in data.batch.items():
        got = back.batch[key]
        assert got.dtype == value.dtype and got.shape == value.shape and torch.equal(bits(got), bits(value)), key
    assert [list(v) for v in back.non_tensor_batch.values()] == [list(v) for v in data.non_tensor_batch.values()]
    assert back.meta_info == data.meta_info


def test_an_empty_and_an_absent_batch_travel_too(monkeypatch):
    monkeypatch.setenv(ENV, "numpy")
    back = pickle.loads(pickle.dumps(DataProto(batch=None, non_tensor_batch={"x": np.array([1])}, meta_info={})))
    assert back.batch is None and list(back.non_tensor_batch["x"]) == [1]
