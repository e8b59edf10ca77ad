"""Every crash heals at the next operation: pending ledger entries, dead runs, manifest-less versions;
and a failed champion lookup never reads as "no champion"."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from core.errors import Reason, RegistryError, StorageError
from core.settings import Settings
from registry import ledger, load, owner_tags
from registry.decision import Decision, Verdict, log_decision
from registry.promote import promote
from registry.recover import recover
from registry.store import TAG_UNUSABLE, aliases, get_version

from .conftest import Store, experiment_id, register_ranker

# Promote by hand, and SIGKILL this process right after the alias named in argv[2] moved.
KILLED_MID_MOVE = textwrap.dedent("""
    import os, signal, sys
    import registry.move as move_module  # where the aliases move
    import registry.promote as promote_module

    real = move_module.set_alias

    def set_alias_then_die(client, kind, alias, version):
        real(client, kind, alias, version)
        if alias == sys.argv[2]:
            os.kill(os.getpid(), signal.SIGKILL)

    move_module.set_alias = set_alias_then_die
    promote_module.promote("ranker", int(sys.argv[1]), decision=None, actor="doomed", reason="killed mid-move",
                           forced=True)
""")


def _env(store: Store) -> dict[str, str]:
    return {**os.environ, "RANKLOOP_HOME": str(store.home), "MLFLOW_TRACKING_URI": store.settings.tracking_uri}


def _closed_port_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture(scope="module")
def champion_and_previous(store: Store) -> tuple[int, int]:
    v1, v2 = register_ranker(store, 31), register_ranker(store, 32)
    for v in (v1, v2):
        promote("ranker", v, decision=None, actor="t", reason="setup", forced=True, client=store.client,
                settings=store.settings)
    return v2, v1


@pytest.mark.parametrize(("killed_after", "outcome"), [("previous", "undone"), ("champion", "committed")])
def test_a_kill_between_the_alias_moves_heals_at_the_next_operation(
    store: Store, champion_and_previous: tuple[int, int], killed_after: str, outcome: str
) -> None:
    before = aliases(store.client, "ranker")
    candidate = register_ranker(store, {"previous": 41, "champion": 42}[killed_after])
    died = subprocess.run([sys.executable, "-c", KILLED_MID_MOVE, str(candidate), killed_after],
                          env=_env(store), cwd=Path(__file__).parents[2], capture_output=True, timeout=300)
    assert died.returncode == -9, died.stderr.decode()[-2000:]
    [entry] = ledger.pending(store.client, "ranker")
    crashed = aliases(store.client, "ranker")
    if killed_after == "previous":  # the state the issue found: previous == champion
        assert crashed == {"champion": before["champion"], "previous": before["champion"]}

    result = CliRunner().invoke(app, ["history", "ranker", "--json", "--all"])  # one registry operation

    assert result.exit_code == 0, result.output
    assert ledger.pending(store.client, "ranker") == []
    healed = aliases(store.client, "ranker")
    assert healed["previous"] != healed["champion"]
    expected = before if outcome == "undone" else {"champion": candidate, "previous": before["champion"]}
    assert healed == expected
    moves = [m for m in json.loads(result.stdout) if m["operation_id"] == entry.entry_id]
    assert {m["status"] for m in moves} == {"aborted" if outcome == "undone" else "committed"}
    recovered = store.client.get_run(entry.entry_id).data.tags
    note = recovered.get("ledger.error") or recovered.get("ledger.recovered")
    assert note.startswith("recovery:") and "died" in note
    if outcome == "committed":  # leave the module's champion/previous as the next tests expect
        promote("ranker", before["champion"], decision=None, actor="t", reason="reset", forced=True,
                client=store.client, settings=store.settings)


def test_a_pending_entry_of_a_live_process_is_left_alone(store: Store, champion_and_previous: tuple[int, int]) -> None:
    state = aliases(store.client, "ranker")
    entry = ledger.open_entry(store.client, kind="ranker", action="promote", actor="live", reason="in flight",
                              forced=True, moves=[ledger.Move("champion", state["champion"], 999)],
                              decision=Decision.manual("ranker", 999, state["champion"], "in flight"))
    recover(store.settings, client=store.client, kinds=["ranker"])
    assert [p.entry_id for p in ledger.pending(store.client, "ranker")] == [entry]  # its owner (us) is alive
    ledger.abort(store.client, entry, "test cleanup")


def test_runs_of_dead_processes_are_marked_failed_and_live_ones_are_not(store: Store) -> None:
    client = store.client
    dead = client.create_run(experiment_id(client), tags=owner_tags(os.getpid()) | {
        "rankloop.owner.pid": str(_dead_pid())}).info.run_id
    live = client.create_run(experiment_id(client), tags=owner_tags()).info.run_id
    elsewhere = client.create_run(experiment_id(client), tags=owner_tags() | {
        "rankloop.owner.host": "another-host"}).info.run_id

    report = recover(store.settings, client=client, kinds=[])

    assert dead in report.failed_runs and live not in report.failed_runs
    assert client.get_run(dead).info.status == "FAILED"
    assert "died" in client.get_run(dead).data.tags["rankloop.recovered"]
    assert [client.get_run(r).info.status for r in (live, elsewhere)] == ["RUNNING", "RUNNING"]
    for run_id in (live, elsewhere):
        client.set_terminated(run_id)


def test_a_manifest_less_version_waits_for_its_live_run_then_is_unusable_and_hidden(
    store: Store, champion_and_previous: tuple[int, int]
) -> None:
    client = store.client
    run_id = client.create_run(experiment_id(client), tags=owner_tags()).info.run_id
    client.log_text(run_id, "tree", "ranker/model.txt")
    version = int(client.create_model_version("rankloop.ranker", f"runs:/{run_id}/ranker", run_id=run_id).version)
    recover(store.settings, client=client, kinds=["ranker"])
    assert TAG_UNUSABLE not in get_version(client, "ranker", version).tags  # it may still publish

    client.set_tag(run_id, "rankloop.owner.pid", str(_dead_pid()))  # its process died before the manifest
    report = recover(store.settings, client=client, kinds=["ranker"])

    assert f"ranker:{version}" in report.unusable and client.get_run(run_id).info.status == "FAILED"
    assert get_version(client, "ranker", version).tags[TAG_UNUSABLE].startswith("no manifest: its run")
    with pytest.raises(RegistryError, match="is unusable") as info:
        promote("ranker", version, decision=None, actor="t", reason="r", forced=True, client=client,
                settings=store.settings)
    assert info.value.reason is Reason.REFUSED
    runner = CliRunner()
    listed = [r["version"] for r in json.loads(runner.invoke(app, ["models", "ranker", "--json"]).stdout)]
    everything = json.loads(runner.invoke(app, ["models", "ranker", "--json", "--all"]).stdout)
    assert version not in listed
    assert [r["unusable"] for r in everything if r["version"] == version][0].startswith("no manifest")


def test_with_the_store_down_the_champion_lookup_is_unreachable_and_no_first_version_is_recorded(
    store: Store, champion_and_previous: tuple[int, int]
) -> None:
    from rankloop.stages import current_champion  # what score-champion asks

    down = Settings(home=store.home / "fresh-host", mlflow_tracking_uri=_closed_port_uri())
    with pytest.raises(RegistryError) as info:
        current_champion("ranker", down)
    assert info.value.reason is Reason.UNREACHABLE

    first = Decision("ranker", Verdict.PASS, ("first version: no champion to compare with",), {}, 77, None)
    run_id = store.client.create_run(experiment_id(store.client)).info.run_id
    with pytest.raises(RegistryError) as info:  # the registry answers: there is a champion
        log_decision(first, run_id=run_id, client=store.client)
    assert info.value.reason is Reason.REFUSED and "champion is version" in str(info.value)
    from mlflow.tracking import MlflowClient

    from registry.reach import bounded_requests

    with bounded_requests(), pytest.raises(RegistryError) as info:  # the registry cannot answer
        log_decision(first, run_id=run_id, client=MlflowClient(down.tracking_uri, down.tracking_uri))
    assert info.value.reason is Reason.UNREACHABLE
    assert "gate.verdict" not in store.client.get_run(run_id).data.tags
    store.client.set_terminated(run_id)


def test_the_loader_serves_when_its_pointer_cannot_be_written(
    store: Store, champion_and_previous: tuple[int, int], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import registry.cache

    load("ranker", settings=store.settings)  # cached and verified
    pointer = registry.cache.ModelCache(store.settings.cache_dir / "models").pointer_path("ranker", "champion")
    before = pointer.read_text()
    uncached = register_ranker(store, 51)

    def disk_full(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(registry.cache, "write_atomic", disk_full)
    with caplog.at_level(logging.WARNING, logger="registry.loader"):
        served = load("ranker", settings=store.settings)
    assert (served.version, served.from_cache) == (aliases(store.client, "ranker")["champion"], False)
    assert any("no space left on device writing" in r.getMessage() for r in caplog.records)
    assert pointer.read_text() == before

    monkeypatch.undo()  # another host promotes a version this host has not cached yet
    promote("ranker", uncached, decision=None, actor="t", reason="r", forced=True, client=store.client,
            settings=store.settings.model_copy(update={"home": store.home / "other-host"}))
    monkeypatch.setattr(registry.cache, "write_atomic", disk_full)
    with pytest.raises(StorageError) as info:  # installing it needs the disk: a clear StorageError
        load("ranker", settings=store.settings)
    assert info.value.reason is Reason.NO_SPACE
    assert f"no space left on device writing {store.settings.cache_dir / 'models' / 'ranker'}" in str(info.value)
    assert "delete cached ranker versions" in info.value.hint
    assert served.refresh() is False and served.version != uncached  # keeps serving what it has
