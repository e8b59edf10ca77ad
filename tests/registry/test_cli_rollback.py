"""On-call CLI against a real SQLite store: rollback, history, refusals with non-zero exits."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from registry import load
from registry.cache import ModelCache
from registry.decision import Decision, Verdict
from registry.promote import promote
from registry.store import aliases, read_manifest

from .conftest import Store, register_ranker, run_artifact_path

runner = CliRunner()


def _cli(*args: str):
    return runner.invoke(app, list(args))


def _passing(version: int, champion: int | None) -> Decision:
    return Decision("ranker", Verdict.PASS, ("bootstrap lower bound +0.01 >= -0.0",), {}, version, champion)


def test_rollback_to_version_1_serves_it_and_records_both_moves(store: Store) -> None:
    v1, v2 = register_ranker(store, 1, ndcg=0.41), register_ranker(store, 2, ndcg=0.44)
    for version, champion in ((v1, None), (v2, v1)):
        promote(
            "ranker",
            version,
            decision=_passing(version, champion),
            actor="weekly-retrain",
            reason=f"weekly retrain v{version}",
            client=store.client,
        )
    served = load("ranker")
    assert (served.version, served.from_cache) == (v2, False)

    result = _cli("rollback", "ranker", "--to", str(v1), "--reason", "v2 halved the click-through rate")
    assert result.exit_code == 0, result.output
    assert f"version {v1} is champion" in result.output

    assert load("ranker").version == v1
    assert served.refresh() is True and served.version == v1
    assert served.refresh() is False
    assert aliases(store.client, "ranker") == {"champion": v1, "previous": v2}

    moves = json.loads(_cli("history", "ranker", "--json").output)
    champion_moves = [
        (m["action"], m["from_version"], m["to_version"], m["reason"])
        for m in moves
        if m["alias"] == "champion"
    ]
    assert champion_moves == [
        ("promote", None, v1, f"weekly retrain v{v1}"),
        ("promote", v1, v2, f"weekly retrain v{v2}"),
        ("rollback", v2, v1, "v2 halved the click-through rate"),
    ]
    assert moves[-1]["forced"] is True and moves[0]["actor"] == "weekly-retrain"
    table = _cli("history", "ranker")
    assert table.exit_code == 0 and "rollback" in table.output


def test_models_lists_versions_with_aliases_and_metrics(store: Store) -> None:
    rows = json.loads(_cli("models", "ranker", "--json").output)
    by_version = {r["version"]: r for r in rows}
    assert by_version[1]["aliases"] == ["champion"] and by_version[1]["metrics"]["ndcg_at_10"] == 0.41
    assert by_version[2]["window"] == "2026-10-12..2026-11-16"
    assert _cli("models").exit_code == 0


def test_manual_promote_is_forced_and_recorded(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANKLOOP_ACTOR", "alice")
    before = aliases(store.client, "ranker")
    result = _cli("promote", "ranker", str(before["previous"]), "--reason", "hotfix")
    assert result.exit_code == 0, result.output
    last = json.loads(_cli("history", "ranker", "--json").output)[-1]
    assert (last["actor"], last["forced"], last["reason"], last["to_version"]) == (
        "alice",
        True,
        "hotfix",
        before["previous"],
    )
    assert _cli("rollback", "ranker", "--reason", "undo hotfix").exit_code == 0
    assert aliases(store.client, "ranker") == before


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("rollback", "forest", "--reason", "x"), 2, "unknown model kind 'forest'"),
        (("rollback", "ranker", "--to", "99", "--reason", "x"), 3, "ranker has no version 99"),
        (("rollback", "bandit", "--reason", "x"), 3, "no 'previous' version"),
        (("promote", "ranker", "1", "--reason", "x"), 6, "already is the champion"),
        (("history", "forest"), 2, "unknown model kind"),
    ],
)
def test_refusals_exit_non_zero_with_a_message(
    store: Store, args: tuple[str, ...], code: int, message: str
) -> None:
    before = aliases(store.client, "ranker")
    result = _cli(*args)
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())
    assert aliases(store.client, "ranker") == before


def test_rollback_refuses_remote_artifacts_that_fail_their_checksums(store: Store) -> None:
    v = register_ranker(store, 3)
    run_artifact_path(store, v, "model.txt").write_text("tree=0\n")  # altered in the artifact store
    before = aliases(store.client, "ranker")
    result = _cli("rollback", "ranker", "--to", str(v), "--reason", "try v3")
    assert result.exit_code == 4, result.output
    assert "checksum mismatch for 'model.txt'" in " ".join(result.output.split())
    assert aliases(store.client, "ranker") == before


def test_rollback_refuses_a_tampered_cached_copy(store: Store) -> None:
    v = register_ranker(store, 4)
    cache = ModelCache(store.settings.cache_dir / "models")
    cached = cache.install(store.client, "ranker", v, read_manifest(store.client, "ranker", v))
    (cached / "feature_set.json").write_text('{"features": []}')
    before = aliases(store.client, "ranker")
    result = _cli("rollback", "ranker", "--to", str(v), "--reason", "try v4")
    assert result.exit_code == 4, result.output
    assert "cached copy" in result.output and "feature_set.json" in result.output
    assert aliases(store.client, "ranker") == before


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("rollback", "ranker", "--to", "99999999999999999999", "--reason", "x"), 3,
         "ranker has no version 99999999999999999999"),
        (("promote", "ranker", "99999999999999999999", "--reason", "x"), 3, "ranker has no version"),
        (("rollback", "ranker", "--to", "abc", "--reason", "x"), 2, "--to must be a version number, got 'abc'"),
        (("rollback", "ranker", "--to", "0", "--reason", "x"), 2, "a version number is 1 or more, got 0"),
        (("rollback", "ranker", "--to=-4", "--reason", "x"), 2, "a version number is 1 or more, got -4"),
        (("promote", "ranker", "2.5", "--reason", "x"), 2, "VERSION must be a version number, got '2.5'"),
        (("rollback", "ranker", "--reason", "  "), 2, "--reason is empty"),
        (("models", "--home", "/nonexistent/rankloop-home"), 3, "there is no RankLoop data home"),
        (("history", "forest", "--json"), 2, "unknown model kind 'forest'"),
    ],
)
def test_bad_input_ends_in_one_line_without_a_traceback(
    store: Store, args: tuple[str, ...], code: int, message: str
) -> None:
    before = aliases(store.client, "ranker")
    result = _cli(*args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("error (") and message in lines[0], result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    assert aliases(store.client, "ranker") == before


def test_models_and_history_read_at_80_columns(store: Store) -> None:
    reason = "clicks fell 9% on mobile after the feature-set change; rolling back while we check the join " * 2
    current = aliases(store.client, "ranker")
    assert _cli("rollback", "ranker", "--reason", reason).exit_code == 0
    for args in (("models",), ("history", "ranker")):
        result = runner.invoke(app, list(args), env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert max(len(line) for line in lines) <= 80, "\n".join(lines)
        assert "…" not in result.stdout
    history = " ".join(result.stdout.split())
    assert " ".join(reason.split()) in history  # wrapped, never cut
    models = _cli("models", "ranker").stdout
    assert "ndcg@10 0.41" in models and "2026-10-12..2026-11-16" in " ".join(models.split())
    assert _cli("rollback", "ranker", "--to", str(current["champion"]), "--reason", "back").exit_code == 0


def test_json_numbers_are_numbers_and_home_selects_the_store(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANKLOOP_HOME", "/nonexistent/elsewhere")  # --home wins over the environment
    home = str(store.home)
    rows = json.loads(_cli("models", "ranker", "--json", "--home", home).stdout)
    assert all(isinstance(r["version"], int) for r in rows)
    assert all(isinstance(v, float) for r in rows for v in r["metrics"].values())
    moves = json.loads(_cli("history", "ranker", "--json", "--home", home).stdout)
    assert all(isinstance(m[k], int | None) for m in moves for k in ("from_version", "to_version"))
    state = aliases(store.client, "ranker")
    moved = json.loads(_cli("rollback", "ranker", "--json", "--reason", "json", "--home", home).stdout)
    assert moved == {"kind": "ranker", "action": "rollback", "version": state["previous"],
                     "previous": state["champion"], "ledger_entry": moved["ledger_entry"], "offline": False}
    assert _cli("rollback", "ranker", "--reason", "undo json", "--home", home).exit_code == 0


def test_help_shows_uppercase_metavars() -> None:
    text = " ".join(runner.invoke(app, ["rollback", "--help"], env={"COLUMNS": "120"}).output.split())
    for shown in ("KIND", "--to VERSION", "--reason TEXT", "--home PATH", "--offline", "--json"):
        assert shown in text


def test_a_plain_rollback_does_not_bring_back_what_the_guardrail_reverted(store: Store) -> None:
    from registry.promote import GUARDRAIL_ACTOR, rollback

    v1, v2 = register_ranker(store, 1, ndcg=0.41), register_ranker(store, 2, ndcg=0.44)
    current = aliases(store.client, "ranker").get("champion")  # the module shares one store: this test runs last
    for version, champion in ((v1, current), (v2, v1)):
        promote("ranker", version, decision=_passing(version, champion), actor="weekly-retrain",
                reason=f"weekly retrain v{version}", client=store.client)
    rollback("ranker", actor=GUARDRAIL_ACTOR, reason="guardrail: v2 worse on live traffic", client=store.client)
    assert aliases(store.client, "ranker") == {"champion": v1, "previous": v2}

    refused = _cli("rollback", "ranker", "--reason", "3 a.m.: back to the previous version")
    assert refused.exit_code == 6, refused.output  # refused
    line = " ".join(refused.output.split())
    assert f"previous v{v2} is the release the guardrail reverted at" in line
    assert f"rankloop rollback ranker --to {v2} --reason TEXT" in line
    assert aliases(store.client, "ranker") == {"champion": v1, "previous": v2}

    named = _cli("rollback", "ranker", "--to", str(v2), "--reason", "on-call: the guardrail was wrong")
    assert named.exit_code == 0, named.output
    assert aliases(store.client, "ranker") == {"champion": v2, "previous": v1}
    # the last move is on-call's now: a plain rollback works again
    again = _cli("rollback", "ranker", "--reason", "back again")
    assert again.exit_code == 0, again.output
    assert aliases(store.client, "ranker") == {"champion": v1, "previous": v2}
