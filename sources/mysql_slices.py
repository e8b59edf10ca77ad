"""MariaDB/MySQL window reads at Arrow speed in bounded memory.

connectorx reads a query straight into Arrow (about 7x faster than a pymysql cursor here) but
cannot stream, so the window is cut into time slices of at most about ``batch_rows`` rows each
(counted on the ts index, split further where events are dense), read one at a time in order.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

from sources import connect
from sources.mapping import FieldSpec
from sources.sql_reader import bound_literal, build_query, quote, resolve_unit
from sources.uri import SourceURI

_MIN_SLICE = timedelta(microseconds=2)
_MAX_SPLIT = 1024


def time_slices(count: Callable[[datetime, datetime], int], start: datetime, end: datetime,
                batch_rows: int) -> Iterator[tuple[datetime, datetime]]:
    """Consecutive non-empty sub-windows of ``[start, end)`` holding at most ``batch_rows`` rows each
    (a slice narrower than 2 us is returned whatever it holds)."""
    pending = [(start, end)]
    while pending:
        lo, hi = pending.pop()
        rows = count(lo, hi)
        if rows == 0:
            continue
        if rows <= batch_rows or hi - lo <= _MIN_SLICE:
            yield lo, hi
            continue
        parts = min(math.ceil(rows / batch_rows), _MAX_SPLIT)
        step = max((hi - lo) / parts, _MIN_SLICE / 2)
        cuts = [lo + step * i for i in range(1, parts) if lo + step * i < hi]
        bounds = [lo, *cuts, hi]
        pending.extend(reversed(list(zip(bounds, bounds[1:], strict=False))))


def connectorx_uri(src: SourceURI) -> str:
    """The URI connectorx accepts (``mysql://``, no driver suffix or options)."""
    rest = src.raw.split("://", 1)[1].split("?", 1)[0]
    return "mysql://" + rest


def window_batches(src: SourceURI, conn: Any, relation: str, leaves: dict[str, tuple[FieldSpec, pa.DataType]],
                   ts: FieldSpec, start: datetime, end: datetime, order: list[str],
                   batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Read the window slice by slice with connectorx (``conn`` counts rows per slice)."""
    import connectorx as cx

    def count(lo: datetime, hi: datetime) -> int:
        return _count(src, conn, relation, ts, lo, hi)

    uri = connectorx_uri(src)
    for lo, hi in time_slices(count, start, end, batch_rows):
        sql = build_query("mysql", relation, leaves, ts, lo, hi, order)
        table = connect.guarded(src, "reading rows", lambda sql=sql: cx.read_sql(uri, sql, return_type="arrow"))
        yield from table.to_batches()


def _count(src: SourceURI, conn: Any, relation: str, ts: FieldSpec, lo: datetime, hi: datetime) -> int:
    col = quote("mysql", ts.source or "")
    unit = resolve_unit("mysql", ts.unit)
    sql = (f"SELECT COUNT(*) FROM {quote('mysql', relation)} WHERE {col} >= {bound_literal('mysql', lo, unit)} "
           f"AND {col} < {bound_literal('mysql', hi, unit)}")

    def run() -> int:
        with contextlib.closing(conn.cursor()) as cur:
            cur.execute(sql)
            return int(cur.fetchall()[0][0])

    return connect.guarded(src, f"counting rows of {relation}", run)
