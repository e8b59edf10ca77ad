"""The feature registry: one pure function per output column, declared with its dtype, grain, null
policy and when its value is known.

``known`` is train/serve parity: ``request`` features are computable from the user, the item and
the request's context before anything is ranked (every event they read is strictly before the
request); ``logged`` features exist only once a slate was shown (the slot the logging policy gave
the item). A model may train only on what it can be served with, so feature sets hold only
``request`` features (``features.sets.FeatureSet``); a logged value belongs in the training
objective instead (the ranker's ``position_bias`` setting).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Grain = Literal["user", "item", "user_item", "user_category", "context", "impression"]
GRAINS: tuple[str, ...] = ("user", "item", "user_item", "user_category", "context", "impression")
Known = Literal["request", "logged"]
KNOWN: tuple[str, ...] = ("request", "logged")
DTYPES: tuple[str, ...] = ("float32", "int32", "int16")


@dataclass(frozen=True)
class FeatureSpec:
    """A declared feature: ``fn(ctx) -> ndarray`` (one value per impression) and how to store it."""

    name: str
    fn: Callable[[Any], np.ndarray]
    dtype: str
    grain: str
    group: str
    description: str
    known: str
    fill: float | None = None
    window_days: int | None = None
    version: int = 1

    @property
    def nullable(self) -> bool:
        return self.fill is None

    @property
    def nulls(self) -> str:
        """The null policy as text: 'nullable' or 'fill=<value>'."""
        return "nullable" if self.fill is None else f"fill={self.fill:g}"


REGISTRY: dict[str, FeatureSpec] = {}


def _register(spec: FeatureSpec) -> None:
    problems = []
    if spec.name in REGISTRY:
        problems.append(f"name {spec.name!r} is already registered")
    if spec.dtype not in DTYPES:
        problems.append(f"dtype {spec.dtype!r} is not one of {DTYPES}")
    if spec.grain not in GRAINS:
        problems.append(f"grain {spec.grain!r} is not one of {GRAINS}")
    if spec.known not in KNOWN:
        problems.append(f"known {spec.known!r} is not one of {KNOWN}")
    if not spec.description:
        problems.append("it has no docstring")
    if spec.fill is None and spec.dtype != "float32":
        problems.append(f"an integer dtype ({spec.dtype}) cannot be nullable; give fill=")
    if problems:
        raise ValueError(f"cannot register feature {spec.name!r}: " + "; ".join(problems))
    REGISTRY[spec.name] = spec


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0].strip() if (doc or "").strip() else ""


def feature(*, dtype: str, grain: Grain, group: str, known: Known, fill: float | None = None,
            window_days: int | None = None, version: int = 1) -> Callable:
    """Register the decorated function as the feature named after it (``fill=None``: nullable)."""
    def decorate(fn: Callable) -> Callable:
        _register(FeatureSpec(fn.__name__, fn, dtype, grain, group, _first_line(fn.__doc__), known, fill, window_days,
                              version))
        return fn
    return decorate


def family(template: str, params: Iterable[Mapping[str, Any]], *, doc: str, dtype: str, grain: Grain | str,
           group: str, known: Known, fill: float | None = None, window_days: int | None = None,
           version: int = 1) -> Callable:
    """Register one feature per parameter set from one body ``body(ctx, **params)``.

    ``template``, ``doc``, ``grain`` and ``group`` are formatted with each parameter set; an int
    ``window`` parameter is recorded as the feature's look-back in days (else ``window_days``).
    """
    def decorate(body: Callable) -> Callable:
        for p in params:
            name = template.format(**p)
            fn = _bind(body, dict(p), name, doc.format(**p))
            window = p.get("window", window_days)
            _register(FeatureSpec(name, fn, dtype, grain.format(**p), group.format(**p), fn.__doc__, known, fill,
                                  window if isinstance(window, int) else None, version))
        return body
    return decorate


def _bind(body: Callable, params: dict[str, Any], name: str, doc: str) -> Callable:
    def fn(ctx):
        return body(ctx, **params)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    return fn


def grid(**axes: Iterable[Any]) -> list[dict[str, Any]]:
    """Every combination of the given axes, as parameter dicts (first axis varies slowest)."""
    combos: list[dict[str, Any]] = [{}]
    for name, values in axes.items():
        combos = [{**c, name: v} for c in combos for v in values]
    return combos
