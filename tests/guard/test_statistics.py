"""The pure statistics: the mixture SPRT stays below alpha under daily looks and finds a real drop;
PSI is ~0 for the same distribution and large for a moved one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.config.guard import GuardSettings
from models.drift import EPSILON, categorical_psi, feature_drift, numeric_psi, shares
from models.sequential import msprt
from rankloop.guard import current_stretch, judge


def _daily_crossings(rng: np.random.Generator, *, days: int, per_day: int, rate_a: float, rate_b: float,
                     alpha: float, tau: float) -> bool:
    """Whether the test crosses 1/alpha at any of ``days`` daily looks (10-slot requests, binomial clicks)."""
    a = rng.binomial(10, rate_a, days * per_day) / 10
    b = rng.binomial(10, rate_b, days * per_day * 4) / 10
    for day in range(1, days + 1):
        look = msprt(a[: day * per_day], b[: day * 4 * per_day], theta0=0.0, tau=tau)
        if look.likelihood_ratio >= 1 / alpha:
            return True
    return False


def test_false_rejections_stay_below_alpha_however_many_daily_looks() -> None:
    rng = np.random.default_rng(0)
    runs = 400
    crossed = sum(_daily_crossings(rng, days=14, per_day=40, rate_a=0.18, rate_b=0.18, alpha=0.05, tau=0.05)
                  for _ in range(runs))
    assert crossed / runs <= 0.05, crossed
    # A fixed-horizon z-test looked at daily would not hold its level: the same data, 14 looks at 1.96.
    rng = np.random.default_rng(0)
    naive = 0
    for _ in range(runs):
        a = rng.binomial(10, 0.18, 14 * 40) / 10
        b = rng.binomial(10, 0.18, 14 * 160) / 10
        naive += any(abs(msprt(a[: d * 40], b[: d * 160], theta0=0, tau=1).delta)
                     / msprt(a[: d * 40], b[: d * 160], theta0=0, tau=1).std_error > 1.96 for d in range(1, 15))
    assert naive / runs > 0.1, naive


def test_a_halved_click_rate_is_found_within_days() -> None:
    rng = np.random.default_rng(1)
    found = sum(_daily_crossings(rng, days=3, per_day=35, rate_a=0.20, rate_b=0.10, alpha=0.05, tau=0.05)
                for _ in range(50))
    assert found == 50


def test_msprt_refuses_what_it_cannot_test() -> None:
    with pytest.raises(ValueError, match="at least 2 units"):
        msprt(np.array([0.1]), np.array([0.2, 0.3]), theta0=0, tau=0.05)
    with pytest.raises(ValueError, match="tau must be > 0"):
        msprt(np.array([0.1, 0.2]), np.array([0.2, 0.3]), theta0=0, tau=0)
    assert msprt(np.zeros(5), np.zeros(5), theta0=0, tau=0.05).likelihood_ratio == 1.0


def _requests(n_champion: int, n_previous: int, rate_champion: float, rate_previous: float, days: int = 3,
              release: str = "2/1", seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_champion + n_previous
    arm = np.array(["champion"] * n_champion + ["previous"] * n_previous)
    rng.shuffle(arm)
    rate = np.where(arm == "champion", rate_champion, rate_previous)
    ts = pd.Timestamp("2026-11-16", tz="UTC") + pd.to_timedelta(np.sort(rng.random(n)) * days, unit="D")
    return pd.DataFrame({"ts": ts, "arm": arm, "release": release, "click_rate": rng.binomial(10, rate) / 10,
                         "engagement_rate": rng.binomial(10, rate) / 10})


def test_judge_reverts_keeps_and_says_insufficient_traffic() -> None:
    guard = GuardSettings()
    status, reasons, figures, looks = judge(_requests(400, 100, 0.09, 0.20), guard)
    assert status == "revert" and "worse than its previous version" in reasons[0]
    assert figures["p_value"] <= guard.alpha and len(looks) >= 1 and figures["difference"] < -guard.margin
    status, reasons, _, _ = judge(_requests(400, 100, 0.20, 0.20), guard)
    assert status == "keep" and "no evidence of harm" in reasons[0]
    status, reasons, figures, looks = judge(_requests(400, 30, 0.05, 0.20), guard)
    assert status == "insufficient_traffic" and looks == []
    assert reasons == ("insufficient traffic: 400 champion and 30 previous request(s) since the promotion, "
                       "50 needed for each",)


def test_the_release_traffic_starts_after_the_last_request_of_another_release() -> None:
    before = _requests(200, 50, 0.2, 0.2, release="1/-")
    after = _requests(200, 50, 0.2, 0.2, release="2/1")
    after["ts"] += pd.Timedelta(days=5)
    back = _requests(100, 20, 0.2, 0.2, release="1/2")  # rolled back in between, then promoted again
    back["ts"] += pd.Timedelta(days=10)
    again = _requests(80, 20, 0.2, 0.2, release="2/1")
    again["ts"] += pd.Timedelta(days=15)
    served = pd.concat([before, after, back, again], ignore_index=True)
    stretch = current_stretch(served, 2, 1)
    assert len(stretch) == 100 and stretch["ts"].min() > back["ts"].max()
    assert len(current_stretch(served.iloc[: len(before) + len(after)], 2, 1)) == 250


def test_psi_is_small_for_the_same_distribution_and_large_for_a_moved_one() -> None:
    rng = np.random.default_rng(0)
    ref, same, moved = rng.normal(0, 1, 5000), rng.normal(0, 1, 5000), rng.normal(1.0, 1, 5000)
    assert numeric_psi(ref, same) < 0.02
    assert numeric_psi(ref, moved) > 0.25
    with_nan = np.where(rng.random(5000) < 0.3, np.nan, same)
    assert numeric_psi(ref, with_nan) > 0.25  # missing values are a bin of their own
    assert categorical_psi(["a"] * 50 + ["b"] * 50, ["a"] * 50 + ["b"] * 50) == pytest.approx(0.0)
    assert categorical_psi(["a"] * 90 + ["b"] * 10, ["a"] * 10 + ["b"] * 80 + ["c"] * 10) > 1.0
    assert shares(["x", "y", "y", None]) == {"<missing>": 0.25, "x": 0.25, "y": 0.5}
    frame = feature_drift(pd.DataFrame({"f": ref, "g": ref}), pd.DataFrame({"f": same, "g": moved}), ["f", "g"])
    assert list(frame["feature"]) == ["g", "f"] and frame.loc[0, "ks"] > 0.3


@pytest.mark.parametrize(("n_ref", "n_cur"), [(300, 700), (12_000, 25_001), (40_000, 15_000)])
def test_ks_statistic_is_scipys_statistic_bit_for_bit(n_ref: int, n_cur: int) -> None:
    """Small samples go to scipy (exact mode); large ones skip its p-value and keep its statistic."""
    from scipy.stats import ks_2samp

    from models.drift import ks_statistic

    rng = np.random.default_rng(n_ref)
    ref = np.round(rng.normal(0.0, 1.0, n_ref), 2)  # rounded: ties within and across the samples
    cur = np.round(rng.normal(0.05, 1.1, n_cur), 2)
    assert ks_statistic(ref, cur) == ks_2samp(ref, cur).statistic
    assert ks_statistic(cur, ref) == ks_2samp(cur, ref).statistic
    assert ks_statistic(ref, ref) == 0.0


def _psi_by_list(reference, current) -> float:
    """categorical_psi as first written: every value a Python object (the definition the fast path keeps)."""
    ref = pd.Series(list(reference), dtype=object).fillna("<missing>")
    cur = pd.Series(list(current), dtype=object).fillna("<missing>")
    cats = sorted(set(ref) | set(cur), key=str)
    ref_share = ref.value_counts(normalize=True).reindex(cats, fill_value=0.0).to_numpy()
    cur_share = cur.value_counts(normalize=True).reindex(cats, fill_value=0.0).to_numpy()
    ref_share, cur_share = np.maximum(ref_share, EPSILON), np.maximum(cur_share, EPSILON)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def _shares_by_list(values) -> dict[str, float]:
    series = pd.Series(list(values), dtype=object).fillna("<missing>").astype(str)
    return {str(k): float(v) for k, v in series.value_counts(normalize=True).sort_index().items()}


@pytest.mark.parametrize("dtype", ["object", "str", "category", "float"])
def test_category_mixes_counted_in_the_column_dtype_equal_the_list_definition(dtype):
    """The event and action mixes count a column in its own dtype (Arrow strings, categoricals with
    unused categories, numbers with NaN) instead of a Python object per value: the same shares and PSI,
    to the last digit."""
    rng = np.random.default_rng(5)
    words = np.array(["click", "view", "save", "purchase", "dismiss"])
    if dtype == "float":
        make = lambda n, p: pd.Series(np.where(rng.random(n) < 0.1, np.nan, rng.choice([1.0, 2.0, 3.0], n, p=p)))  # noqa: E731
    else:
        def make(n, p):
            values = pd.Series(rng.choice(words[:3], n, p=p), dtype=object)
            values[rng.random(n) < 0.1] = None
            if dtype == "category":
                return values.astype(pd.CategoricalDtype(list(words)))  # "purchase", "dismiss": unused
            return values.astype(dtype)
    ref, cur = make(3_000, [0.5, 0.3, 0.2]), make(2_000, [0.2, 0.3, 0.5])
    assert categorical_psi(ref, cur) == _psi_by_list(ref, cur) and categorical_psi(ref, cur) > 0.1
    assert shares(ref) == _shares_by_list(ref) and shares(cur) == _shares_by_list(cur)
    assert "<missing>" in shares(ref) and len(shares(ref)) == 4
    assert shares(ref.iloc[:0]) == {} and np.isnan(categorical_psi(ref.iloc[:0], cur))


def _drift_by_definition(ref: np.ndarray, cur: np.ndarray, bins: int = 10) -> dict[str, float]:
    """PSI over the reference's quantile bins counted value by value (a search of each among the edges), and KS
    as every value's ECDF gap searched in each sample: the definitions the sorted path keeps."""
    ref, cur = np.asarray(ref, dtype=float), np.asarray(cur, dtype=float)
    rf, cf = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    edges = np.unique(np.quantile(rf, np.linspace(0, 1, bins + 1)[1:-1])) if rf.size else np.array([])

    def shares(x: np.ndarray) -> np.ndarray:
        ok = np.isfinite(x)
        counts = np.bincount(np.searchsorted(edges, x[ok], side="right"), minlength=edges.size + 1)
        return np.append(counts, (~ok).sum()) / x.size

    r, c = np.maximum(shares(ref), EPSILON), np.maximum(shares(cur), EPSILON)
    out = {"psi": float(np.sum((c - r) * np.log(c / r))), "ks": float("nan")}
    if rf.size and cf.size:
        a, b = np.sort(rf), np.sort(cf)
        both = np.concatenate([rf, cf])  # in the values' order
        gaps = np.searchsorted(a, both, side="right") / a.size - np.searchsorted(b, both, side="right") / b.size
        low, high = np.clip(-gaps[np.argmin(gaps)], 0, 1), gaps[np.argmax(gaps)]
        out["ks"] = float(low if low > high else high)
    out["reference_mean"] = float(rf.mean()) if rf.size else float("nan")
    out["current_mean"] = float(cf.mean()) if cf.size else float("nan")
    return out


