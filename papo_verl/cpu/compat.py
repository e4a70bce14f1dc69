"""The places where the CPU backend has to reach into verl 0.9 internals, version-guarded.

verl 0.9.1 has no hook for any of them:

1. ``verl.utils.distributed.initialize_global_process_group_ray`` builds its backend string as
   ``f"cpu:gloo,{device}:{backend}"``; on the CPU platform that is ``"cpu:gloo,cpu:gloo"`` and torch
   rejects it (``ValueError: Duplicate device type cpu in backend string``). :func:`patch_process_group_backend`
   wraps the function so the default backend becomes ``"cpu:gloo"`` when the device is ``cpu``.
   Modules that bound the name before the patch (``from verl.utils.distributed import ...``) are
   re-pointed at the wrapper too.
2. The worker-side rollout adapter registry is the private dict
   ``verl.workers.rollout.base._ROLLOUT_REGISTRY`` (no public ``register``);
   :func:`register_rollout_adapter` points ``("vllm", "async")`` at the CPU subclass of verl's
   vLLM ``ServerAdapter`` (:mod:`papo_verl.cpu.vllm_rollout`).
3. The synchronous trainer's ``ReplayBuffer`` waits for the rollout by polling TransferQueue every
   2 s (``poll_interval=2.0``, a constructor default no config key reaches). On a GPU cluster a
   generation takes minutes; on CPU it takes a second, so ``timing_s/gen`` was 2 or 4 s whatever the
   rollout did. :func:`shorten_replay_buffer_poll` makes the default :data:`CPU_POLL_INTERVAL_S`.
4. ``AgentLoopWorker._run_agent_loop`` builds a new agent loop for every response with
   ``hydra.utils.instantiate(config={"_target_": ...}, **objects)``; Hydra first turns the keyword
   arguments into an OmegaConf tree and merges it into the config, ~15 % of the agent-loop worker's
   CPU time on the demo (its single core is what ``timing_s/gen`` waits for: the engine itself
   generates a batch in ~0.5 s). :func:`direct_agent_loop_construction` gives that module an
   ``instantiate`` that calls the class directly when Hydra would pass every argument through
   unchanged (a bare ``_target_`` and no containers or ``${...}`` strings among the arguments), and
   Hydra's own otherwise.
5. ``verl.trainer.ppo.metric_utils.process_validation_metrics`` bootstraps ``best@n``/``worst@n`` of
   every numeric reward field per prompt with a Python loop of 1,000 ``np.max``/``np.min`` calls per
   ``n``: 18 s of the driver's CPU for the demo's 64 prompts × 16 samples, at every validation
   (``bench/validation_bootstrap.py``).
   :func:`vectorised_validation_bootstrap` gives the module a ``bootstrap_metric`` that draws the same
   indices from the same seeded generator and reduces the whole index matrix at once — the same
   floats, bit for bit (max and min are exact) — when the data are finite real numbers and the
   reductions are ``[np.max, np.min]``; anything else (majority vote, strings, NaN) goes to verl's.

All refuse to run on a verl outside the 0.9.x series (:class:`UnsupportedVerlVersion`): their
targets are private and may move in another release. The engine-device mapping
(:func:`map_engine_device`) only uses verl's documented ``VERL_ENGINE_DEVICE``/``VERL_ENGINE_VENDOR``
overrides of ``EngineRegistry.get_engine_cls``.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable, Optional

from papo_verl.integration.verl_version import INSTALL_HINT, SUPPORTED_VERL_SERIES, UnsupportedVerlVersion, check_verl_version

__all__ = [
    "CPU_POLL_INTERVAL_S",
    "ENGINE_DEVICE_ENV",
    "ENGINE_VENDOR_ENV",
    "map_engine_device",
    "patch_process_group_backend",
    "register_rollout_adapter",
    "require_verl_internals",
    "direct_agent_loop_construction",
    "shorten_replay_buffer_poll",
    "vectorised_validation_bootstrap",
]

ENGINE_DEVICE_ENV = "VERL_ENGINE_DEVICE"
ENGINE_VENDOR_ENV = "VERL_ENGINE_VENDOR"
_PATCH_ATTR = "__papo_verl_cpu_backend_fix__"


def require_verl_internals(what: str, version: Optional[str] = None) -> str:
    """:func:`~papo_verl.integration.verl_version.check_verl_version` before touching the verl internal ``what``; returns the version.

    ``what`` is named in the error, so it says exactly what would break.
    """
    return check_verl_version(version, consequence=(
        f"papo_verl's CPU backend did NOT patch {what} (private in verl, verified on {SUPPORTED_VERL_SERIES}.x only; "
        "on an accelerator host, unset VERL_PLATFORM=cpu to run without the CPU backend)"))


# ------------------------------------------------------------------------------------------------
# 1. process-group backend string
# ------------------------------------------------------------------------------------------------
def cpu_backend_string(original: Callable) -> Callable:
    """Wrap ``initialize_global_process_group_ray(timeout_second=None, backend=None)``.

    With ``backend=None`` on device ``cpu`` the wrapper passes ``backend="cpu:gloo"``; any explicit
    backend, and every other device, goes through unchanged.
    """

    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        if backend is None:
            from verl.utils.device import get_device_name

            if get_device_name() == "cpu":
                backend = "cpu:gloo"
        return original(timeout_second=timeout_second, backend=backend)

    setattr(initialize_global_process_group_ray, _PATCH_ATTR, True)
    return initialize_global_process_group_ray


def patch_process_group_backend(version: Optional[str] = None) -> str:
    """Install :func:`cpu_backend_string` on ``verl.utils.distributed`` (idempotent, verl 0.9.x only).

    Also re-binds the name in already-imported ``verl.*`` modules that imported it by value
    (``verl.workers.engine_workers``, ``verl.checkpoint_engine.base``). Returns the registered name.
    """
    require_verl_internals("verl.utils.distributed.initialize_global_process_group_ray", version)
    import verl.utils.distributed as distributed

    current = distributed.initialize_global_process_group_ray
    if getattr(current, _PATCH_ATTR, False):
        return "patch:initialize_global_process_group_ray"
    wrapper = cpu_backend_string(current)
    distributed.initialize_global_process_group_ray = wrapper
    for name, module in list(sys.modules.items()):
        if name.startswith("verl.") and getattr(module, "initialize_global_process_group_ray", None) is current:
            setattr(module, "initialize_global_process_group_ray", wrapper)
    return "patch:initialize_global_process_group_ray"


# ------------------------------------------------------------------------------------------------
# 2. worker-side rollout adapter registry
# ------------------------------------------------------------------------------------------------
def register_rollout_adapter(name: str, adapter_fqn: str, version: Optional[str] = None) -> str:
    """Add ``(name, "async") -> adapter_fqn`` to verl's private ``_ROLLOUT_REGISTRY`` (verl 0.9.x only).

    ``ActorRolloutRefWorker.init_model`` resolves ``rollout.name`` there with ``get_rollout_class``.
    """
    require_verl_internals("verl.workers.rollout.base._ROLLOUT_REGISTRY", version)
    from verl.workers.rollout import base

    registry = getattr(base, "_ROLLOUT_REGISTRY", None)
    if not isinstance(registry, dict):
        raise UnsupportedVerlVersion(
            f"verl.workers.rollout.base._ROLLOUT_REGISTRY is missing or not a dict in this verl; the {name} rollout "
            f"adapter cannot be registered. Install the supported version: {INSTALL_HINT}."
        )
    registry[(name, "async")] = adapter_fqn
    return f"rollout_adapter:{name}"


# ------------------------------------------------------------------------------------------------
# 3. replay-buffer poll interval
# ------------------------------------------------------------------------------------------------
CPU_POLL_INTERVAL_S = 0.1
_POLL_PATCH_ATTR = "__papo_verl_cpu_poll_interval__"


def shorten_replay_buffer_poll(interval_s: float = CPU_POLL_INTERVAL_S, version: Optional[str] = None) -> str:
    """Make ``interval_s`` the default ``poll_interval`` of verl's ``ReplayBuffer`` (verl 0.9.x only; idempotent).

    An explicitly passed ``poll_interval`` is kept. Returns the registered name.
    """
    import inspect

    require_verl_internals("verl.trainer.ppo.v1.replay_buffer.ReplayBuffer (poll_interval)", version)
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    original = ReplayBuffer.__init__
    if getattr(original, _POLL_PATCH_ATTR, None) is None:
        parameter = inspect.signature(original).parameters.get("poll_interval")
        if parameter is None or parameter.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD:
            raise UnsupportedVerlVersion(
                "verl.trainer.ppo.v1.replay_buffer.ReplayBuffer.__init__ has no poll_interval argument in this verl; "
                f"papo_verl's CPU backend cannot shorten its polling. Install the supported version: {INSTALL_HINT}."
            )

        @functools.wraps(original)
        def __init__(self, *args, poll_interval: float = interval_s, **kwargs):
            original(self, *args, poll_interval=poll_interval, **kwargs)

        setattr(__init__, _POLL_PATCH_ATTR, interval_s)
        ReplayBuffer.__init__ = __init__
    return f"patch:ReplayBuffer.poll_interval={interval_s:g}s"


# ------------------------------------------------------------------------------------------------
# 4. agent loops constructed without Hydra's argument merge
# ------------------------------------------------------------------------------------------------
AGENT_LOOP_MODULE = "verl.experimental.agent_loop.agent_loop"


def instantiate_directly(config: Any, *args: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(config, *args, **kwargs)``, without Hydra's OmegaConf round trip where it
    changes nothing: ``config`` a plain ``{"_target_": fqn}`` and no argument that Hydra would convert (a
    dict, list, tuple, set, dataclass or OmegaConf container) or resolve (a string with ``${``)."""
    import hydra

    if (
        not args
        and isinstance(config, dict)
        and set(config) == {"_target_"}
        and not any(_hydra_converts(value) for value in kwargs.values())
    ):
        return hydra.utils.get_class(config["_target_"])(**kwargs)
    return hydra.utils.instantiate(config, *args, **kwargs)


