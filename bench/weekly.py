"""The whole weekly retrain at 1M or 10M interactions: under Prefect, without it, and naive baselines.

    .venv/bin/python bench/weekly.py --rows 1000000            # simulate + load PostgreSQL, then measure
    .venv/bin/python bench/weekly.py --rows 10000000 --skip-load

Load (not timed against the targets): the simulator writes ~``--rows`` interactions (1,500 users per
300k rows, ``--items`` items, 5 weeks, ~13 interactions per request) into PostgreSQL tables
``rl_bench_weekly_<N>_{interactions,items,users}``; a copy of the ``rankloop`` mapping points at them.

Variants, each in a fresh subprocess with a fresh ``RANKLOOP_HOME`` (so no champion exists yet and
peaks do not mix):

* ``prefect``: ``flows.weekly.weekly_retrain(...)`` in-process against Prefect's local ephemeral
  API, started and timed first on its own (``server_start``; a deployment's API is already up);
  per-task seconds are read back from the API.
* ``direct``: the same ``rankloop.stages`` functions called in the flow's order without Prefect;
  per-stage seconds, CPU seconds and the peak RSS during the stage (the kernel's high-water mark,
  reset as the stage starts: bench/measure.py);
  ``base_rss_mb`` is what the earlier stages left resident.
* ``direct_champion``: ``direct`` (by bucket) with a champion of every kind, as every weekly run after
  the first: an untimed run over the window a week earlier, in another process, promotes them into the
  same ``RANKLOOP_HOME`` first; a kind its gate held is promoted by hand (``earlier_run`` in the JSON says
  what it promoted and what was forced).
* ``naive_extract``: ``pandas.read_sql`` (SQLAlchemy + psycopg2) of the same window and columns.
* ``naive_validate``: Great Expectations' plain pandas path on the same extract (``bench/validate_bench``).
* ``--floor``: after its run, the ``direct`` variant measures in the same process what no pipeline can beat:
  a raw ADBC read of the window into Arrow plus LightGBM's fit of the run's own capped training matrix
  (``measure_floor``); the report gives end to end / floor.

Imports are done before the timed span in every variant. Writes ``bench/results/weekly_<N>.json``
and prints a table; the load average is recorded before and after each variant.
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
from typing import Any

DEFAULT_URI = "postgresql://postgres@127.0.0.1:5432/test"
END = datetime(2026, 11, 16, tzinfo=UTC)
RESULTS = Path(__file__).parent / "results"
ROWS_PER_USER = 200  # ~13.3 interactions per request x 3 requests per user-week x 5 weeks


from measure import PeakRSS, commit, versions  # noqa: E402 - bench/ is the script's own directory


# --- source ----------------------------------------------------------------------------------
def tables(rows: int) -> dict[str, str]:
    tag = f"{rows // 1_000_000}m" if rows % 1_000_000 == 0 else str(rows)
    return {name: f"rl_bench_weekly_{tag}_{name}" for name in ("interactions", "items", "users")}


def sim_config(rows: int, items: int):
    from rankloop.simulator import SimulationConfig

    return SimulationConfig(n_users=max(400, rows // ROWS_PER_USER), n_items=items, weeks=5,
                            requests_per_user_week=3.0, end=END, seed=0)


def load(uri: str, rows: int, items: int) -> dict[str, Any]:
    """Simulate into PostgreSQL; returns the source's metadata."""
    from rankloop.simulator import items_table, make_world, simulate, users_table
    from sources import write_table

    config, names = sim_config(rows, items), tables(rows)
    drop(uri, rows)  # and the e-commerce table made from the old rows (ecommerce_table)
    started, written = time.perf_counter(), 0
    for i, chunk in enumerate(simulate(config, chunk_requests=20_000)):
        written += write_table(uri, names["interactions"], chunk, mode="replace" if i == 0 else "append")
    world = make_world(config)
    write_table(uri, names["items"], items_table(world))
    write_table(uri, names["users"], users_table(world))
    # One index after the bulk load (what a production table would have).
    write_table(uri, names["interactions"], chunk.slice(0, 0), mode="append", indexes=[("ts",)])
    meta = {"rows": written, "n_users": config.n_users, "n_items": config.n_items, "weeks": config.weeks,
            "end": END.isoformat(), "tables": names, "load_seconds": round(time.perf_counter() - started, 1)}
    (RESULTS / f"weekly_{rows}_source.json").write_text(json.dumps(meta, indent=2))
    return meta


