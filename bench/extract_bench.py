"""Extraction benchmark against the local PostgreSQL, on several table shapes: ours vs raw ADBC vs pandas.

Shapes (each a PostgreSQL table of ``--rows`` rows, one event per millisecond, ts indexed):

* ``narrow``: a plain 11-column table (integer ids, text event type and device, a price numeric),
  mapped with a lookup, integer ids to text, and one extra column;
* ``cochain``: seed 000/001's ``user_interactions`` layout, mapped by the shipped ``cochain_pg``;
* ``ecommerce``: seed 004's layout with a JSONB ``context`` (the ``ecommerce_mysql`` mapping's
  JSON paths, extracted by the server);
* ``canonical``: the simulator's 23-column layout, mapped by the shipped ``rankloop`` mapping;
* ``wide``: 30 columns, 20 of them mapped (canonical columns and extras).

Variants, each in a fresh subprocess (its own peak RSS and CPU), all reading the same window:
``ours`` (``sources.extract_snapshot``), ``adbc_raw`` (ADBC ``fetch_arrow_table`` of the very
statement ours runs, from ``sources.window_queries``), ``pandas`` (``pandas.read_sql`` of that
statement through SQLAlchemy + psycopg2, the usual path). Rounds interleave all shapes and
variants; each figure is the variant's median round, with the 1-minute load average around it.
Run from the repo root under the machine-wide lock:

    flock /tmp/rankloop-heavy.lock .venv/bin/python bench/extract_bench.py --rows 2000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import commit, versions  # noqa: E402 - bench/measure.py

DEFAULT_URI = "postgresql://postgres@127.0.0.1:5432/test"
PREFIX = "rl_src_bench_"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
STEP_MS = 1
SHAPES = ("narrow", "cochain", "ecommerce", "canonical", "wide")
VARIANTS = ("ours", "adbc_raw", "pandas")

# Each shape: the CREATE TABLE ... AS SELECT body over generate_series(i), and its mapping.
_TS = f"timestamptz '{T0.isoformat()}' + i * interval '{STEP_MS} millisecond'"
_SQL = {
    "narrow": f"""i::bigint AS id, (i % 5000)::bigint AS user_id, (i % 20000)::bigint AS item_id,
        (ARRAY['VIEW','CLICK','CART','BUY'])[i % 4 + 1] AS kind, random() AS dwell, {_TS} AS ts,
        's' || (i / 20) AS session, (i % 10)::int AS slot, (ARRAY['mobile','desktop','tv'])[i % 3 + 1] AS device,
        ((i % 1000) / 10.0)::numeric(10, 2) AS price, (ARRAY['de','fr','us','jp'])[i % 4 + 1] AS country""",
    "cochain": f"""i::int AS id, 'u' || (i % 5000) AS user_id, 'p' || (i % 20000) AS project_id,
        (ARRAY['click','view','time_spent','bookmark','rating'])[i % 5 + 1] AS interaction_type,
        CASE WHEN i % 5 = 1 THEN (i % 10 + 1) END::int AS position,
        CASE WHEN i % 5 = 2 THEN (i % 90000) END::bigint AS time_spent_ms,
        CASE WHEN i % 5 = 4 THEN (i % 5 + 1) END::smallint AS rating, 's' || (i / 20) AS session_id,
        {_TS} AS "timestamp\"""",
    "ecommerce": f"""i::bigint AS id, (i % 5000)::bigint AS user_id, (i % 20000)::bigint AS product_id,
        (ARRAY['CLICK','VIEW','CART_ADD','PURCHASE','WISHLIST'])[i % 5 + 1] AS interaction_type,
        's' || (i / 20) AS session_id, {_TS} AS "timestamp",
        jsonb_build_object('category', 'c' || (i % 50), 'position', i % 10,
                           'device', (ARRAY['mobile','desktop'])[i % 2 + 1], 'request_id', 'r' || (i / 10)) AS context,
        ((i % 1000) / 10.0)::numeric(10, 2) AS reward""",
    "canonical": f"""'e' || i AS event_id, 'u' || (i % 5000) AS user_id, 'i' || (i % 20000) AS item_id,
        (ARRAY['impression','click','dwell','rating'])[i % 4 + 1] AS event_type, random() AS value, {_TS} AS ts,
        's' || (i / 20) AS session_id, NULL::text AS request_id, (i % 10)::int AS position, random() AS propensity,
        NULL::text AS policy_version, (i % 27)::int AS action_id, (ARRAY['mobile','desktop','tv'])[i % 3 + 1] AS device,
        NULL::text AS content_type, NULL::text AS category, NULL::text AS mood, NULL::float8 AS mood_delta,
        NULL::text AS time_of_day, random() AS trait_openness, NULL::float8 AS trait_conscientiousness,
        NULL::float8 AS trait_extraversion, NULL::float8 AS trait_agreeableness, NULL::float8 AS trait_neuroticism""",
    "wide": f"""i::bigint AS id, (i % 5000)::bigint AS uid, (i % 20000)::bigint AS iid,
        (ARRAY['impression','click','view','purchase'])[i % 4 + 1] AS kind, {_TS} AS ts, random() AS v,
        's' || (i / 20) AS sess, 'r' || (i / 10) AS req, (i % 10)::int AS pos, random() AS prop,
        (ARRAY['v1','v2'])[i % 2 + 1] AS policy, (i % 27)::int AS action, (ARRAY['mobile','tv'])[i % 2 + 1] AS dev,
        (ARRAY['music','video'])[i % 2 + 1] AS ctype, 'c' || (i % 40) AS cat, (ARRAY['calm','sad'])[i % 2 + 1] AS mood,
        (i % 3 - 1)::float8 AS dmood, (ARRAY['morning','night'])[i % 2 + 1] AS tod, random() AS t1, random() AS t2,
        random() AS t3, random() AS t4, random() AS t5, 'tag' || (i % 300) AS tags, (i % 7)::int AS weekday,
        random() AS score, 'x' || (i % 11) AS ab_bucket, (i % 100)::int AS age, 'note' AS note, now() AS loaded_at""",
}
_MAPPINGS = {
    "narrow": """name: bench_narrow
table: {table}
columns:
  event_id: {{from: id}}
  user_id: {{from: user_id}}
  item_id: {{from: item_id}}
  event_type: {{from: kind, lookup: {{VIEW: view, CLICK: click, CART: cart_add, BUY: purchase}}}}
  value: {{from: dwell}}
  ts: {{from: ts, unit: timestamp}}
  session_id: {{from: session}}
  position: {{from: slot}}
  device: {{from: device}}
extra:
  country: {{from: country}}
  price: {{from: price, type: float}}
""",
    "wide": """name: bench_wide
table: {table}
columns:
  event_id: {{from: id}}
  user_id: {{from: uid}}
  item_id: {{from: iid}}
  event_type: {{from: kind}}
  ts: {{from: ts, unit: timestamp}}
  value: {{from: v}}
  session_id: {{from: sess}}
  request_id: {{from: req}}
  position: {{from: pos}}
  propensity: {{from: prop}}
  policy_version: {{from: policy}}
  action_id: {{from: action}}
  device: {{from: dev}}
  content_type: {{from: ctype}}
  category: {{from: cat}}
  mood: {{from: mood}}
  mood_delta: {{from: dmood}}
  time_of_day: {{from: tod}}
  trait_openness: {{from: t1}}
extra:
  tags: {{from: tags}}
""",
}
_SHIPPED = {"cochain": ("cochain_pg", "table: user_interactions"), "ecommerce": ("ecommerce_mysql", "table: user_product_interactions"),
            "canonical": ("rankloop", "table: interactions")}


