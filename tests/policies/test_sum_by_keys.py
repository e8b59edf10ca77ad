"""``thompson.sum_by_keys`` (the tables stage's combine of day counts and of a champion's table with the
week's) is the concat + groupby sum it replaces, to the last bit and dtype."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from models.thompson import sum_by_keys


def _reference(frames: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True).groupby(keys, as_index=False)[["successes", "failures"]].sum()


def _frames(rng: np.random.Generator, n_frames: int, key_type: str) -> list[pd.DataFrame]:
    users = np.array([f"u{i}" for i in range(40)] + ["Ünï", "a b", "Z"], dtype=object)
    items = np.array([f"i{i:03d}" for i in range(30)] + ["é"], dtype=object)
    out = []
    for j in range(n_frames):
        n = int(rng.integers(0, 400)) if j else 0  # an empty frame first (a champion-less base)
        user = rng.choice(users, n)
        item = rng.choice(items, n)
        if n:  # missing keys, which groupby drops
            user[rng.random(n) < 0.03] = None
        frame = pd.DataFrame({"user_id": user, "item_id": item,
                              # decayed weights: sums whose last bits depend on their order
                              "successes": rng.random(n) * 0.5 ** rng.random(n) * 1e3,
                              "failures": rng.random(n) / 3.0})
        if key_type == "str":
            frame = frame.astype({"user_id": "str", "item_id": "str"})
        elif key_type == "int":
            frame = frame.dropna().assign(user_id=lambda f: f["user_id"].str.len() * 7,
                                          item_id=lambda f: f["item_id"].str.len())
        out.append(frame)
    return out


@pytest.mark.parametrize("key_type", ["object", "str", "int"])
@pytest.mark.parametrize("n_frames", [1, 2, 35])
def test_sum_by_keys_is_concat_groupby_sum(key_type, n_frames):
    rng = np.random.default_rng(n_frames * 11 + len(key_type))
    frames = _frames(rng, n_frames, key_type)
    for keys in (["user_id", "item_id"], ["item_id"]):
        got = sum_by_keys(frames, keys)
        want = _reference(frames, keys)
        pdt.assert_frame_equal(got, want, check_exact=True)
        if sum(len(f) for f in frames):
            assert len(got) > 1


def test_sum_by_keys_sums_each_group_in_row_order():
    """Three values whose float sum depends on the order: the result is the in-order sum."""
    a = pd.DataFrame({"item_id": ["x"], "successes": [1e16], "failures": [0.0]})
    b = pd.DataFrame({"item_id": ["x"], "successes": [1.0], "failures": [0.0]})
    c = pd.DataFrame({"item_id": ["x"], "successes": [-1e16], "failures": [0.0]})
    for frames in ([a, b, c], [a, c, b], [b, a, c]):
        pdt.assert_frame_equal(sum_by_keys(frames, ["item_id"]), _reference(frames, ["item_id"]), check_exact=True)