def _hydra_converts(value: Any) -> bool:
    import dataclasses

    from omegaconf import Container

    return (isinstance(value, (dict, list, tuple, set, Container)) or dataclasses.is_dataclass(value)
            or (isinstance(value, str) and "${" in value))


def direct_agent_loop_construction(version: Optional[str] = None) -> str:
    """Point ``hydra.utils.instantiate`` as seen by verl's agent-loop module at :func:`instantiate_directly`
    (verl 0.9.x only; idempotent). The module uses Hydra for nothing else; Hydra itself is untouched."""
    import importlib
    import types

    require_verl_internals(f"{AGENT_LOOP_MODULE} (hydra.utils.instantiate per agent loop)", version)
    module = importlib.import_module(AGENT_LOOP_MODULE)
    current = getattr(module, "hydra", None)
    if getattr(current, _PATCH_ATTR, False):
        return "patch:agent_loop.instantiate"
    import hydra

    if current is not hydra:
        raise UnsupportedVerlVersion(
            f"{AGENT_LOOP_MODULE} does not use hydra.utils.instantiate as papo_verl expects in this verl; "
            f"install the supported version: {INSTALL_HINT}."
        )
    shim = types.SimpleNamespace(utils=types.SimpleNamespace(instantiate=instantiate_directly), **{_PATCH_ATTR: True})
    module.hydra = shim
    return "patch:agent_loop.instantiate"


