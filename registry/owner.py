"""Which process owns an MLflow run or a ledger entry, so that the debris of a dead one can be cleared.

A run created with :func:`owner_tags` carries the host, the pid and the pid's start time. On the
same host, :func:`owner_state` tells a live owner from a dead one (a reused pid has another start
time). Runs of other hosts cannot be checked from here: they are ``UNKNOWN``.
"""

from __future__ import annotations

import os
import socket
from enum import StrEnum

import psutil

TAG_HOST = "rankloop.owner.host"
TAG_PID = "rankloop.owner.pid"
TAG_STARTED = "rankloop.owner.started"
#: A pid's start time is known to the tick (10 ms on Linux); anything closer is the same process.
_SAME_START_S = 1.0


class OwnerState(StrEnum):
    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"  # no owner tags, or another host


def hostname() -> str:
    return socket.gethostname()


def owner_tags(pid: int | None = None) -> dict[str, str]:
    """The tags a run must carry so that recovery can tell when its process died.

    Args:
        pid: the owning process (default: this one).

    Returns:
        ``{"rankloop.owner.host": ..., "rankloop.owner.pid": ..., "rankloop.owner.started": ...}``.
    """
    pid = os.getpid() if pid is None else pid
    started = psutil.Process(pid).create_time()
    return {TAG_HOST: hostname(), TAG_PID: str(pid), TAG_STARTED: f"{started:.3f}"}


def owner_state(tags: dict[str, str]) -> OwnerState:
    """Whether the process named by a run's owner tags still runs (only decidable on its own host)."""
    try:
        host, pid, started = tags[TAG_HOST], int(tags[TAG_PID]), float(tags[TAG_STARTED])
    except (KeyError, ValueError):
        return OwnerState.UNKNOWN
    if host != hostname():
        return OwnerState.UNKNOWN
    try:
        process = psutil.Process(pid)
        same = abs(process.create_time() - started) < _SAME_START_S
        alive = same and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return OwnerState.DEAD
    return OwnerState.ALIVE if alive else OwnerState.DEAD


def describe(tags: dict[str, str]) -> str:
    """``pid 123 on host-a`` for messages."""
    return f"pid {tags.get(TAG_PID, '?')} on {tags.get(TAG_HOST, '?')}"
