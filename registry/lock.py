"""The per-kind promotion lock: ``<home>/locks/registry-<kind>.lock``.

Promotions, rollbacks (online and offline) and recovery of one model kind hold it, so aliases are
read, checked and moved with no other operation of that kind in between. It covers the processes
that share the data home (one host, or a shared file system).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from core.config.registry import RegistryConfig
from core.errors import Reason, RegistryError
from registry.config import config_of
from registry.reach import storage_error

if TYPE_CHECKING:
    from core.settings import Settings


def lock_path(settings: Settings | RegistryConfig, kind: str) -> Path:
    """The lock file that serialises promotions and rollbacks of ``kind``."""
    return config_of(settings).home_dir / "locks" / f"registry-{kind}.lock"


@contextmanager
def registry_lock(settings: Settings | RegistryConfig, kind: str, timeout_s: float | None = None) -> Iterator[None]:
    """Hold ``kind``'s promotion lock; fail with Reason.BUSY after ``timeout_s`` (default gate.lock_timeout_s)."""
    config = config_of(settings)
    path = lock_path(config, kind)
    wait = config.lock_timeout_s if timeout_s is None else timeout_s
    lock = FileLock(str(path), timeout=wait)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:
        raise RegistryError(
            f"another promotion or rollback of {kind} held the lock {path} for more than {wait:g} s; "
            "nothing was moved",
            reason=Reason.BUSY,
            details={"lock": str(path), "waited_s": wait},
            hint=f"retry when it has finished (`rankloop history {kind}` shows what it did)",
        ) from None
    except OSError as e:
        raise storage_error(e, path, f"old runs under {config.home_dir / 'runs'} can go") from e
    try:
        yield
    finally:
        lock.release()
