from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from core.errors import ConfigError
from core.schema import EVENT_TYPES, INTERACTION_SCHEMA, REQUIRED_COLUMNS, Interaction, conform
from core.settings import Settings, WindowSettings, last_monday


def test_schema_covers_the_seed_vocabulary() -> None:
    seeds = {"impression", "view", "click", "dwell", "save", "rating", "share", "dismiss", "like", "dislike",
             "skip", "complete", "cart_add", "purchase", "implement"}
    assert seeds == set(EVENT_TYPES)
    assert set(REQUIRED_COLUMNS) == {"event_id", "user_id", "item_id", "event_type", "ts"}
    assert INTERACTION_SCHEMA.field("ts").type == pa.timestamp("us", tz="UTC")


def test_conform_fills_optional_columns_and_names_missing_required() -> None:
    t = pa.table({"event_id": ["e"], "user_id": ["u"], "item_id": ["i"], "event_type": ["click"],
                  "ts": pa.array([datetime(2026, 1, 1, tzinfo=UTC)])})
    out = conform(t)
    assert out.schema.names == INTERACTION_SCHEMA.names
    assert out.column("position").null_count == 1
    with pytest.raises(ValueError, match=r"\['item_id', 'ts'\]"):
        conform(t.drop_columns(["item_id", "ts"]))


def test_interaction_model_validates_ranges() -> None:
    ok = Interaction(event_id="e", user_id="u", item_id="i", event_type="click", ts=datetime(2026, 1, 1))
    assert ok.position is None
    with pytest.raises(ValidationError, match="propensity"):
        Interaction(event_id="e", user_id="u", item_id="i", event_type="click", ts=datetime(2026, 1, 1), propensity=1.5)


def test_settings_defaults_follow_the_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RANKLOOP_HOME", str(tmp_path / "h"))
    s = Settings()
    assert s.tracking_uri == f"sqlite:///{tmp_path / 'h' / 'mlflow.db'}"
    assert s.prefect_home_dir == tmp_path / "h" / "prefect"
    assert s.source_uri == f"sqlite:///{tmp_path / 'h' / 'interactions.db'}"


def test_explicit_mlflow_uri_and_nested_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("RANKLOOP_RANKER__LEARNING_RATE", "0.2")
    s = Settings()
    assert s.tracking_uri == "http://127.0.0.1:5000"
    assert s.ranker.learning_rate == 0.2
    # The configuration hash changes with a model-shaping parameter.
    monkeypatch.setenv("RANKLOOP_RANKER__LEARNING_RATE", "0.3")
    assert Settings().config_hash() != s.config_hash()


def test_config_file_and_typos(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "rankloop.toml"
    cfg.write_text('[gate]\nndcg_tolerance = 0.01\n[labels.grades]\nclick = 0.5\n')
    monkeypatch.setenv("RANKLOOP_CONFIG", str(cfg))
    s = Settings()
    assert s.gate.ndcg_tolerance == 0.01 and s.labels.grades == {"click": 0.5}
    cfg.write_text("[ranker]\nlearning_rat = 0.1\n")
    with pytest.raises(ValidationError, match="learning_rat"):
        Settings()
    monkeypatch.setenv("RANKLOOP_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match="absent.toml"):
        Settings()


def test_configuration_mistakes_name_the_variable_or_the_file_and_line(tmp_path, monkeypatch) -> None:
    from core.errors import Reason
    from core.settings import load_settings

    monkeypatch.setenv("RANKLOOP_RANKER__LEARNING_RATE", "fast")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.reason is Reason.BAD_CONFIG
    assert info.value.one_line().startswith("error (bad_config): RANKLOOP_RANKER__LEARNING_RATE='fast'")
    monkeypatch.delenv("RANKLOOP_RANKER__LEARNING_RATE")
    cfg = tmp_path / "rankloop.toml"
    cfg.write_text("[gate]\nndcg_tolerance = 0.01\n\n[ranker]\nlearning_rat = 0.1\n")
    monkeypatch.setenv("RANKLOOP_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match=r"rankloop.toml line 5: unknown setting ranker.learning_rat"):
        load_settings()
    cfg.write_text("[ranker]\nlearning_rate = \n")
    with pytest.raises(ConfigError, match=r"rankloop.toml.*line 2"):
        load_settings()
    yml = tmp_path / "rankloop.yaml"
    yml.write_text("ranker:\n  learning_rate: !!python/object:os.system 'echo pwned'\n")
    monkeypatch.setenv("RANKLOOP_CONFIG", str(yml))
    with pytest.raises(ConfigError, match=r"rankloop.yaml: line 2"):
        load_settings()


def test_window_resolution() -> None:
    assert last_monday(datetime(2026, 11, 22, 15, tzinfo=UTC)) == datetime(2026, 11, 16, tzinfo=UTC)
    assert last_monday(datetime(2026, 11, 16, 0, 0, tzinfo=UTC)) == datetime(2026, 11, 16, tzinfo=UTC)
    start, end = WindowSettings(end=date(2026, 11, 16), history_days=35).resolve()
    assert (end - start).days == 35 and end == datetime(2026, 11, 16, tzinfo=UTC)


@pytest.mark.parametrize("given, expected", [(None, "180"), ("45", "45")])
def test_prefect_local_api_gets_time_to_start(given: str | None, expected: str, tmp_path: Path) -> None:
    """A busy machine needs more than Prefect's 20 s to migrate a new home's database; a user's own
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS is kept. Read back through Prefect's own setting,
    in a fresh interpreter (Prefect reads its environment once, at import)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    env["RANKLOOP_HOME"] = str(tmp_path / "home")
    if given is not None:
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = given
    code = ("from core.runtime import apply_environment\nfrom core.settings import load_settings\n"
            "apply_environment(load_settings())\n"
            "from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as S\n"
            "print(S.value())")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == expected
