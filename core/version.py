"""The code version recorded with every run and model."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent


def package_version() -> str:
    """The installed distribution's version (pyproject.toml's ``version``)."""
    try:
        return metadata.version("rankloop")
    except metadata.PackageNotFoundError:
        return "0+unknown"


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
        return package_version()
    return f"{package_version()}+g{sha}{'.dirty' if dirty else ''}"
