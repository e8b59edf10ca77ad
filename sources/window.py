"""The window ``[start, end)`` in the encoding the source stores its timestamp column in.

Each reader learns how the mapped ``ts`` column is stored (a native timestamp with or without time
zone, epoch numbers, or text) and encodes the bounds the same way, so the comparison the source
runs is a comparison of times: a ``TIMESTAMP`` against a timestamp, an epoch against a number in
the declared unit, text against text in the column's own layout. A mapping whose declared unit
cannot be compared with the stored type is refused (``BAD_MAPPING``) with what was found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import pyarrow as pa

from core.errors import Reason, SourceError

Found = Literal["timestamp", "naive", "integer", "real", "text", "unknown", "other"]
ISO_LAYOUT = "%Y-%m-%d %H:%M:%S"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PER_US = {"s": 1_000_000, "ms": 1_000, "us": 1}


@dataclass(frozen=True)
class TsStorage:
    """How the source stores ``ts``: ``timestamp`` (time-zone aware), ``naive`` (UTC wall clock,
    e.g. MySQL ``DATETIME``), ``epoch`` numbers in ``unit``, or ``text`` in ``layout``."""

    kind: Literal["timestamp", "naive", "epoch", "text"]
    unit: str | None = None
    layout: str | None = None
    iso: bool = False  # text in the default ISO layout: a fraction is appended to bounds that have one

    def encode(self, moment: datetime) -> datetime | int | float | str:
        """``moment`` (aware) as the value to compare the stored column with."""
        moment = moment.astimezone(UTC)
        if self.kind == "timestamp":
            return moment
        if self.kind == "naive":
            return moment.replace(tzinfo=None)
        if self.kind == "epoch":
            return epoch_bound(micros(moment), self.unit or "us")
        assert self.layout is not None
        if self.iso:
            text = moment.strftime(self.layout)
            return text + f".{moment.microsecond:06d}" if moment.microsecond else text
        return _ceil(moment, self.layout).strftime(self.layout)


def micros(moment: datetime) -> int:
    """Microseconds since the epoch (exact, no float rounding)."""
    delta = moment.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def epoch_bound(us: int, unit: str) -> int | float:
    """A bound in epoch ``unit`` such that ``value >= bound`` iff ``value`` is at or after the moment."""
    if unit == "s":
        return us / 1_000_000
    if unit == "ns":
        return us * 1000
    return -(-us // _PER_US[unit])


def arrow_found(kind: pa.DataType) -> Found:
    """The storage kind of an Arrow column type (what ADBC and Parquet report)."""
    if pa.types.is_null(kind):
        return "unknown"
    if pa.types.is_timestamp(kind):
        return "timestamp" if kind.tz else "naive"
    if pa.types.is_date(kind):
        return "naive"
    if pa.types.is_integer(kind):
        return "integer"
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "real"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "text"
    return "other"


def _ceil(moment: datetime, layout: str) -> datetime:
    """``moment`` rounded up to the layout's precision (a stored value at that precision is at or
    after ``moment`` iff it is at or after the rounded bound)."""
    step = next((s for d, s in (("%f", None), ("%S", timedelta(seconds=1)), ("%M", timedelta(minutes=1)),
                                ("%H", timedelta(hours=1))) if d in layout), timedelta(days=1))
    if step is None:
        return moment
    floor = moment.replace(tzinfo=None) - datetime(1970, 1, 1)
    ticks = math.ceil(floor / step)
    return datetime(1970, 1, 1, tzinfo=UTC) + ticks * step


def resolve_storage(found: Found, declared: str, layout: str | None, *, column: str, where: str,
                    found_type: str, sample: str | None = None) -> TsStorage:
    """The storage of ``ts`` from what the source reports and what the mapping declares.

    Args:
        found: the kind of the stored column (``unknown``: the source cannot tell, e.g. no rows).
        declared: the mapping's ``unit`` (auto, timestamp, s, ms, us, ns).
        layout: the mapping's ``format`` for text timestamps (None: ISO 8601).
        column: the source column, for messages.
        where: the table/collection and source, for messages.
        found_type: the source's own type name, for messages.
        sample: one stored text value (picks ``T`` or space between date and time in ISO text).

    Raises:
        SourceError: (Reason.BAD_MAPPING) the declared unit cannot be compared with the stored type.
    """
    epoch = declared in ("s", "ms", "us", "ns")
    if found == "unknown":
        found = "integer" if epoch or declared == "auto" else "timestamp"
    if found in ("timestamp", "naive"):
        if epoch:
            _refuse(column, where, found_type, f"unit: {declared}", "a native timestamp: declare `unit: timestamp`")
        return TsStorage(found)
    if found in ("integer", "real"):
        if not epoch and declared != "auto":
            _refuse(column, where, found_type, f"unit: {declared}", "numbers: declare their epoch unit "
                    "(`unit: s`, `ms`, `us` or `ns`)")
        return TsStorage("epoch", unit=declared if epoch else "us")
    if found == "text":
        if epoch:
            _refuse(column, where, found_type, f"unit: {declared}", "text, and epoch numbers stored as text do "
                    "not sort as numbers: convert them in a `query:` (e.g. CAST(col AS BIGINT))")
        if layout is not None:
            return TsStorage("text", layout=layout)
        separator = "T" if sample is not None and len(sample) > 10 and sample[10] == "T" else " "
        return TsStorage("text", layout=ISO_LAYOUT.replace(" ", separator), iso=True)
    _refuse(column, where, found_type, f"unit: {declared}", "neither a timestamp, a number nor text")
    raise AssertionError("unreachable")


def _refuse(column: str, where: str, found_type: str, declared: str, why: str) -> None:
    raise SourceError(f"cannot push the window down on ts column {column!r} of {where}: it is stored as "
                      f"{found_type} and the mapping says {declared}; the column holds {why}",
                      reason=Reason.BAD_MAPPING, details={"column": column, "stored_as": found_type},
                      hint="fix the `ts` entry of the mapping (docs/sources.md, 'Timestamps')")
