"""Immutable, content-addressed Parquet snapshots of a window of interactions.

``snapshot_dir/<digest>/`` holds ``data.parquet`` (canonical schema) and ``manifest.json``. The
digest is sha256 over the data (streamed, column by column) plus the query, the mapping's content
hash and the window, so re-extracting unchanged data gives the same digest and reuses the folder.
A snapshot is written into ``snapshot_dir/.tmp-<pid>-<random>/`` and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from filelock import FileLock

from core.atomic import write_json
from core.errors import Reason, SourceError
from core.parquet import open_for_streaming
from core.schema import SOURCE_ERRORS
from sources.connect import with_retries
from sources.hashing import DIGEST_FORMAT, TableHasher
from sources.mapping import Mapping, load_mapping
from sources.stream import ReadCounts, open_stream
from sources.transform import mapping_schema
from sources.uri import parse_uri

log = logging.getLogger(__name__)
INDEX_FILE = "index.json"
INDEX_LOCK = ".index.lock"
# Dictionary-encode the canonical columns with a small vocabulary only: ids (even repeated ones) cost a
# hash per value and zstd compresses their repeats as well (narrow and simulator tables: 12% smaller,
# 0.1-0.25 s faster for 2M rows). Statistics of text columns (min/max per page) are never used to skip
# snapshot data and cost another 0.1-0.2 s: only non-text columns (ts above all) get them.
_DICTIONARY = ("event_type", "device", "content_type", "category", "mood", "time_of_day", "policy_version")
_TMP_PREFIX = ".tmp-"
_ROW_GROUP_ROWS = 131_072  # rows per batch when re-reading a snapshot file


@dataclass(frozen=True)
class Snapshot:
    """One extracted window: where it is, what it holds, and whether it was reused."""

    path: Path
    digest: str
    rows: int
    reused: bool
    manifest: dict[str, Any] = field(repr=False)
    previous: dict[str, Any] | None
    min_ts: datetime | None
    max_ts: datetime | None


def extract_snapshot(
    uri: str,
    mapping: str | Path,
    start: datetime,
    end: datetime,
    snapshot_dir: Path,
    *,
    batch_rows: int = 250_000,
    retries: int = 3,
    retry_delay_s: float = 2.0,
    prefetch: int = 2,
) -> Snapshot:
    """Extract interactions with ``start <= ts < end`` into an immutable snapshot (or reuse one).

    Args:
        uri: source URI (sqlite, postgresql, mysql, mongodb, or a Parquet path); may hold a password.
        mapping: shipped mapping name or mapping file path.
        start: inclusive window start (naive datetimes are taken as UTC).
        end: exclusive window end.
        snapshot_dir: folder of snapshots (created if absent).
        batch_rows: rows per streamed batch (bounds memory).
        retries: retries of transient source failures (unreachable server).
        retry_delay_s: first retry delay; doubles each time.
        prefetch: raw batches fetched ahead in a background thread while the current one is mapped,
            hashed and written (0 = fetch and write in turn); memory grows by at most this many batches.

    Returns:
        The :class:`Snapshot`; ``reused`` tells whether an identical one already existed. Its table
        has :func:`mapping_schema`: every canonical column (nullable: values that could not be
        converted are null, with their raw text in ``source_errors``), then the extra columns.
        The manifest's ``counts`` hold the source's count of the window, the rows read, and the
        rows the mapping's filters dropped.

    Raises:
        SourceError: the source is unreachable (after retries), refuses us, or lacks what the mapping
            needs; SOURCE_COUNT when the rows read differ from the source's count of the window.
        ValueError: ``start`` is not before ``end`` or ``batch_rows`` < 1.
    """
    start, end = _utc(start), _utc(end)
    if start >= end or batch_rows < 1 or prefetch < 0:
        raise ValueError(f"need start < end, batch_rows >= 1 and prefetch >= 0; got start={start}, end={end}, "
                         f"batch_rows={batch_rows}, prefetch={prefetch}")
    src = parse_uri(uri)
    spec, mapping_hash = load_mapping(mapping)
    snapshot_dir = Path(snapshot_dir)
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(snapshot_dir)
    ident = {"source": src.redacted, "mapping": spec.name, "mapping_hash": mapping_hash,
             "start": start.isoformat(), "end": end.isoformat()}

    def attempt() -> tuple[Path, dict[str, Any]]:
        return _write_temp(src, spec, start, end, snapshot_dir, batch_rows, prefetch, ident)

    tmp, manifest = with_retries(attempt, retries=retries, delay_s=retry_delay_s, what=f"extracting {src.redacted}")
    return _publish(snapshot_dir, tmp, manifest, ident)


def _utc(moment: datetime) -> datetime:
    if not isinstance(moment, datetime):
        raise TypeError(f"window bounds must be datetimes, got {type(moment).__name__}")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _write_temp(src: Any, spec: Mapping, start: datetime, end: datetime, snapshot_dir: Path, batch_rows: int,
                prefetch: int, ident: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    schema = mapping_schema(spec)
    stream = open_stream(src, spec, schema, start=start, end=end, batch_rows=batch_rows, prefetch=prefetch)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=snapshot_dir))
    try:
        stats = _write_parquet(stream.batches, tmp / "data.parquet", schema)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    digest = snapshot_digest(ident, stream.query, stats["column_digests"])
    manifest = {**ident, "kind": src.kind, "query": stream.query, "digest": digest, "digest_format": DIGEST_FORMAT,
                **stats, "counts": _counts(stream.counts, stats["rows"]),
                "schema": [f.name + ":" + str(f.type) for f in schema],
                "created_at": datetime.now(UTC).isoformat(), "files": {"data.parquet": stats["data_sha256"]}}
    return tmp, manifest


def _counts(counts: ReadCounts, rows: int) -> dict[str, Any]:
    """The window's accounting: source count = rows read = rows written + rows filtered."""
    if counts.rows_read - counts.rows_filtered != rows:
        raise SourceError(f"wrote {rows} rows but read {counts.rows_read} and filtered {counts.rows_filtered}",
                          reason=Reason.SOURCE_COUNT, details={"rows": rows, "rows_read": counts.rows_read})
    return {"source_rows": counts.source_rows, "rows_read": counts.rows_read, "rows_filtered": counts.rows_filtered,
            "rows_written": rows, "parts": counts.parts}


