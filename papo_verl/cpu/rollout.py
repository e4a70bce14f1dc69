"""verl rollout backend ``hf_cpu``: the replica (driver side) and the server adapter (trainer side).

* :class:`HFCpuReplica` — a ``RolloutReplica`` registered with verl's public
  ``RolloutReplicaRegistry.register("hf_cpu", ...)``. ``LLMServerManager`` builds one per
  ``tensor_model_parallel_size`` training ranks and calls ``init_hybrid`` → :meth:`launch_servers`,
  which starts one :class:`~papo_verl.cpu.server.HFCpuServer` Ray actor (``num_cpus=0``, on the
  node of the replica's first training rank, named ``hf_cpu_server_{replica}_0``). There is no HTTP
  server: the agent loop calls the actor handle (the server address is only a router key).
* :class:`HFCpuServerAdapter` — the ``BaseRollout`` that ``ActorRolloutRefWorker.init_model``
  builds in every training rank (registered in verl's private ``_ROLLOUT_REGISTRY`` by
  :mod:`papo_verl.cpu.compat`). In sync mode verl's naive checkpoint engine calls
  :meth:`HFCpuServerAdapter.update_weights` with the engine's per-tensor generator after every
  step. Every rank drains the generator (FSDP2's ``full_tensor()`` is a collective); the replica's
  first rank ships the full CPU tensors to its server in buckets of
  ``checkpoint_engine.update_weights_bucket_megabytes`` through the Ray object store.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Generator, Optional

import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from torch.distributed.tensor import DTensor
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica

__all__ = ["ROLLOUT_NAME", "HFCpuReplica", "HFCpuServerAdapter", "server_actor_name"]

logger = logging.getLogger("papo_verl")

ROLLOUT_NAME = "hf_cpu"


def server_actor_name(replica_rank: int, node_rank: int = 0, suffix: str = "") -> str:
    """Ray actor name of a replica's server (the adapter finds its server by this name)."""
    return f"{ROLLOUT_NAME}_server_{replica_rank}_{node_rank}{suffix}"


class HFCpuReplica(RolloutReplica):
    """One ``hf_cpu`` rollout replica: a single :class:`HFCpuServer` actor (see the module docstring)."""

    async def launch_servers(self) -> None:
        from papo_verl.cpu.server import HFCpuServer

        if self.is_reward_model or self.is_teacher_model:
            kind = "reward" if self.is_reward_model else "teacher"
            raise NotImplementedError(
                f"the hf_cpu rollout serves the policy only; a {kind} model server is not supported on CPU "
                f"(disable reward.reward_model.enable / distillation, or use a GPU rollout)."
            )
        if self.workers:
            node_id = await self.workers[0].__ray_call__.remote(lambda worker: ray.get_runtime_context().get_node_id())
        else:
            node_id = ray.get_runtime_context().get_node_id()
        name = server_actor_name(self.replica_rank, 0, self.name_suffix)
        server = ray.remote(HFCpuServer).options(
            name=name,
            num_cpus=0,
            max_concurrency=self.max_concurrency,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
        ).remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        info = await server.ready.remote()
        logger.info("hf_cpu replica %d ready: %s", self.replica_rank, info)
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"{ROLLOUT_NAME}://{name}"

    def rollout_worker_use_gpu(self) -> bool:
        return False


class HFCpuServerAdapter(BaseRollout):
    """Trainer-side handle of the ``hf_cpu`` server of this rank's replica (see the module docstring).

    Args:
        config: ``RolloutConfig``; model_config: ``HFModelConfig``; device_mesh: unused.
        replica_rank: -1 → derived from ``RANK`` and the replica size (TP × DP × PP).
    """

    def __init__(self, config: Any, model_config: Any, device_mesh: Any = None, replica_rank: int = -1, **kwargs: Any):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        replica_size = (self.config.tensor_model_parallel_size * self.config.data_parallel_size
                        * self.config.pipeline_model_parallel_size)
        self.replica_rank = rank // replica_size if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % replica_size
        self.is_leader_rank = self.rollout_rank == 0
        self.bucket_bytes = max(1, int(self.config.checkpoint_engine.update_weights_bucket_megabytes)) << 20
        self.server_handle: Optional[ray.actor.ActorHandle] = None

    def _server(self) -> ray.actor.ActorHandle:
        if self.server_handle is None:
            self.server_handle = ray.get_actor(server_actor_name(self.replica_rank))
        return self.server_handle

    async def resume(self, tags: list[str]) -> None:
        return None  # the server keeps its weights in host memory; nothing to restore

    async def release(self) -> None:
        return None

    async def update_weights(
        self,
        weights: Generator[tuple[str, torch.Tensor], None, None],
        global_steps: Optional[int] = None,
        wire_format: str = "named_tensors",
        peft_config: Any = None,
        **kwargs: Any,
    ) -> None:
        """Drain ``weights`` ((HF name, full tensor) pairs) on every rank; the leader sends them to the server."""
        from verl.workers.rollout.utils import ensure_async_iterator

        if wire_format != "named_tensors":
            raise NotImplementedError(
                f"hf_cpu rollout receives full tensors only (wire_format={wire_format!r}); set "
                "actor_rollout_ref.rollout.checkpoint_engine.backend=naive."
            )
        if peft_config is not None:
            raise NotImplementedError(
                "hf_cpu rollout cannot load LoRA adapters separately; set actor_rollout_ref.model.lora.merge=true "
                "so merged weights are synced."
            )
        bucket: list[tuple[str, torch.Tensor]] = []
        bucket_size = 0
        async for name, tensor in ensure_async_iterator(weights):
            # every rank drains the generator: producing each full tensor is a collective over the FSDP ranks
            if isinstance(tensor, DTensor):  # verl yields full tensors; gather here if a shard slipped through
                tensor = tensor.full_tensor()
            if not self.is_leader_rank:
                continue
            tensor = tensor.detach().to("cpu")
            bucket.append((name, tensor))
            bucket_size += tensor.numel() * tensor.element_size()
            if bucket_size >= self.bucket_bytes:
                await self._server().load_weights.remote(bucket)
                bucket, bucket_size = [], 0
        if self.is_leader_rank:
            if bucket:
                await self._server().load_weights.remote(bucket)
            await self._server().finish_weight_update.remote(global_steps)

    def generate_sequences(self, prompts: Any) -> Any:
        raise NotImplementedError("hf_cpu is a server rollout: generation goes through the agent loop.")


def load_replica_class() -> type[RolloutReplica]:
    """Loader for ``RolloutReplicaRegistry.register``."""
    return HFCpuReplica