# --- the e-commerce seed's layout (``--shape ecommerce``): what the simulator never writes ------------
SHAPE_ENV = "RL_BENCH_SHAPE"
# Seed 004's user_product_interactions, in PostgreSQL: BIGINT ids, an upper-case VARCHAR event type,
# a naive TIMESTAMP, a JSON context, a DECIMAL reward, and no impressions. The simulator's impressions
# become VIEWs (the seed's tracker logs every product a user saw), its product-page views go (they
# would double the VIEWs), and the event types the seed's enum lacks go.
ECOMMERCE_TYPES = {"impression": "VIEW", "click": "CLICK", "cart_add": "CART_ADD", "purchase": "PURCHASE",
                   "save": "WISHLIST"}
ECOMMERCE_REWARD = {"VIEW": 0.0, "CLICK": 1.0, "CART_ADD": 3.0, "PURCHASE": 10.0, "WISHLIST": 2.0}


def ecommerce_table(uri: str, rows: int) -> dict[str, Any]:
    """``rl_bench_weekly_<N>_ecommerce`` from the loaded simulator table (made once; not timed)."""
    import adbc_driver_postgresql.dbapi as pg

    source, target = tables(rows)["interactions"], tables(rows)["interactions"].replace("_interactions", "_ecommerce")
    kinds = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in ECOMMERCE_TYPES.items())
    rewards = " ".join(f"WHEN '{k}' THEN {v}" for k, v in ECOMMERCE_REWARD.items())
    started = time.perf_counter()
    with pg.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT to_regclass('{target}') IS NOT NULL")
        if not cur.fetchone()[0]:
            cur.execute(f"""
                CREATE TABLE {target} AS
                SELECT row_number() OVER (ORDER BY ts, event_id)::bigint AS id,
                       substr(user_id, 2)::bigint AS user_id, substr(item_id, 2)::bigint AS product_id,
                       (CASE event_type {kinds} END)::varchar(50) AS interaction_type,
                       session_id::varchar(255) AS session_id, (ts AT TIME ZONE 'UTC') AS "timestamp",
                       json_build_object('category', category, 'device', device) AS context,
                       (CASE (CASE event_type {kinds} END) {rewards} END)::decimal(10, 2) AS reward
                FROM {source} WHERE event_type IN ({", ".join(f"'{k}'" for k in ECOMMERCE_TYPES)})""")
            cur.execute(f'CREATE INDEX ix_{target}_timestamp ON {target} ("timestamp")')
            conn.commit()
        cur.execute(f"SELECT count(*) FROM {target}")
        count = cur.fetchone()[0]
    return {"rows": count, "table": target, "from": source, "seconds": round(time.perf_counter() - started, 1)}


def mapping_file(directory: Path, rows: int) -> Path:
    from sources.mapping import MAPPINGS_DIR

    if os.environ.get(SHAPE_ENV) == "ecommerce":
        table = tables(rows)["interactions"].replace("_interactions", "_ecommerce")
        text = (MAPPINGS_DIR / "ecommerce_mysql.yaml").read_text()
        path = directory / "bench_weekly_ecommerce.yaml"
        path.write_text(text.replace("table: user_product_interactions\n", f"table: {table}\n"))
        return path
    text = (MAPPINGS_DIR / "rankloop.yaml").read_text()
    for name, table in tables(rows).items():
        text = text.replace(f"table: {name}\n", f"table: {table}\n")
    path = directory / "bench_weekly_mapping.yaml"
    path.write_text(text)
    return path