def snapshot_digest(ident: dict[str, Any], query: str, column_digests: dict[str, str]) -> str:
    """sha256 over the column digests, the query, the mapping's content hash and the window."""
    digest_input = {**{k: ident[k] for k in ("mapping_hash", "start", "end")}, "query": query,
                    "columns": column_digests}
    if DIGEST_FORMAT != 1:
        digest_input["digest_format"] = DIGEST_FORMAT
    return hashlib.sha256(json.dumps(digest_input, sort_keys=True).encode()).hexdigest()


def _write_parquet(batches: Any, path: Path, schema: pa.Schema) -> dict[str, Any]:
    hasher, file_hash = TableHasher(schema), hashlib.sha256()
    rows, lo, hi, with_errors = 0, None, None, 0
    statistics = [f.name for f in schema if not pa.types.is_string(f.type)]
    with pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=list(_DICTIONARY),
                          write_statistics=statistics) as writer:
        for table in batches:
            writer.write_table(table)
            hasher.update(table)
            rows += table.num_rows
            lo, hi = _extend(lo, hi, table.column("ts"))
            with_errors += table.num_rows - table.column(SOURCE_ERRORS).null_count
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            file_hash.update(block)
    if with_errors:
        log.warning("%d row(s) hold values that could not be converted (nulls; raw text in %s): the contract "
                    "quarantines them", with_errors, SOURCE_ERRORS)
    return {"rows": rows, "rows_with_source_errors": with_errors, "min_ts": lo.isoformat() if lo else None,
            "max_ts": hi.isoformat() if hi else None, "column_digests": hasher.hexdigests(),
            "data_sha256": file_hash.hexdigest()}


def _extend(lo: datetime | None, hi: datetime | None, ts: pa.ChunkedArray) -> tuple[datetime | None, datetime | None]:
    if len(ts) == 0:
        return lo, hi
    mm = pc.min_max(ts)
    bmin, bmax = mm["min"].as_py(), mm["max"].as_py()
    if bmin is None:
        return lo, hi
    return (bmin if lo is None else min(lo, bmin)), (bmax if hi is None else max(hi, bmax))


