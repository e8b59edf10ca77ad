"""The builder forgets each memoised aggregate after the last feature that reads it (a probe over a few
rows tells which): the same features, each aggregate still computed once, fewer held at a time."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd
import pytest

import features
import features.build as build
from core.settings import Settings
from features.context import BuildContext

from .conftest import make_events, make_items

SETTINGS = Settings()


@pytest.fixture(scope="module")
def inputs() -> tuple[pd.DataFrame, pd.DataFrame]:
    events = make_events(seed=3, n_users=40, n_items=30, n_requests=600)
    imps, _ = features.ranking_queries(events, SETTINGS.labels)
    return imps, events


def _build(inputs, monkeypatch, *, forget: bool) -> tuple[dict[str, Any], Counter, int]:
    """The feature columns, how often each aggregate was made, and the most aggregates cached at once."""
    made: Counter = Counter()
    held = [0]
    memo = BuildContext.memo

    def counting(self, key, make, *, keep=False):
        store = self._kept if keep else self._cache
        if key not in store and not keep and self.trace is None:  # the real build, not the probe
            made[key] += 1
        value = memo(self, key, make, keep=keep)
        held[0] = max(held[0], len(self._cache)) if self.trace is None else held[0]
        return value

    monkeypatch.setattr(BuildContext, "memo", counting)
    if not forget:
        monkeypatch.setattr(build, "_last_uses", lambda ctx, specs: {})
    imps, events = inputs
    columns = dict(features.iter_features(imps, events, settings=SETTINGS.features))
    monkeypatch.undo()
    return columns, made, held[0]


def test_forgetting_aggregates_changes_no_feature_and_computes_none_twice(inputs, monkeypatch) -> None:
    kept, made_kept, held_kept = _build(inputs, monkeypatch, forget=False)
    forgot, made_forgot, held_forgot = _build(inputs, monkeypatch, forget=True)
    assert list(forgot) == list(kept) and len(kept) > 40
    for name in kept:
        pd.testing.assert_series_equal(pd.Series(forgot[name]), pd.Series(kept[name]), check_exact=True, obj=name)
    assert made_forgot == made_kept and max(made_kept.values()) == 1  # the probe saw every later read
    assert held_forgot < held_kept  # fewer aggregates held at once


def test_the_probe_names_a_last_reader_for_every_aggregate_the_build_makes(inputs) -> None:
    imps, events = inputs
    specs = build._ordered(features.get_feature_set(SETTINGS.features.feature_set).features)
    probe = BuildContext(imps.iloc[:50].copy(), events.iloc[:50].copy(), None, None, SETTINGS.features)
    last = build._last_uses(probe, specs)
    assert probe.trace is None and last
    assert all(0 <= i < len(specs) for i in last.values())
    assert len(set(last.values())) > 5  # aggregates go at many points, not all at the end


def test_the_user_grain_is_not_held_through_the_user_category_grain(inputs, monkeypatch) -> None:
    """uc_engage_share_28d reads one user count: its values are kept, not the user timeline and prefix sums."""
    from features.context import ENGAGE
    from features.registry import REGISTRY

    contexts: list[BuildContext] = []
    release = BuildContext.release

    def recording(self, **kwargs):
        contexts.append(self)
        release(self, **kwargs)

    monkeypatch.setattr(BuildContext, "release", recording)
    imps, events = inputs
    items = make_items(n_items=30)  # categories: user x category keys
    seen = []
    for name, values in features.iter_features(imps, events, items=items, settings=SETTINGS.features):
        if REGISTRY[name].grain == "user_category":
            ctx = contexts[-1]
            seen.append(name)
            assert not [k for k in ctx._cache if isinstance(k, tuple) and k[1:2] == ("user",)], name
            # Kept until its last reader (the share), forgotten with it.
            assert (("count", "user", ENGAGE, 28) in ctx._kept) is (name != "uc_engage_share_28d"), name
        if name == "uc_engage_share_28d":
            uc = build.build_columns(imps, events, ("uc_engage_count_28d", "user_engage_count_28d"), items=items,
                                     settings=SETTINGS.features)
            expected = uc["uc_engage_count_28d"] / uc["user_engage_count_28d"].clip(lower=1)
            assert (values == expected.to_numpy(dtype=values.dtype)).all() and (values > 0).any()
    assert "uc_engage_share_28d" in seen and len(seen) > 3


def test_trait_columns_go_after_their_last_reader(inputs, monkeypatch) -> None:
    """Event columns read through ``event_floats`` (the traits logged on events) are dropped from the
    builder's events after the last feature that reads them: the same features, the columns gone by the end."""
    import numpy as np

    from core.schema import TRAIT_COLUMNS

    imps, events = inputs
    rng = np.random.default_rng(2)
    events = events.assign(**{c: np.where(rng.random(len(events)) < 0.5, rng.random(len(events)), np.nan)
                              for c in TRAIT_COLUMNS})
    held: list[set[str]] = []
    forget = BuildContext.forget

    def watching(self, keys):
        forget(self, keys)
        if self.trace is None:  # the real build, not the probe
            held.append(set(self.events.columns))

    monkeypatch.setattr(BuildContext, "forget", watching)
    dropped = dict(features.iter_features(imps, events, settings=SETTINGS.features))
    monkeypatch.undo()
    monkeypatch.setattr(build, "_last_uses", lambda ctx, specs: {})
    kept = dict(features.iter_features(imps, events, settings=SETTINGS.features))
    assert list(dropped) == list(kept)
    for name in kept:
        pd.testing.assert_series_equal(pd.Series(dropped[name]), pd.Series(kept[name]), check_exact=True, obj=name)
    assert set(TRAIT_COLUMNS) <= held[0] and not set(TRAIT_COLUMNS) & held[-1]
    assert all(pd.Series(kept[f"user_trait_{c.removeprefix('trait_')}"]).nunique() > 1 for c in TRAIT_COLUMNS)