def table_of(shape: str) -> str:
    return PREFIX + shape


def load(uri: str, shape: str, rows: int) -> None:
    """(Re)create the shape's table with ``rows`` rows and index ts (server-side generate_series)."""
    import adbc_driver_postgresql.dbapi as pg

    table = table_of(shape)
    ts = {"cochain": '"timestamp"', "ecommerce": '"timestamp"'}.get(shape, "ts")
    with pg.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(f"CREATE TABLE {table} AS SELECT {_SQL[shape]} FROM generate_series(0, {rows - 1}) AS i")
        cur.execute(f"CREATE INDEX ON {table} ({ts})")
        cur.execute(f"ANALYZE {table}")
        conn.commit()


def mapping_file(directory: Path, shape: str) -> Path:
    from sources.mapping import MAPPINGS_DIR

    path = directory / f"bench_{shape}.yaml"
    if shape in _SHIPPED:
        name, line = _SHIPPED[shape]
        path.write_text((MAPPINGS_DIR / f"{name}.yaml").read_text().replace(line, f"table: {table_of(shape)}", 1))
    else:
        path.write_text(_MAPPINGS[shape].format(table=table_of(shape)))
    return path


def window(rows: int) -> tuple[datetime, datetime]:
    return T0, T0 + timedelta(milliseconds=rows * STEP_MS)


