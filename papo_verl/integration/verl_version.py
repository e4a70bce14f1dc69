"""The one verl version guard: papo_verl supports verl 0.9.x (pinned 0.9.1) and refuses any other.

Used by :mod:`papo_verl.integration.plugin` before it registers anything, and by the CPU backend before it touches
verl internals (:mod:`papo_verl.cpu.compat`). Plain Python: importing it imports nothing of verl.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["INSTALL_HINT", "PINNED_VERL", "SUPPORTED_VERL_SERIES", "UnsupportedVerlVersion", "check_verl_version",
           "installed_verl_version"]

SUPPORTED_VERL_SERIES = "0.9"
PINNED_VERL = "0.9.1"
INSTALL_HINT = f"pip install 'verl[verl-core]=={PINNED_VERL}'"


class UnsupportedVerlVersion(RuntimeError):
    """The installed verl is not one papo_verl supports (or lacks an internal papo_verl relies on)."""


def installed_verl_version() -> str:
    """``verl.__version__`` (set first thing when verl loads its plugins), else the distribution's version."""
    import verl

    version = getattr(verl, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("verl")
    return str(version)


def check_verl_version(version: Optional[str] = None, *, consequence: str = "PAPO was NOT registered") -> str:
    """Return ``version`` (default: the installed verl's) if it is a 0.9.x release; else raise
    :class:`UnsupportedVerlVersion` naming it, ``consequence`` (what was not done) and the fix."""
    version = str(version if version is not None else installed_verl_version())
    if version.split(".")[:2] != SUPPORTED_VERL_SERIES.split("."):
        raise UnsupportedVerlVersion(
            f"papo_verl supports verl {SUPPORTED_VERL_SERIES}.x (pinned {PINNED_VERL}); the installed verl is {version}. "
            f"{consequence}. Install the supported version: {INSTALL_HINT}."
        )
    return version