# ------------------------------------------------------------------------------------------------
# 5. verl's validation bootstrap, vectorised where that changes no bit
# ------------------------------------------------------------------------------------------------
METRIC_UTILS_MODULE = "verl.trainer.ppo.metric_utils"


def vectorised_bootstrap(original: Callable) -> Callable:
    """``bootstrap_metric(data, subset_size, reduce_fns, n_bootstrap, seed)`` of verl, returning the same
    ``[(mean, std), ...]`` and leaving numpy's global generator in the same state; vectorised for
    ``reduce_fns == [np.max, np.min]`` over finite real numbers, ``original`` otherwise."""
    import numbers

    import numpy as np

    @functools.wraps(original)
    def bootstrap_metric(data, subset_size, reduce_fns, n_bootstrap=1000, seed=42):
        fast = (len(reduce_fns) == 2 and reduce_fns[0] is np.max and reduce_fns[1] is np.min
                and all(isinstance(value, numbers.Real) for value in data))
        values = np.asarray(data, dtype=np.float64) if fast else None
        if not fast or values.ndim != 1 or not np.isfinite(values).all():
            return original(data, subset_size, reduce_fns, n_bootstrap=n_bootstrap, seed=seed)
        np.random.seed(seed)  # verl's own draw: same generator, same call, same indices
        samples = values[np.random.choice(len(values), size=(n_bootstrap, subset_size), replace=True)]
        return [(float(np.mean(r)), float(np.std(r))) for r in (samples.max(axis=1), samples.min(axis=1))]

    setattr(bootstrap_metric, _PATCH_ATTR, True)
    return bootstrap_metric