def _publish(snapshot_dir: Path, tmp: Path, manifest: dict[str, Any], ident: dict[str, Any]) -> Snapshot:
    digest = manifest["digest"]
    final = snapshot_dir / digest
    reused = (final / "manifest.json").is_file()
    if reused:
        shutil.rmtree(tmp, ignore_errors=True)
        manifest = json.loads((final / "manifest.json").read_text())
    else:
        _write_json(tmp / "manifest.json", manifest)
        try:
            os.replace(tmp, final)
        except OSError:  # a concurrent run published the same digest first
            shutil.rmtree(tmp, ignore_errors=True)
            reused = True
    previous = _update_index(snapshot_dir, ident, manifest)
    _log_outcome(manifest, reused, previous)
    return Snapshot(path=final / "data.parquet", digest=digest, rows=int(manifest["rows"]), reused=reused,
                    manifest=manifest, previous=previous, min_ts=_parse_ts(manifest.get("min_ts")),
                    max_ts=_parse_ts(manifest.get("max_ts")))


def _log_outcome(manifest: dict[str, Any], reused: bool, previous: dict[str, Any] | None) -> None:
    if reused:
        log.info("snapshot %s reused: %d rows of %s [%s, %s) unchanged", manifest["digest"][:12], manifest["rows"],
                 manifest["source"], manifest["start"], manifest["end"])
    elif previous is not None:
        log.info("snapshot %s written: data changed since %s, rows %d -> %d", manifest["digest"][:12],
                 previous["digest"][:12], previous["rows_before"], previous["rows_after"])
    else:
        log.info("snapshot %s written: %d rows of %s [%s, %s)", manifest["digest"][:12], manifest["rows"],
                 manifest["source"], manifest["start"], manifest["end"])