def run_variant(variant: str, shape: str, uri: str, rows: int) -> dict[str, float]:
    """Body of one subprocess: time one variant on one shape, return rows and seconds."""
    start, end = window(rows)
    with tempfile.TemporaryDirectory() as tmp:
        mapping = mapping_file(Path(tmp), shape)
        from sources import window_queries

        sql = window_queries(uri, mapping, start, end)[0]
        t = time.perf_counter()
        if variant == "ours":
            from sources import extract_snapshot

            n = extract_snapshot(uri, mapping, start, end, Path(tmp) / "snaps").rows
        elif variant == "adbc_raw":
            import adbc_driver_postgresql.dbapi as pg

            with pg.connect(uri) as conn, conn.cursor() as cur:
                cur.execute(sql)
                n = cur.fetch_arrow_table().num_rows
        else:
            import pandas as pd
            import sqlalchemy

            engine = sqlalchemy.create_engine(uri.replace("postgresql://", "postgresql+psycopg2://", 1))
            with engine.connect() as conn:
                n = len(pd.read_sql(sqlalchemy.text(sql), conn))
            engine.dispose()
        seconds = time.perf_counter() - t
    return {"rows": n, "seconds": seconds, "columns_read": sql.count(" AS ")}


def measure(variant: str, shape: str, uri: str, rows: int) -> dict[str, float]:
    """Run a variant in a fresh subprocess; its peak RSS and CPU from getrusage(RUSAGE_SELF)."""
    code = (f"import json, resource, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import extract_bench as b; r = b.run_variant({variant!r}, {shape!r}, {uri!r}, {rows}); "
            "u = resource.getrusage(resource.RUSAGE_SELF); r['peak_rss_mb'] = u.ru_maxrss / 1024; "
            "r['process_cpu_s'] = u.ru_utime + u.ru_stime; print(json.dumps(r))")
    load_before = os.getloadavg()[0]
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["rows_per_s"] = result["rows"] / result["seconds"]
    result["load_1min_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--uri", default=DEFAULT_URI)
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--skip-load", action="store_true", help="reuse the tables a --keep run left")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark tables afterwards")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; figures are medians")
    args = parser.parse_args()
    shapes = [s for s in args.shapes.split(",") if s]
    if not args.skip_load:
        for shape in shapes:
            t = time.perf_counter()
            load(args.uri, shape, args.rows)
            print(f"loaded {shape}: {args.rows:,} rows in {time.perf_counter() - t:.1f}s", flush=True)
    rounds: dict[tuple[str, str], list[dict[str, float]]] = {(s, v): [] for s in shapes for v in VARIANTS}
    for _ in range(args.repeats):  # interleaved, so a burst of load from elsewhere hits every variant alike
        for shape in shapes:
            for variant in VARIANTS:
                rounds[(shape, variant)].append(measure(variant, shape, args.uri, args.rows))
    runs = {f"{s}/{v}": {**sorted(rs, key=lambda r: r["seconds"])[len(rs) // 2],
                         "all_seconds": [round(r["seconds"], 3) for r in rs]} for (s, v), rs in rounds.items()}
    print(f"{'shape/variant (median)':<24}{'rows':>11}{'seconds':>9}{'rows/s':>12}{'RSS MB':>8}{'CPU s':>7}"
          "  load before/after, all rounds' seconds")
    for name, r in runs.items():
        print(f"{name:<24}{r['rows']:>11,}{r['seconds']:>9.2f}{r['rows_per_s']:>12,.0f}{r['peak_rss_mb']:>8.0f}"
              f"{r['process_cpu_s']:>7.2f}  {r['load_1min_before_after']} {r['all_seconds']}")
    summary = {s: {"ours_vs_adbc_raw": runs[f"{s}/adbc_raw"]["seconds"] / runs[f"{s}/ours"]["seconds"],
                   "ours_vs_pandas": runs[f"{s}/pandas"]["seconds"] / runs[f"{s}/ours"]["seconds"],
                   "columns_read": runs[f"{s}/ours"]["columns_read"]} for s in shapes}
    print(json.dumps(summary, indent=1))
    out = Path(__file__).parent / "results" / "extract_shapes.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": args.rows, "uri": "redacted-local-postgres", "repeats": args.repeats,
                               "runs": runs, "summary": summary, "versions": versions(("adbc-driver-postgresql", "adbc-driver-manager", "pyarrow", "pandas", "sqlalchemy",
                                                      "psycopg2-binary")), "commit": commit(),
                               "cpus": os.cpu_count(), "measured_at": datetime.now(UTC).isoformat()}, indent=2))
    if not args.keep:
        drop(args.uri, shapes)


def drop(uri: str, shapes: list[str]) -> None:
    """Remove the benchmark tables (the test database is shared)."""
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(uri) as conn, conn.cursor() as cur:
        for shape in shapes:
            cur.execute(f"DROP TABLE IF EXISTS {table_of(shape)}")
        conn.commit()


if __name__ == "__main__":
    main()
