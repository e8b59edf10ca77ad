"""Stages as Prefect tasks. The wrapper names the stage a failure came from and reports each stage's
progress (``rankloop.progress``: the CLI prints one line per stage with its elapsed time)."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from core.errors import is_storage_error, storage_error
from flows.retry import transient_only

progress = logging.getLogger("rankloop.progress")

STAGE_ATTRIBUTE = "rankloop_stage"


def stage_task(fn: Callable[..., Any], name: str, *, transient_retries: int = 0, **options: Any) -> Any:
    """``fn`` as a task named ``name``; transient failures retried ``transient_retries`` times."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        progress.info("%s started", name, extra={"stage": name, "event": "started"})
        try:
            try:
                result = fn(*args, **kwargs)
            except OSError as error:  # a full disk, a permission: say where, in this stage, and what to do
                home = _home(args)
                if not is_storage_error(error, home):
                    raise
                converted = storage_error(error, error.filename or home)
                converted.args = (f"stage {name}: {converted.args[0]}",)
                raise converted from error
        except BaseException as exc:
            if getattr(exc, STAGE_ATTRIBUTE, None) is None:
                with contextlib.suppress(AttributeError):  # a type with slots: the flow reports "flow"
                    setattr(exc, STAGE_ATTRIBUTE, name)
            progress.info("%s failed after %.1f s", name, time.perf_counter() - began,
                          extra={"stage": name, "event": "failed", "seconds": time.perf_counter() - began})
            raise
        seconds = time.perf_counter() - began
        progress.info("%s done in %.1f s", name, seconds, extra={"stage": name, "event": "done", "seconds": seconds})
        return result

    if transient_retries:
        options |= {"retries": transient_retries, "retry_delay_seconds": 10, "retry_condition_fn": transient_only}
    return task(run, name=name, cache_policy=NONE, **options)


def _home(args: tuple[Any, ...]) -> Any:
    """The data home of the stage's settings (its first argument), if it has one."""
    return getattr(args[0], "home_dir", None) if args else None


def failed_stage(exc: BaseException) -> str:
    """The stage a failure came from (set by :func:`stage_task`), or ``"flow"`` for the flow's own code."""
    return getattr(exc, STAGE_ATTRIBUTE, None) or "flow"