@pytest.mark.parametrize("shape", ["continuous", "ties", "counts", "constant", "non-finite", "all missing"])
def test_feature_drift_is_its_definition_bit_for_bit(shape: str) -> None:
    """The drift report sorts each sample once for both statistics; its PSI, KS and means are those of the
    definitions, to the last bit (samples past scipy's exact mode, with ties, NaN and infinities)."""
    from models.drift import feature_drift_of

    rng = np.random.default_rng(len(shape))
    n_ref, n_cur = 30_011, 24_007
    ref, cur = rng.normal(0.0, 1.0, n_ref), rng.normal(0.2, 1.3, n_cur)
    if shape == "ties":
        ref, cur = np.round(ref, 1), np.round(cur, 1)
    elif shape == "counts":
        ref, cur = rng.poisson(3.0, n_ref).astype(float), rng.poisson(3.4, n_cur).astype(np.int64)
    elif shape == "constant":
        ref, cur = np.full(n_ref, 2.5), np.r_[np.full(n_cur - 10, 2.5), np.full(10, 7.0)]
    elif shape == "non-finite":
        ref[rng.integers(0, n_ref, 900)] = np.nan
        cur[rng.integers(0, n_cur, 300)] = np.inf
        cur[rng.integers(0, n_cur, 300)] = -np.inf
    elif shape == "all missing":
        ref = np.full(n_ref, np.nan)
    got = feature_drift_of([("f", pd.Series(ref), pd.Series(cur))]).iloc[0]
    expected = _drift_by_definition(ref, cur)
    for name, value in expected.items():
        assert (np.isnan(value) and np.isnan(got[name])) or got[name] == value, (name, got[name], value)
    assert numeric_psi(ref, cur) == expected["psi"] or np.isnan(expected["psi"])
    if shape in ("continuous", "counts", "non-finite"):
        assert expected["ks"] > 0.01 and expected["psi"] > 0.01  # a real difference is measured


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_feature_drift_of_sorts_its_own_copies_never_the_callers_columns(dtype) -> None:
    """feature_drift_of sorts each sample in place where it owns it (a column converted to float64, all finite:
    no copy of a week's column); a caller's float64 column, a numpy array or one with missing values is left
    as it was, and the figures are those of copies."""
    from models.drift import feature_drift_of

    rng = np.random.default_rng(1)
    ref = pd.Series(rng.normal(0, 1, 4000).astype(dtype))
    cur = pd.Series(np.where(rng.random(3000) < 0.1, np.nan, rng.normal(0.5, 1, 3000)).astype(dtype))
    raw = rng.normal(0, 2, 2000)
    kept = ref.copy(), cur.copy(), raw.copy()
    frame = feature_drift_of([("a", ref, cur), ("b", raw, ref)])
    pd.testing.assert_series_equal(ref, kept[0])
    pd.testing.assert_series_equal(cur, kept[1])
    np.testing.assert_array_equal(raw, kept[2])
    again = feature_drift_of([("a", ref.copy(), cur.copy()), ("b", raw.copy(), ref.copy())])
    pd.testing.assert_frame_equal(frame, again)
    assert frame.set_index("feature").loc["a", "reference_mean"] == float(np.asarray(kept[0], dtype=float).mean())
