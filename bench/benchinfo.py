"""What the benchmark scripts print about the code they measured."""

import subprocess
from pathlib import Path


def git_commit() -> str:
    """Short commit of the repository, ``+uncommitted`` when tracked files differ from it."""
    try:
        root = Path(__file__).resolve().parents[1]
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("+uncommitted" if dirty else "")
    except Exception:
        return "unknown"
