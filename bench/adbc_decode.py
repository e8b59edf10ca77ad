"""How much client CPU the installed ADBC drivers spend decoding a window (PostgreSQL and SQLite).

Why this exists: adbc-driver-postgresql / adbc-driver-sqlite 1.9.0-1.13.0 wheels decode the same
rows with 3x / 2x the CPU of 1.8.0 on our machines (docs/sources.md), so pyproject pins 1.8.0.
Before lifting the pin, run this with the candidate installed beside the pinned one:

    .venv/bin/python bench/adbc_decode.py --rows 2000000                       # the venv's drivers
    pip install --no-deps --target /tmp/adbc-new adbc-driver-postgresql==X adbc-driver-sqlite==X importlib_resources
    PYTHONPATH=/tmp/adbc-new .venv/bin/python bench/adbc_decode.py --rows 2000000 --skip-load

The PostgreSQL table is the extraction bench's (`bench/extract_bench.py`, kept with --keep or loaded
here); the SQLite file goes to /tmp. Each read runs in a fresh subprocess, three times; the median
is printed with the driver version, wall seconds and the process's user + system CPU for the read.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import extract_bench  # noqa: E402  (the bench table and its loader)

SQLITE_PATH = Path("/tmp/rankloop-adbc-decode.db")

READ = """
import json, resource, time
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF); return u.ru_utime + u.ru_stime
kind, target, sql = {kind!r}, {target!r}, {sql!r}
if kind == "postgresql":
    import adbc_driver_postgresql as drv, adbc_driver_postgresql.dbapi as dbapi
else:
    import adbc_driver_sqlite as drv, adbc_driver_sqlite.dbapi as dbapi
with dbapi.connect(target) as conn, conn.cursor() as cur:
    t, c = time.perf_counter(), cpu()
    cur.execute(sql)
    rows = sum(b.num_rows for b in cur.fetch_record_batch())
    print(json.dumps({{"version": drv.__version__, "rows": rows, "seconds": time.perf_counter() - t, "cpu_s": cpu() - c}}))
"""


def read_once(kind: str, target: str, sql: str) -> dict[str, float | str]:
    out = subprocess.run([sys.executable, "-c", READ.format(kind=kind, target=target, sql=sql)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--uri", default=extract_bench.DEFAULT_URI)
    parser.add_argument("--skip-load", action="store_true", help="reuse the PostgreSQL table and the SQLite file")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not args.skip_load:
        extract_bench.load(args.uri, args.rows)
        SQLITE_PATH.unlink(missing_ok=True)
    if not SQLITE_PATH.exists():
        table, extract_bench.TABLE = extract_bench.TABLE, "interactions"
        try:
            extract_bench.load(f"sqlite:///{SQLITE_PATH}", args.rows)
        finally:
            extract_bench.TABLE = table
    start, end = extract_bench.window(args.rows)
    reads = {
        "postgresql": (args.uri, f"SELECT * FROM {extract_bench.TABLE} WHERE ts >= '{start.isoformat()}' "
                                 f"AND ts < '{end.isoformat()}' ORDER BY ts, event_id"),
        "sqlite": (str(SQLITE_PATH), "SELECT * FROM interactions ORDER BY ts"),
    }
    for kind, (target, sql) in reads.items():
        runs = [read_once(kind, target, sql) for _ in range(args.repeats)]
        median = sorted(runs, key=lambda r: float(r["seconds"]))[len(runs) // 2]
        print(f"{kind:<11} driver {median['version']:<8} rows {median['rows']:>10,}  wall {median['seconds']:.2f} s  "
              f"client CPU {median['cpu_s']:.2f} s  (all wall: {[round(float(r['seconds']), 2) for r in runs]})")


if __name__ == "__main__":
    main()