def test_a_dropped_column_is_never_read_as_absent(inputs) -> None:
    imps, events = inputs
    ctx = BuildContext(imps.iloc[:50].copy(), events.iloc[:200].assign(trait_openness=0.5), None, None,
                       SETTINGS.features)
    assert (ctx.event_floats("trait_openness") == 0.5).all()
    ctx.forget([("column", "trait_openness")])
    assert "trait_openness" not in ctx.events.columns
    with pytest.raises(RuntimeError, match="trait_openness"):
        ctx.event_floats("trait_openness")


def _nbytes(value: Any) -> int:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, tuple | list):
        return sum(_nbytes(v) for v in value)
    return 0


def test_kept_aggregates_go_after_their_last_reader_and_are_made_once(inputs, monkeypatch) -> None:
    """Masks, attribute codes, event values, kept counts (kept across grains) are forgotten after the last
    feature that reads them: the same features, each still made once, none held at the end."""
    imps, events = inputs
    items = make_items(n_items=30)

    def run(forget: bool) -> tuple[dict[str, Any], Counter, list[int]]:
        made: Counter = Counter()
        held: list[int] = []
        memo = BuildContext.memo

        def counting(self, key, make, *, keep=False):
            if keep and key not in self._kept and self.trace is None:
                made[key] += 1
            return memo(self, key, make, keep=keep)

        monkeypatch.setattr(BuildContext, "memo", counting)
        contexts: list[BuildContext] = []
        release = BuildContext.release
        monkeypatch.setattr(BuildContext, "release", lambda self: (contexts.append(self), release(self))[1])
        if not forget:
            monkeypatch.setattr(build, "_last_uses", lambda ctx, specs: {})
        columns = {}
        for name, values in features.iter_features(imps, events, items=items, settings=SETTINGS.features):
            columns[name] = values
            held.append(sum(_nbytes(v) for v in contexts[-1]._kept.values()))
        monkeypatch.undo()
        return columns, made, held

    kept, made_kept, held_kept = run(forget=False)
    forgot, made_forgot, held_forgot = run(forget=True)
    assert list(forgot) == list(kept)
    for name in kept:
        pd.testing.assert_series_equal(pd.Series(forgot[name]), pd.Series(kept[name]), check_exact=True, obj=name)
    assert made_forgot == made_kept and len(made_kept) > 10 and max(made_kept.values()) == 1
    assert {k[0] for k in made_kept if isinstance(k, tuple)} >= {"mask", "attribute", "count", "values"}
    assert held_forgot[-1] == 0 < held_kept[-1]  # nothing kept once the last feature is made
    assert max(held_forgot) < max(held_kept)
