"""The code version recorded with every run and model."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import rankloop

_REPO = Path(__file__).resolve().parent.parent


@functools.cache
def code_version() -> str:
    """``<package version>+g<short git sha>[.dirty]`` when run from a checkout, else the package version."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(_REPO), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(_REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return rankloop.__version__
    return f"{rankloop.__version__}+g{sha}{'.dirty' if dirty else ''}"
