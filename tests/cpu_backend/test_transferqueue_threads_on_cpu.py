"""The CPU config gives TransferQueue's put/get a torch thread count (``TQ_NUM_THREADS``) that never exceeds
the physical cores: TransferQueue's default 8 is clamped to them with a WARNING on every call."""

import logging
import os
import subprocess
import sys

import psutil

from tests.cpu_backend.test_accelerator_check_on_cpu import compose

ENV = "TQ_NUM_THREADS"


def test_cpu_config_sets_transferqueue_threads_for_every_ray_actor():
    value = compose("papo_trainer_cpu", []).ray_kwargs.ray_init.runtime_env.env_vars[ENV]
    assert int(value) == 1 <= (psutil.cpu_count(logical=False) or 1)


def test_transferqueue_reads_the_value_and_does_not_warn(caplog):
    """TransferQueue reads the variable when its modules are imported (a Ray actor's environment has it then),
    and its thread limiter with that value keeps quiet where the default 8 warns on this machine."""
    value = compose("papo_trainer_cpu", []).ray_kwargs.ray_init.runtime_env.env_vars[ENV]
    code = ("import transfer_queue.client as c, transfer_queue.storage.simple_storage as s; "
            "print(c.TQ_NUM_THREADS, s.TQ_NUM_THREADS)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, ENV: value}, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [value, value]

    from transfer_queue.utils.common import limit_pytorch_auto_parallel_threads

    with caplog.at_level(logging.WARNING, logger="transfer_queue.utils.common"):
        with limit_pytorch_auto_parallel_threads(target_num_threads=int(value)):
            pass
        assert not caplog.records
        if (psutil.cpu_count(logical=False) or 1) < 8:  # the default warns here: what the config avoids
            with limit_pytorch_auto_parallel_threads(target_num_threads=8):
                pass
            assert any("should not exceed" in r.getMessage() for r in caplog.records)
