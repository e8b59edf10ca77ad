"""Offline rollback: pins this host's serving cache; the registry gets it at the next operation that reaches it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from registry import ledger, load
from registry.cache import ModelCache
from registry.offline import pin_path, read_pin
from registry.promote import promote
from registry.store import aliases

from .conftest import Store, register_ranker, run_artifact_path

runner = CliRunner()


def _cli(*args: str):
    return runner.invoke(app, list(args))


def _one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture
def served(store: Store):
    """Two fresh versions promoted (the newer is champion) and loaded on this host."""
    older, newer = register_ranker(store, 71), register_ranker(store, 72)
    for v in (older, newer):
        promote("ranker", v, decision=None, actor="t", reason="weekly", forced=True, client=store.client,
                settings=store.settings)
    model = load("ranker", settings=store.settings)
    assert model.version == newer
    yield model, older, newer
    pin_path(store.settings, "ranker").unlink(missing_ok=True)


def test_a_second_offline_rollback_returns_and_nothing_is_left_to_apply(store: Store, served) -> None:
    model, older, newer = served
    assert _cli("rollback", "ranker", "--offline", "--reason", "bad CTR").exit_code == 0
    assert model.refresh() is True and (model.version, model.from_cache) == (older, True)
    back = _cli("rollback", "ranker", "--offline", "--json", "--reason", "false alarm")
    assert json.loads(back.stdout) == {"kind": "ranker", "action": "rollback", "version": newer, "previous": older,
                                       "offline": True, "pin": str(pin_path(store.settings, "ranker"))}
    assert [s["to_version"] for s in read_pin(store.settings, "ranker").steps] == [older, newer]
    assert model.refresh() is True and (model.version, model.from_cache) == (newer, True)
    entries = len(ledger.history("ranker", client=store.client, include_aborted=True))

    assert _cli("history", "ranker").exit_code == 0  # the registry's champion already is the pinned one

    assert read_pin(store.settings, "ranker") is None
    assert len(ledger.history("ranker", client=store.client, include_aborted=True)) == entries
    assert aliases(store.client, "ranker")["champion"] == newer
    assert model.refresh() is False and (model.version, model.from_cache) == (newer, False)


def test_a_champion_moved_elsewhere_meanwhile_supersedes_the_offline_rollback(store: Store, served) -> None:
    model, older, newer = served
    assert _cli("rollback", "ranker", "--offline", "--reason", "bad CTR").exit_code == 0
    other = register_ranker(store, 73)  # another host promotes while this one was cut off
    promote("ranker", other, decision=None, actor="elsewhere", reason="hotfix", forced=True, client=store.client,
            settings=store.settings.model_copy(update={"home": store.home / "other-host"}))

    assert _cli("history", "ranker").exit_code == 0

    assert read_pin(store.settings, "ranker") is None
    assert aliases(store.client, "ranker") == {"champion": other, "previous": newer}
    last = ledger.history("ranker", client=store.client, include_aborted=True)[-1]
    assert (last.status, last.from_version, last.to_version) == ("aborted", newer, older)
    assert "superseded" in store.client.get_run(last.operation_id).data.tags["ledger.error"]
    assert model.refresh() is True and model.version == other


def test_a_pin_the_registry_refuses_stays_and_says_how_to_drop_it(store: Store, served) -> None:
    model, older, newer = served
    assert _cli("rollback", "ranker", "--offline", "--reason", "bad CTR").exit_code == 0
    run_artifact_path(store, older, "model.txt").write_text("tree=0\n")  # its copy in the store is damaged

    result = _cli("history", "ranker")

    line = _one_line(result)
    assert result.exit_code == 4
    assert f"the offline rollback of ranker to version {older} recorded in {pin_path(store.settings, 'ranker')}" in line
    assert "cannot be applied" in line and "delete" in line
    assert read_pin(store.settings, "ranker").version == older
    assert aliases(store.client, "ranker")["champion"] == newer
    assert model.refresh() is True and model.version == older  # this host keeps serving the pinned version


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--home", "{fresh}"), 3, "this host has never served ranker"),
        (("--to", "999"), 3, "ranker version 999 is not cached on this host"),
        (("--to", "{tampered}"), 4, "fails its checksums"),
    ],
)
def test_offline_rollback_refusals(store: Store, served, tmp_path, args, code: int, message: str) -> None:
    model, older, newer = served
    cache = ModelCache(store.settings.cache_dir / "models")
    (tmp_path / "fresh").mkdir()
    if "{tampered}" in args:
        (cache.version_dir("ranker", older) / "feature_set.json").write_text('{"features": []}')
    filled = [a.format(fresh=tmp_path / "fresh", tampered=older) for a in args]
    result = _cli("rollback", "ranker", "--offline", "--reason", "r", *filled)
    assert result.exit_code == code, result.output
    assert message in _one_line(result)
    assert read_pin(store.settings, "ranker") is None