def vectorised_validation_bootstrap(version: Optional[str] = None) -> str:
    """Point the ``bootstrap_metric`` that verl's ``process_validation_metrics`` calls at
    :func:`vectorised_bootstrap` (verl 0.9.x only; idempotent)."""
    import importlib
    import inspect

    require_verl_internals(f"{METRIC_UTILS_MODULE}.bootstrap_metric", version)
    module = importlib.import_module(METRIC_UTILS_MODULE)
    original = getattr(module, "bootstrap_metric", None)
    if getattr(original, _PATCH_ATTR, False):
        return "patch:metric_utils.bootstrap_metric"
    caller = getattr(module, "process_validation_metrics", None)
    expected = ["data", "subset_size", "reduce_fns", "n_bootstrap", "seed"]
    if (original is None or caller is None or "bootstrap_metric" not in caller.__code__.co_names
            or list(inspect.signature(original).parameters) != expected):
        raise UnsupportedVerlVersion(
            f"{METRIC_UTILS_MODULE} has no bootstrap_metric({', '.join(expected)}) called by process_validation_metrics "
            f"in this verl; install the supported version: {INSTALL_HINT}."
        )
    module.bootstrap_metric = vectorised_bootstrap(original)
    return "patch:metric_utils.bootstrap_metric"


# ------------------------------------------------------------------------------------------------
# 6. engine lookup for device "cpu" (public env overrides)
# ------------------------------------------------------------------------------------------------
def map_engine_device(environ: Optional[dict] = None) -> str:
    """Make ``EngineRegistry.get_engine_cls`` resolve the CUDA engines on the CPU platform.

    verl registers its FSDP engines for devices ``cuda``/``npu`` only, and papo_verl's engine
    subclass under ``(cuda, nvidia)``; the FSDP2 code itself is device-agnostic. Sets
    ``VERL_ENGINE_DEVICE=cuda`` and ``VERL_ENGINE_VENDOR=nvidia`` unless the user set them. The
    variables are inherited by the Ray workers of a local cluster, and every worker sets them
    again when it imports the plugin.
    """
    environ = os.environ if environ is None else environ
    environ.setdefault(ENGINE_DEVICE_ENV, "cuda")
    environ.setdefault(ENGINE_VENDOR_ENV, "nvidia")
    return f"engine_device:{environ[ENGINE_DEVICE_ENV]}/{environ[ENGINE_VENDOR_ENV]}"
