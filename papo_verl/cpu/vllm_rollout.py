"""verl's vLLM rollout on the CPU platform: thin subclasses of verl 0.9.1's own classes.

Registered by :func:`papo_verl.cpu.activate` for ``actor_rollout_ref.rollout.name=vllm`` on CPU hosts
(``RolloutReplicaRegistry.register("vllm", ...)``, public; the trainer-side adapter in verl's private
``_ROLLOUT_REGISTRY``, version-guarded). Generation, sampling, log-probs, the agent-loop contract and the
ZMQ + shared-memory weight sync are verl's and vLLM's code; the subclasses change only:

* :class:`CpuVllmHttpServer` — vLLM's worker loads :class:`~papo_verl.cpu.vllm_engine.CpuWorkerExtension`
  (weight-sync socket in the Ray session folder); the executor,
  :class:`~papo_verl.cpu.vllm_engine.InProcessExecutor`, comes from the config's engine arguments;
* :class:`CpuVllmReplica` — verl's replica, starting :class:`CpuVllmHttpServer` actors;
* :class:`CpuServerAdapter` — verl's trainer-side adapter, sending weights to the same socket.

The server's environment (``VLLM_CPU_*``, caches, temporary folder) comes from the CPU platform's
``rollout_env_vars`` (:mod:`papo_verl.cpu.platform`), verl's hook for it.
"""

from __future__ import annotations

import os

import ray

from papo_verl.cpu.vllm_compat import require_vllm_cpu, session_runtime_dir, weight_sync_socket

require_vllm_cpu("verl's vLLM server, replica and adapter (papo_verl.cpu.vllm_rollout)")

from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMHttpServer, vLLMReplica  # noqa: E402
from verl.workers.rollout.vllm_rollout.vllm_rollout import ServerAdapter  # noqa: E402

__all__ = ["CpuServerAdapter", "CpuVllmHttpServer", "CpuVllmReplica", "WORKER_EXTENSION"]

WORKER_EXTENSION = "papo_verl.cpu.vllm_engine.CpuWorkerExtension"


class CpuVllmHttpServer(vLLMHttpServer):
    """verl's vLLM server with the CPU worker extension."""

    def _get_worker_extension_cls(self) -> str:
        return WORKER_EXTENSION


class CpuVllmReplica(vLLMReplica):
    """verl's vLLM replica, starting :class:`CpuVllmHttpServer` actors."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.server_class = ray.remote(CpuVllmHttpServer)


class CpuServerAdapter(ServerAdapter):
    """verl's trainer-side vLLM adapter; its weight-sync socket is in the Ray session folder."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        local_rank = self.rollout_rank % int(os.environ["RAY_LOCAL_WORLD_SIZE"])
        self.zmq_handle = weight_sync_socket(session_runtime_dir(), ray.get_runtime_context().get_job_id(),
                                             self.replica_rank, local_rank)