def _parse_ts(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _index_key(ident: dict[str, Any]) -> str:
    return f"{ident['source']}|{ident['mapping']}@{ident['mapping_hash'][:16]}|{ident['start']}|{ident['end']}"


def read_index(snapshot_dir: Path) -> dict[str, Any]:
    """The index (source|mapping|window -> latest snapshot); empty when absent."""
    path = Path(snapshot_dir) / INDEX_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def prior_exposures(snapshot_dir: Path, source: str, mapping: str, start: datetime, lookback: timedelta,
                    exposure_types: tuple[str, ...] = ("impression", "view")) -> pa.Table | None:
    """Exposures (``user_id``, ``item_id``, ``ts``) in ``[start - lookback, start)`` from the snapshots
    already taken of the same source and mapping, for the contract's exposure link
    (``check_interactions(..., prior_exposures=...)``): a purchase early in a window may follow a view
    in the window before.

    Args:
        snapshot_dir: the snapshots folder (its ``index.json`` lists the windows taken).
        source: the redacted source URI, as recorded in the index.
        mapping: the mapping name.
        start: the window's start.
        lookback: how far back to look.
        exposure_types: event types that count as an exposure.

    Returns:
        The exposures, or None when no snapshot of that source and mapping overlaps the lookback.
    """
    start = _utc(start)
    since = start - lookback
    tables = []
    for key, entry in read_index(snapshot_dir).items():
        parts = key.split("|")
        if len(parts) != 4 or parts[0] != source or parts[1].split("@", 1)[0] != mapping:
            continue
        lo, hi = datetime.fromisoformat(parts[2]), datetime.fromisoformat(parts[3])
        path = Path(snapshot_dir) / entry["digest"] / "data.parquet"
        if hi <= since or lo >= start or not path.is_file():
            continue
        ts = pa.scalar(since, pa.timestamp("us", tz="UTC")), pa.scalar(start, pa.timestamp("us", tz="UTC"))
        found = pq.read_table(path, columns=["user_id", "item_id", "ts", "event_type"])
        keep = pc.and_(pc.is_in(found["event_type"], value_set=pa.array(exposure_types)),
                       pc.and_(pc.greater_equal(found["ts"], ts[0]), pc.less(found["ts"], ts[1])))
        tables.append(found.filter(keep).select(["user_id", "item_id", "ts"]))
    return pa.concat_tables(tables) if tables else None


def _update_index(snapshot_dir: Path, ident: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any] | None:
    # Read-modify-write of one shared file: concurrent extracts (a backfill beside the weekly run, the
    # Dask path's per-day snapshots) hold the lock so no entry is lost.
    with FileLock(str(snapshot_dir / INDEX_LOCK)):
        return _update_index_locked(snapshot_dir, ident, manifest)


def _update_index_locked(snapshot_dir: Path, ident: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any] | None:
    index = read_index(snapshot_dir)
    key = _index_key(ident)
    old = index.get(key)
    fmt = manifest.get("digest_format", 1)
    index[key] = {"digest": manifest["digest"], "rows": manifest["rows"], "digest_format": fmt,
                  "updated_at": datetime.now(UTC).isoformat()}
    _write_json(snapshot_dir / INDEX_FILE, index)
    if old is None:
        return None
    previous = {"digest": old["digest"], "rows_before": old["rows"], "rows_after": manifest["rows"],
                "changed": old["digest"] != manifest["digest"]}
    if old.get("digest_format", 1) != fmt and previous["changed"]:
        # digests of different formats never match: compare the data itself, hashed the current way
        previous["changed"] = _column_digests(snapshot_dir / old["digest"] / "data.parquet") != manifest.get("column_digests")
        previous["digest_format_before"] = old.get("digest_format", 1)
    return previous


def _column_digests(path: Path) -> dict[str, str] | None:
    """Current-format column digests of a snapshot file, streamed by row group (None if absent)."""
    if not path.is_file():
        return None
    parquet = open_for_streaming(path)
    hasher = TableHasher(parquet.schema_arrow)
    for batch in parquet.iter_batches(batch_size=_ROW_GROUP_ROWS):
        hasher.update(pa.Table.from_batches([batch]))
    return hasher.hexdigests()


def _write_json(path: Path, payload: Any) -> None:
    write_json(path, payload)


def clean_stale_temps(snapshot_dir: Path) -> list[Path]:
    """Remove temp folders left by dead processes (they are never read); returns what was removed."""
    removed = []
    for tmp in Path(snapshot_dir).glob(f"{_TMP_PREFIX}*"):
        pid = tmp.name[len(_TMP_PREFIX):].split("-", 1)[0]
        if tmp.is_dir() and not _alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
            log.info("removed stale snapshot temp folder %s", tmp.name)
    return removed


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def load_snapshot(path_or_digest: str | Path, snapshot_dir: Path | None = None) -> pa.Table:
    """Read a snapshot's table by digest (or digest prefix), folder, or ``data.parquet`` path
    (its own schema: see :func:`extract_snapshot`).

    Raises:
        SourceError: (Reason.NOT_FOUND) no such snapshot.
    """
    path = Path(path_or_digest)
    if path.is_dir():
        path = path / "data.parquet"
    if not path.is_file() and snapshot_dir is not None:
        matches = sorted(p for p in Path(snapshot_dir).glob(f"{path_or_digest}*") if not p.name.startswith("."))
        if len(matches) == 1:
            path = matches[0] / "data.parquet"
    if not path.is_file():
        raise SourceError(f"snapshot {str(path_or_digest)!r} not found (snapshot dir {snapshot_dir})",
                          reason=Reason.NOT_FOUND)
    return pq.read_table(path)


def snapshot_dataset_info(snapshot: Snapshot) -> dict[str, Any]:
    """Name, digest, source, schema and profile for ``mlflow.data`` (the flow logs it)."""
    m = snapshot.manifest
    return {
        "name": f"{m['mapping']}[{m['start']},{m['end']})",
        "digest": snapshot.digest,
        "source": m["source"],
        "path": str(snapshot.path),
        "schema": {f.split(":", 1)[0]: f.split(":", 1)[1] for f in m.get("schema", [])},
        "profile": {"rows": snapshot.rows, "min_ts": m.get("min_ts"), "max_ts": m.get("max_ts"),
                    "start": m["start"], "end": m["end"], "mapping_hash": m["mapping_hash"]},
    }