# --- variants (run inside a worker subprocess) -----------------------------------------------
def _environment(home: Path, uri: str, mapping: Path) -> None:
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    os.environ.update(RANKLOOP_HOME=str(home), RANKLOOP_SOURCE__URI=uri, RANKLOOP_SOURCE__MAPPING=str(mapping),
                      PREFECT_HOME=str(home / "prefect"), GX_ANALYTICS_ENABLED="false",
                      PREFECT_SERVER_ANALYTICS_ENABLED="false", MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    # The bench starts Prefect's local API before the flow (timed on its own): give it the time the
    # commands give it (core.runtime); Prefect's 20 s default timed out with a test suite running beside it.
    from core.runtime import PREFECT_STARTUP_TIMEOUT_S

    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(PREFECT_STARTUP_TIMEOUT_S))
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("PREFECT_API_URL", None)


def run_prefect(uri: str, mapping: Path) -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    import flows.weekly  # noqa: F401 - imports are not the flow's time
    from flows.weekly import weekly_retrain

    # The ephemeral API: started once per process, timed on its own.
    with PeakRSS() as server, get_client(sync_client=True) as client:
        client.api_healthcheck()
    with PeakRSS() as rss:
        summary = weekly_retrain(window_end=END.date(), source_uri=uri, mapping=str(mapping), force=True)
    return {"end_to_end": rss.figures(), "server_start": server.figures(), "tasks": _task_seconds(),
            "summary": _brief(summary)}


def _task_seconds() -> dict[str, float]:
    """Per-task wall seconds of the last flow run, as the Prefect API recorded them."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs()
    out: dict[str, float] = {}
    for r in runs:
        if r.start_time and r.end_time:
            name = r.name.rsplit("-", 1)[0]
            out[name] = round(out.get(name, 0.0) + (r.end_time - r.start_time).total_seconds(), 2)
    return out


def run_direct(uri: str, mapping: Path) -> dict[str, Any]:
    """The flow's body (``flows/weekly.py``) without Prefect, stage by stage, in the flow's order."""
    import mlflow  # noqa: F401

    from core.memory import use_arrow_pool
    from rankloop import checks, distributed, drift, ops, stages

    stage: dict[str, Any] = {}

    def timed(name: str, fn, *args):
        with PeakRSS() as rss:
            value = fn(*args)
        stage[name] = rss.figures()
        print(f"{name}: {stage[name]}", file=sys.stderr, flush=True)
        return value

    with PeakRSS() as whole:
        window_end = datetime.fromisoformat(os.environ.get(EARLIER_ENV, END.isoformat())).date()
        settings = stages.settings_for_run(window_end=window_end, source_uri=uri, mapping=str(mapping))
        use_arrow_pool(settings.executor.arrow_memory_pool)  # as flows/weekly.py does
        start, end = settings.window.resolve()
        ctx = stages.RunContext.create(settings, start, end)
        extracted = timed("extract", stages.extract, settings, start, end)
        ops.find_completed_run(settings, stages.run_key(settings, ctx, extracted))
        validated = timed("validate", stages.validate, settings, extracted, start, end, ctx.workdir)
        dataset = timed("labels+features", distributed.local_build_dataset, settings, validated, extracted, end,
                        ctx.workdir)
        trained = timed("ranker", stages.train_ranker, settings, dataset, ctx.workdir)
        scored = timed("evaluation: champion scoring", stages.champion_per_query_ndcg, settings, dataset)
        recorded = timed("registry: record", stages.record_ranker, settings, ctx, extracted, validated, dataset,
                         trained, scored)
        candidates = [timed("gate", stages.judge_ranker, settings, recorded, trained, scored)]
        candidates += timed("tables", stages.fit_tables, settings, ctx, validated, recorded.run_id)
        candidates, drifted = timed("drift", drift.check_drift, settings, ctx, validated, dataset, trained,
                                    candidates, recorded.run_id)
        candidates = timed("replay", checks.replay_ranker, settings, candidates, dataset)
        outcomes = timed("promote", stages.promote, settings, ctx, candidates, recorded.run_id)
        summary = stages.summarise(ctx, extracted, validated, dataset, trained, recorded, outcomes) | {"drift": drifted}
        timed("summary", ops.publish_summary, recorded.run_id, summary)
        kept = _keep_for_floor(dataset.split, ctx.workdir.parent / "floor") if os.environ.get(FLOOR_ENV) else None
        stages.discard_intermediates(ctx.workdir)
    result = {"end_to_end": whole.figures(), "stages": stage, "summary": _brief(summary),
              "split": dataset.split.sizes(),
              "fit_rows": {k: trained.params.get(k) for k in ("train_rows_used", "train_rows_available",
                                                              "valid_rows_used", "valid_rows_available")}}
    if kept is not None:  # after the run's span: not part of its figures
        result["floor"] = measure_floor(uri, mapping, settings, kept, list(dataset.features))
    return result


# --- the floor (issue 18): what the run could not do faster than -----------------------------------
FLOOR_ENV = "RL_BENCH_FLOOR"


def _keep_for_floor(split: Any, folder: Path) -> dict[str, Path]:
    """Hard links to the run's train and valid split files (milliseconds), which the run then discards."""
    folder.mkdir(parents=True, exist_ok=True)
    kept = {}
    for part in ("train", "valid"):
        kept[part] = folder / f"{part}.parquet"
        os.link(split.paths[part], kept[part])
    return kept


