"""Extraction benchmark against the local PostgreSQL: ours vs raw ADBC vs pandas.read_sql
(SQLAlchemy + psycopg2, the usual path, and over an ADBC DBAPI connection).

Each variant runs in a fresh subprocess so its peak RSS is its own; ``ours_N_prefetch0`` is ours
without the background reader (fetch and write in turn). The 1-minute load average is recorded
before and after each variant. Run from the repo root (under the machine-wide lock):

    .venv/bin/python bench/extract_bench.py --rows 2000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

DEFAULT_URI = "postgresql://postgres@127.0.0.1:5432/test"
TABLE = "rl_src_bench_interactions"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
STEP_US = 1_000  # one event per millisecond


def load(uri: str, rows: int) -> None:
    """Write ``rows`` canonical interactions (in chunks) and index ts."""
    import numpy as np
    import pyarrow as pa

    from rankloop.schema import INTERACTION_SCHEMA
    from sources import write_table

    chunk = 500_000
    for lo in range(0, rows, chunk):
        n = min(chunk, rows - lo)
        idx = np.arange(lo, lo + n)
        rng = np.random.default_rng(lo)
        cols = {f.name: pa.nulls(n, f.type) for f in INTERACTION_SCHEMA}
        cols.update(
            event_id=pa.array(np.char.add("e", idx.astype(str))), user_id=pa.array(np.char.add("u", (idx % 5000).astype(str))),
            item_id=pa.array(np.char.add("i", (idx % 20000).astype(str))),
            event_type=pa.array(np.array(["impression", "click", "dwell", "rating"])[idx % 4]),
            value=pa.array(rng.random(n)), ts=pa.array(int(T0.timestamp()) * 1_000_000 + idx * STEP_US).cast(pa.timestamp("us", tz="UTC")),
            session_id=pa.array(np.char.add("s", (idx // 20).astype(str))), position=pa.array(idx % 10, pa.int32()),
            propensity=pa.array(rng.random(n)), action_id=pa.array(idx % 27, pa.int32()),
            device=pa.array(np.array(["mobile", "desktop", "tv"])[idx % 3]), trait_openness=pa.array(rng.random(n)),
        )
        write_table(uri, TABLE, pa.table(cols, schema=INTERACTION_SCHEMA), mode="replace" if lo == 0 else "append",
                    indexes=[("ts",)] if lo + n >= rows else ())


def mapping_file(directory: Path) -> Path:
    from sources.mapping import MAPPINGS_DIR

    path = directory / "bench_mapping.yaml"
    path.write_text((MAPPINGS_DIR / "rankloop.yaml").read_text().replace("table: interactions", f"table: {TABLE}", 1))
    return path


def window(rows: int) -> tuple[datetime, datetime]:
    return T0, T0 + timedelta(microseconds=rows * STEP_US)


def run_variant(variant: str, uri: str, rows: int, window_rows: int) -> dict[str, float]:
    """Body of one subprocess: time one variant, return rows and seconds."""
    start, end = window(window_rows)
    with tempfile.TemporaryDirectory() as tmp:
        mapping = mapping_file(Path(tmp))
        from rankloop.schema import INTERACTION_SCHEMA
        from sources.mapping import load_mapping
        from sources.sql_reader import build_query, typed_leaves
        from sources.transform import leaf_aliases

        spec, _ = load_mapping(mapping)
        leaves = typed_leaves(spec, INTERACTION_SCHEMA, leaf_aliases(spec))
        sql = build_query("postgresql", TABLE, leaves, spec.ts_spec, start, end, ["ts", "event_id"])
        t = time.perf_counter()
        if variant.startswith("ours"):
            from sources import extract_snapshot

            prefetch = {"prefetch": 0} if variant == "ours_prefetch0" else {}
            n = extract_snapshot(uri, mapping, start, end, Path(tmp) / "snaps", **prefetch).rows
        elif variant == "adbc_raw":
            import adbc_driver_postgresql.dbapi as pg

            with pg.connect(uri) as conn, conn.cursor() as cur:
                cur.execute(sql)
                n = cur.fetch_arrow_table().num_rows
        elif variant == "pandas_adbc":
            import adbc_driver_postgresql.dbapi as pg
            import pandas as pd

            with pg.connect(uri) as conn:
                n = len(pd.read_sql(sql, conn))
        else:
            import pandas as pd
            import sqlalchemy

            engine = sqlalchemy.create_engine(uri.replace("postgresql://", "postgresql+psycopg2://", 1))
            with engine.connect() as conn:
                n = len(pd.read_sql(sqlalchemy.text(sql), conn))
            engine.dispose()
        seconds = time.perf_counter() - t
    return {"rows": n, "seconds": seconds}


def measure(variant: str, uri: str, rows: int, window_rows: int) -> dict[str, float]:
    """Run a variant in a fresh subprocess; peak RSS via RUSAGE_CHILDREN of a one-child wrapper."""
    code = (f"import json, resource, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import extract_bench as b; r = b.run_variant({variant!r}, {uri!r}, {rows}, {window_rows}); "
            "u = resource.getrusage(resource.RUSAGE_SELF); r['peak_rss_mb'] = u.ru_maxrss / 1024; "
            "r['process_cpu_s'] = u.ru_utime + u.ru_stime; print(json.dumps(r))")
    load_before = os.getloadavg()[0]
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["rows_per_s"] = result["rows"] / result["seconds"]
    result["load_1min_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--uri", default=DEFAULT_URI)
    parser.add_argument("--skip-load", action="store_true", help="reuse the table a --keep run left")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark table afterwards")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of all variants (interleaved); figures are each variant's median round")
    args = parser.parse_args()
    if not args.skip_load:
        t = time.perf_counter()
        load(args.uri, args.rows)
        print(f"loaded {args.rows:,} rows in {time.perf_counter() - t:.1f}s")
    variants = {"ours_N/2": ("ours", args.rows // 2), "ours_N": ("ours", args.rows),
                "ours_N_prefetch0": ("ours_prefetch0", args.rows), "adbc_raw_N": ("adbc_raw", args.rows),
                "pandas_sqlalchemy_N": ("pandas_sqlalchemy", args.rows), "pandas_adbc_N": ("pandas_adbc", args.rows)}
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for _ in range(args.repeats):  # interleaved, so a burst of load from elsewhere hits every variant alike
        for name, (variant, window_rows) in variants.items():
            rounds[name].append(measure(variant, args.uri, args.rows, window_rows))
    runs = {name: {**sorted(rs, key=lambda r: r["seconds"])[len(rs) // 2],
                   "all_seconds": [round(r["seconds"], 3) for r in rs]} for name, rs in rounds.items()}
    print(f"{'variant (median)':<20}{'rows':>12}{'seconds':>10}{'rows/s':>14}{'peak RSS MB':>14}{'CPU s':>8}"
          "  load before/after, all rounds' seconds")
    for name, r in runs.items():
        print(f"{name:<20}{r['rows']:>12,}{r['seconds']:>10.2f}{r['rows_per_s']:>14,.0f}{r['peak_rss_mb']:>14.0f}"
              f"{r['process_cpu_s']:>8.2f}  {r['load_1min_before_after']} {r['all_seconds']}")
    ours, raw, pandas, pandas_adbc = (runs[k]["rows_per_s"] for k in
                                      ("ours_N", "adbc_raw_N", "pandas_sqlalchemy_N", "pandas_adbc_N"))
    summary = {"ours_vs_adbc": ours / raw, "ours_vs_pandas_sqlalchemy": ours / pandas,
               "ours_vs_pandas_adbc": ours / pandas_adbc, "adbc_vs_pandas_sqlalchemy": raw / pandas,
               "ours_prefetch0_vs_adbc": runs["ours_N_prefetch0"]["rows_per_s"] / raw,
               "rss_growth_N_over_half": runs["ours_N"]["peak_rss_mb"] / runs["ours_N/2"]["peak_rss_mb"]}
    print(json.dumps(summary, indent=1))
    out = Path(__file__).parent / "results" / "extract.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": args.rows, "uri": "redacted-local-postgres", "repeats": args.repeats,
                               "runs": runs, "summary": summary, "versions": versions(),
                               "measured_at": datetime.now(UTC).isoformat()}, indent=2))
    if not args.keep:
        drop(args.uri)


def versions() -> dict[str, str]:
    """The installed versions of the libraries the variants use (their speed moves between releases)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("adbc-driver-postgresql", "adbc-driver-manager", "pyarrow", "pandas", "sqlalchemy", "psycopg2-binary"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "absent"
    return found


def drop(uri: str) -> None:
    """Remove the benchmark table (the test database is shared)."""
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.commit()


if __name__ == "__main__":
    _ = resource  # peak RSS is read inside each subprocess
    main()
