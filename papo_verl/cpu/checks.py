"""Pre-Ray check of the CPU backend (registered with :func:`papo_verl.preflight.register_check`).

On a machine without an accelerator, a run that explicitly asks for one (a GPU rollout such as
``rollout.name=vllm``, or ``VERL_PLATFORM=nvidia``) fails here, before Ray starts, naming the key
and the fix — ``--config-name papo_trainer_cpu`` — instead of minutes later inside a Ray worker.
A run on the CPU rollout (``rollout.name=hf_cpu``) is also checked for settings CPU cannot run
(FSDP1, flash attention, ``trainer.device=cuda``, missing logical GPUs for Ray …), and is refused on
an accelerator host unless ``VERL_PLATFORM=cpu``.

Dry runs (``PAPO_DRY_RUN=1``, or ``papo_verl.main.run(dry_run=True)``, i.e. ``preflight.prepare``
with ``check_files=False``) validate configs for *another* machine, e.g. a cluster recipe on a
laptop: there the findings are logged as warnings instead of raised.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf

from papo_verl.cpu.detect import CPU_PLATFORM, PLATFORM_ENV, accelerator_evidence, cpu_backend_active, forced_platform

__all__ = ["GPU_ROLLOUTS", "check_cpu_backend", "cpu_backend_problems"]

logger = logging.getLogger("papo_verl")

GPU_ROLLOUTS = ("vllm", "sglang", "trtllm")
_USE_CPU_CONFIG = "run on this machine with `python -m papo_verl.main --config-name papo_trainer_cpu ...`"
_A = "actor_rollout_ref"


def _select(config: DictConfig, key: str, default: Any = None) -> Any:
    return OmegaConf.select(config, key, default=default)


def check_cpu_backend(config: DictConfig) -> None:
    """Raise ``PreflightError`` listing every one of :func:`cpu_backend_problems` (a dry run logs them instead)."""
    from papo_verl.preflight import PreflightError

    problems = cpu_backend_problems(config)
    if problems:
        raise PreflightError(problems[0] if len(problems) == 1 else "\n  - " + "\n  - ".join(problems))


def cpu_backend_problems(config: DictConfig) -> list[str]:
    """Why ``config`` cannot run on this machine (CPU backend view); empty when it can. Each names key and fix."""
    rollout = _select(config, f"{_A}.rollout.name")
    evidence = accelerator_evidence()
    forced = forced_platform()
    active = cpu_backend_active(has_accelerator=bool(evidence))

    if not active:
        if rollout == "hf_cpu":
            return [
                f"{_A}.rollout.name=hf_cpu is papo_verl's CPU rollout, which is enabled only on machines without an "
                f"accelerator or with {PLATFORM_ENV}={CPU_PLATFORM}; this machine has one "
                f"({', '.join(evidence) or forced}). "
                f"Use --config-name papo_trainer (vllm) here, or export {PLATFORM_ENV}={CPU_PLATFORM} to force the CPU "
                "backend."
            ]
        if not evidence and forced is not None and forced != CPU_PLATFORM:
            return [
                f"{PLATFORM_ENV}={forced} forces an accelerator platform, but this machine has no accelerator; unset "
                f"{PLATFORM_ENV} (or set it to {CPU_PLATFORM}) and {_USE_CPU_CONFIG}."
            ]
        return []

    # ---- the CPU backend is active (no accelerator, or VERL_PLATFORM=cpu) --------------------------
    if rollout in GPU_ROLLOUTS:
        return [
            f"{_A}.rollout.name={rollout} needs a GPU, and this machine has none; {_USE_CPU_CONFIG} "
            f"(it sets {_A}.rollout.name=hf_cpu and the other CPU settings)."
        ]
    if rollout != "hf_cpu":
        return []  # no rollout chosen (verl reports that) or a third-party backend: not ours to judge
    problems = []
    device = _select(config, "trainer.device")
    if device not in (None, "cpu"):
        problems.append(f"trainer.device={device} requests an accelerator that this machine lacks; set "
                        f"trainer.device=cpu or {_USE_CPU_CONFIG}.")
    for role in ("actor", "ref"):
        strategy = _select(config, f"{_A}.{role}.strategy")
        if strategy == "fsdp":
            problems.append(f"{_A}.{role}.strategy=fsdp (FSDP1) cannot run on CPU (it syncs module states on a GPU); "
                            f"set {_A}.{role}.strategy=fsdp2 or {_USE_CPU_CONFIG}.")
        if strategy == "megatron":
            problems.append(f"{_A}.{role}.strategy=megatron needs GPUs; set {_A}.{role}.strategy=fsdp2.")
    attn = _select(config, f"{_A}.model.override_config.attn_implementation")
    if attn is None or str(attn).startswith("flash_attention"):
        problems.append(
            f"{_A}.model.override_config.attn_implementation={attn} (verl's default is flash_attention_2, which needs "
            f"CUDA); set +{_A}.model.override_config.attn_implementation=sdpa or {_USE_CPU_CONFIG}.")
    n_gpus = int(_select(config, "trainer.n_gpus_per_node", 1) or 1) * int(_select(config, "trainer.nnodes", 1) or 1)
    logical = _select(config, "ray_kwargs.ray_init.num_gpus")
    if logical is None or int(logical) < n_gpus:
        problems.append(
            f"ray_kwargs.ray_init.num_gpus={logical}: on CPU the training ranks run on logical GPUs declared to Ray, "
            f"and trainer.n_gpus_per_node × trainer.nnodes = {n_gpus}; set +ray_kwargs.ray_init.num_gpus={n_gpus} "
            f"or {_USE_CPU_CONFIG}.")
    from papo_verl.cpu.server import HFCpuOptions

    try:
        HFCpuOptions.from_mapping(_select(config, f"{_A}.rollout.engine_kwargs.hf_cpu"))
    except (TypeError, ValueError) as err:
        problems.append(str(err))
    mode = _select(config, "trainer.v1.trainer_mode", "sync")
    if mode not in ("sync", "papo"):
        problems.append(f"trainer.v1.trainer_mode={mode}: the hf_cpu rollout supports verl's synchronous trainer only "
                        "(hybrid replicas, naive weight sync); remove the override.")
    return problems