def measure_floor(uri: str, mapping: Path, settings: Any, paths: dict[str, Path], features: list[str]) -> dict[str, Any]:
    """The floor of issue 18, measured in the run's own process right after it: a raw ADBC read of the
    window into Arrow (the extract's own query, no validation, no Parquet) plus LightGBM's fit of the
    same capped training matrix with the same parameters and validation set (the matrices built
    untimed, as ``stages.train_ranker`` builds them). The run's end to end over the sum is its ratio."""
    import adbc_driver_postgresql.dbapi as pg

    from core.memory import release_memory
    from models.ranker import Ranker
    from models.training import SplitFiles, group_sizes, read_matrix, training_matrices

    sql = _window_sql(uri, mapping)
    with PeakRSS() as read, pg.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(sql)
        rows = cur.fetch_arrow_table().num_rows
    release_memory()
    split = SplitFiles(paths=paths, valid_start=END, test_start=END)
    m = training_matrices(split, features, max_train_queries=settings.ranker.max_train_queries,
                          max_valid_queries=settings.ranker.max_valid_queries,
                          seed=settings.ranker.seed)  # what stages.train_ranker fits, built the same way
    # The train and validation rows as matrices in memory (the run reads them in batches while LightGBM
    # bins them): the floor's fit reads nothing from disk.
    X = read_matrix(m.X.path, m.X.columns, m.X.rows)[0]
    X_valid = read_matrix(m.X_valid.path, m.X_valid.columns, m.X_valid.rows)[0]
    release_memory()
    with PeakRSS() as fit:
        ranker = Ranker.from_settings(settings.ranker)
        ranker.fit(X, m.train["label"], group=group_sizes(m.train), eval_set=[(X_valid, m.valid["label"])],
                   eval_group=[group_sizes(m.valid)], position=m.train.get("position"),
                   propensity=m.train.get("propensity"), feature_dtypes=m.dtypes)
    for path in paths.values():
        path.unlink()
    r, f = read.figures(), fit.figures()
    return {"read": r | {"rows": rows}, "fit": f | {"train_rows": len(m.train),
                                                   "train_rows_available": m.train_rows_available,
                                                   "valid_rows": len(m.valid),
                                                   "best_iteration": int(ranker.best_iteration_)},
            "seconds": round(r["seconds"] + f["seconds"], 2)}


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("status", "rows_in", "rows_quarantined", "impressions", "ndcg_at_10", "popularity_ndcg_at_10",
            "best_iteration", "verdict", "version")
    return {k: summary.get(k) for k in keys} | {"tables": {k: v.get("verdict") for k, v in summary.get("tables", {}).items()}}


def _window_sql(uri: str, mapping: Path) -> str:
    from core.settings import Settings
    from sources import window_queries

    start, end = Settings().window.model_copy(update={"end": END.date()}).resolve()
    return window_queries(uri, mapping, start, end)[0]


def run_naive_extract(uri: str, mapping: Path) -> dict[str, Any]:
    import pandas as pd
    import sqlalchemy

    sql = _window_sql(uri, mapping)
    engine = sqlalchemy.create_engine(uri.replace("postgresql://", "postgresql+psycopg2://", 1))
    with PeakRSS() as rss, engine.connect() as conn:
        frame = pd.read_sql(sqlalchemy.text(sql), conn)
    engine.dispose()
    return {"end_to_end": rss.figures(), "rows": len(frame)}


