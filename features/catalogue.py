"""The feature catalogue, rendered from the declarations (``rankloop features --write-docs``)."""

from __future__ import annotations

from pathlib import Path

from core.atomic import write_text
from features.registry import REGISTRY, FeatureSpec
from features.sets import FEATURE_SETS, FEATURES_VERSION

DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "features.md"

_INTRO = """# Feature catalogue

Generated from the feature declarations by `rankloop features --write-docs`; do not edit by hand.

Every feature of an impression at time `t` uses only events with `ts < t` (strictly; see
`features/timeline.py`). `known` is when a value exists: `request` = computable from the user,
the item and the request's context before ranking; `logged` = only once the logged slate was
shown. Feature sets hold only `request` features (what serving can compute); the logged position
is used by the ranker's `position_bias` setting, never as a feature. Windows are `[t - window, t)`. `nulls` is the null policy: `fill=v`
replaces a missing value by `v`; `nullable` leaves NaN (LightGBM treats it as missing).
Event selections: `event` = any event, `impression` = exposures (impression events; for sources
without them, the first event of a user/item/session-or-day group), `engage` =
`FeatureSettings.engagement_types`.
"""


def catalogue_rows(names: tuple[str, ...] | None = None) -> list[dict[str, str]]:
    """One dict per feature (name, group, grain, known, dtype, nulls, description), in registry order."""
    specs: list[FeatureSpec] = [REGISTRY[n] for n in (names or tuple(REGISTRY))]
    return [{"name": s.name, "group": s.group, "grain": s.grain, "known": s.known, "dtype": s.dtype,
             "nulls": s.nulls, "description": s.description} for s in specs]


def render_markdown() -> str:
    """The whole catalogue page: the feature sets with their hashes, then every feature."""
    lines = [_INTRO, f"Feature version: {FEATURES_VERSION}. Registered features: {len(REGISTRY)}.", "",
             "## Feature sets", "", "| set | features | sha256 |", "| --- | ---: | --- |"]
    lines += [f"| `{s.name}` | {len(s.features)} | `{s.hash}` |" for s in FEATURE_SETS.values()]
    lines += ["", "## Features", "", "| name | group | grain | known | dtype | nulls | description |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| `{r['name']}` | {r['group']} | {r['grain']} | {r['known']} | {r['dtype']} | {r['nulls']} "
              f"| {r['description']} |" for r in catalogue_rows()]
    for fset in FEATURE_SETS.values():
        if len(fset.features) < len(REGISTRY):
            lines += ["", f"## `{fset.name}`", "", ", ".join(f"`{n}`" for n in fset.features)]
    return "\n".join(lines) + "\n"


def write_docs(path: Path = DOCS_PATH) -> Path:
    """Write the catalogue atomically (temp file in the same directory, then os.replace)."""
    write_text(path, render_markdown())
    return path