def run_naive_validate(uri: str, mapping: Path) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).parent))
    import great_expectations  # noqa: F401
    import validate_bench

    from core.settings import Settings
    from sources import extract_snapshot

    start, end = Settings().window.model_copy(update={"end": END.date()}).resolve()
    import pyarrow.parquet as pq

    snap = extract_snapshot(uri, str(mapping), start, end, Path(os.environ["RANKLOOP_HOME"]) / "snapshots")
    table = pq.read_table(snap.path)
    validate_bench.WINDOW = (start, end)
    with PeakRSS() as rss:
        extra = validate_bench._run_ge(table)
    return {"end_to_end": rss.figures(), "rows": table.num_rows, **extra}


def run_direct_buckets(uri: str, mapping: Path) -> dict[str, Any]:
    """``direct`` with the labels and features by bucket in this process (``executor.feature_bucket_rows``:
    1,000,000 events per bucket, or ``RL_BENCH_BUCKET_ROWS``)."""
    os.environ["RANKLOOP_EXECUTOR__FEATURE_BUCKET_ROWS"] = os.environ.get("RL_BENCH_BUCKET_ROWS", "1000000")
    return run_direct(uri, mapping) | {"feature_bucket_rows": int(os.environ["RANKLOOP_EXECUTOR__FEATURE_BUCKET_ROWS"])}


# --- with champions (issue 18): what every weekly run after the first does ------------------------
EARLIER_ENV, HOME_ENV = "RL_BENCH_WINDOW_END", "RL_BENCH_HOME"


def run_direct_champion(uri: str, mapping: Path) -> dict[str, Any]:
    """``direct_buckets`` with a champion of every kind: first, in another process and untimed, the same
    run over the window a week earlier into the same ``RANKLOOP_HOME`` (its promotions are the champions);
    then the measured run, which loads them, scores the ranker's champion on the test week, merges the
    champion's bandit counts into its refit and warm-starts the Q table from the champion's."""
    home = Path(os.environ[HOME_ENV])
    earlier = (END - timedelta(days=7)).isoformat()
    env = {**os.environ, EARLIER_ENV: earlier}
    command = [sys.executable, __file__, "--worker", "direct_buckets", "--rows", os.environ["RL_BENCH_ROWS"],
               "--uri", uri]
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"the earlier run failed:\n{out.stderr[-5000:]}")
    first = json.loads(out.stdout.strip().splitlines()[-1])
    forced = _promote_the_held(first["summary"])
    result = run_direct_buckets(uri, mapping)
    return result | {"earlier_run": {"window_end": earlier, "home": str(home), "end_to_end": first["end_to_end"],
                                     "summary": first["summary"], "promoted_by_hand": forced}}


def _promote_the_held(summary: dict[str, Any]) -> dict[str, int]:
    """Every kind the earlier run registered but did not promote (the simulated bandit's OPE holds it:
    effective sample size below ``ope.min_ess``) promoted by hand, as an operator would after review, so
    the measured run has a champion of every kind."""
    from core.settings import Settings
    from registry.promote import promote
    from registry.store import CHAMPION, aliases, list_versions, make_client

    settings = Settings()
    client = make_client(settings)
    forced = {}
    for kind in ("ranker", *summary.get("tables", {})):
        versions = list_versions(client, kind)
        if versions and CHAMPION not in aliases(client, kind):
            promote(kind, versions[0].version, decision=None, actor="bench", forced=True, client=client,
                    settings=settings, reason="bench/weekly.py direct_champion: every kind has a champion")
            forced[kind] = versions[0].version
    return forced


VARIANTS = {"prefect": run_prefect, "direct": run_direct, "direct_buckets": run_direct_buckets,
            "direct_champion": run_direct_champion,
            "naive_extract": run_naive_extract, "naive_validate": run_naive_validate}


def worker(variant: str, uri: str, rows: int) -> dict[str, Any]:
    home = Path(os.environ.get(HOME_ENV) or tempfile.mkdtemp(prefix=f"rl-weekly-{variant}-"))
    os.environ[HOME_ENV], os.environ["RL_BENCH_ROWS"] = str(home), str(rows)
    mapping = mapping_file(home, rows)
    _environment(home / "home", uri, mapping)
    result = VARIANTS[variant](uri, mapping)
    import resource

    # The kernel's mark was reset as each measured block began (bench/measure.py): the process's peak is
    # the largest of what the blocks folded in and what the mark holds since.
    peaks = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, result["end_to_end"]["peak_rss_mb"]]
    result["process_peak_rss_mb"] = round(max(peaks))
    result["home"] = str(home)
    return result


def spawn(variant: str, uri: str, rows: int, code: Path | None = None, *, floor: bool = False) -> dict[str, Any]:
    """Run one variant in a fresh interpreter; record the load average around it. ``code``: another
    checkout of RankLoop whose packages the worker imports instead of this one's (``--previous``)."""
    before = os.getloadavg()
    command = [sys.executable, __file__, "--worker", variant, "--rows", str(rows), "--uri", uri]
    env = {k: v for k, v in os.environ.items() if k != FLOOR_ENV}
    if code:
        env["PYTHONPATH"] = str(code)
    if floor:
        env[FLOOR_ENV] = "1"
    out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=code)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} at {rows} rows failed:\n{out.stderr[-5000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if code:
        result["code"] = commit(code)
    result["loadavg_before"], result["loadavg_after"] = before, os.getloadavg()
    return result


# --- report ----------------------------------------------------------------------------------
def table_text(rows: int, results: dict[str, Any], *, previous_first: bool = False) -> str:
    lines = [f"weekly retrain at {rows:,} source rows (load average before/after each variant in the JSON)",
             f"{'stage':<32}{'seconds':>9}{'CPU s':>9}{'peak RSS MB':>13}{'Prefect task s':>16}"]
    direct, prefect = results.get("direct"), results.get("prefect")
    tasks = (prefect or {}).get("tasks", {})
    task_of = {"extract": "extract", "validate": "validate", "labels+features": "labels-and-features",
               "ranker": "train-ranker", "evaluation: champion scoring": "score-champion",
               "registry: record": "log-and-register", "gate + promote": "gate-and-promote", "tables": "refit-tables"}
    for name, f in (direct or {}).get("stages", {}).items():
        t = tasks.get(task_of.get(name, ""), "")
        lines.append(f"{name:<32}{f['seconds']:>9.1f}{f['cpu_seconds']:>9.1f}{f['peak_rss_mb']:>13,}{t!s:>16}")
    previous = (results.get("direct_previous") or {}).get("stages", {})
    if previous:
        when = "before" if previous_first else "after"
        lines.append(f"previous main ({results['direct_previous'].get('code', '?')}), same command, run right {when}:")
        for name, f in previous.items():
            lines.append(f"{'  ' + name:<32}{f['seconds']:>9.1f}{f['cpu_seconds']:>9.1f}{f['peak_rss_mb']:>13,}")
    for variant in (v for v in results if v.startswith(("direct_buckets", "direct_champion"))):
        lines.append(f"{variant} (feature_bucket_rows={results[variant]['feature_bucket_rows']:,}), same command:")
        for name, f in results[variant].get("stages", {}).items():
            lines.append(f"{'  ' + name:<32}{f['seconds']:>9.1f}{f['cpu_seconds']:>9.1f}{f['peak_rss_mb']:>13,}")
    for name in ("direct", "direct_buckets", "direct_buckets_previous", "direct_champion", "direct_champion_previous",
                 "direct_previous", "prefect", "prefect_previous", "naive_extract", "naive_validate"):
        if name in results:
            f = results[name]["end_to_end"]
            lines.append(f"{'= ' + name:<32}{f['seconds']:>9.1f}{f['cpu_seconds']:>9.1f}"
                         f"{results[name]['process_peak_rss_mb']:>13,}")
    if direct and "floor" in direct:
        fl, run = direct["floor"], direct["end_to_end"]["seconds"]
        lines.append(f"floor: ADBC read {fl['read']['seconds']:.1f} s ({fl['read']['rows']:,} rows) + LightGBM fit "
                     f"{fl['fit']['seconds']:.1f} s ({fl['fit']['train_rows']:,} rows) = {fl['seconds']:.1f} s; "
                     f"direct / floor = {run / fl['seconds']:.2f}x")
    if direct and prefect:
        a, b = prefect["end_to_end"]["seconds"], direct["end_to_end"]["seconds"]
        lines.append(f"orchestration overhead: {a - b:+.1f} s ({(a - b) / a * 100:+.1f}% of the Prefect run)")
        if "server_start" in prefect:
            s = prefect["server_start"]["seconds"]
            lines.append(f"plus starting the ephemeral Prefect API once per process: {s:.1f} s "
                         f"({(a + s - b) / (a + s) * 100:+.1f}% with it)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--uri", default=DEFAULT_URI)
    parser.add_argument("--skip-load", action="store_true", help="reuse the tables an earlier run loaded")
    parser.add_argument("--variants", default="direct,prefect,naive_extract,naive_validate")
    parser.add_argument("--drop", action="store_true", help="drop the bench tables afterwards")
    parser.add_argument("--previous", type=Path, help="a checkout of the previous main (git worktree): each "
                        "variant also runs on its code, right after this one's, as <variant>_previous")
    parser.add_argument("--previous-first", action="store_true", help="with --previous: each variant runs on the "
                        "previous checkout first (on a 2-core machine the first run of a pair has been ~15%% slower: "
                        "run both orders before trusting a few percent)")
    parser.add_argument("--floor", action="store_true", help="the direct variant (this checkout's) then measures "
                        "the floor in its process: a raw ADBC read of the window + LightGBM's fit of its capped matrix")
    parser.add_argument("--shape", choices=("rankloop", "ecommerce"), default="rankloop", help="the source's "
                        "layout: the simulator's own tables, or seed 004's e-commerce table made from them "
                        "(no impressions; ecommerce_table)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.uri, args.rows), default=str))
        return
    RESULTS.mkdir(exist_ok=True)
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs", flush=True)
    meta = (json.loads((RESULTS / f"weekly_{args.rows}_source.json").read_text()) if args.skip_load
            else load(args.uri, args.rows, args.items))
    print(f"source: {meta['rows']:,} rows in {meta['tables']['interactions']} (load {meta['load_seconds']} s)", flush=True)
    out_path = RESULTS / f"weekly_{args.rows}.json"
    if args.shape == "ecommerce":
        os.environ[SHAPE_ENV] = "ecommerce"  # the workers' mapping (mapping_file)
        meta = meta | {"ecommerce": ecommerce_table(args.uri, args.rows)}
        print(f"e-commerce layout: {meta['ecommerce']}", flush=True)
        out_path = RESULTS / f"weekly_{args.rows}_ecommerce.json"
    results: dict[str, Any] = {}  # this command's variants only: figures from different runs are not comparable
    runs = [(v, None) for v in args.variants.split(",")]
    if args.previous:
        pair = (lambda v: ((f"{v}_previous", args.previous.resolve()), (v, None))) if args.previous_first else (
            lambda v: ((v, None), (f"{v}_previous", args.previous.resolve())))
        runs = [r for v, _ in runs for r in pair(v)]
    for variant, code in runs:
        floor = args.floor and variant == "direct"
        results[variant] = spawn(variant.removesuffix("_previous"), args.uri, args.rows, code, floor=floor)
        print(f"{variant}: {json.dumps(results[variant]['end_to_end'])}", flush=True)
        out_path.write_text(json.dumps({"source": meta, "order": [v for v, _ in runs],
                                        "measured_at": datetime.now(UTC).isoformat(),
                                        "cpus": os.cpu_count(), "commit": commit(), "versions": versions(),
                                        "variants": results}, indent=2, default=str))
    print(table_text(args.rows, results, previous_first=args.previous_first))
    if args.drop:
        drop(args.uri, args.rows)


def drop(uri: str, rows: int) -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(uri) as conn, conn.cursor() as cur:
        for table in [*tables(rows).values(), tables(rows)["interactions"].replace("_interactions", "_ecommerce")]:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
        conn.commit()


if __name__ == "__main__":
    main()
