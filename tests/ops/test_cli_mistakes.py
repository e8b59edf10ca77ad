"""Every user mistake ends in one stderr line ``error (<reason>): <what is wrong> - <what to do>``,
with its documented exit code and no traceback (the real ``rankloop`` script, a real Prefect server,
the real MariaDB for a refused password)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import BIN, CLI_TIMEOUT_S, PrefectServer, make_demo_home

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


@dataclass(frozen=True)
class Mistake:
    args: tuple[str, ...]
    code: int
    reason: str
    names: tuple[str, ...]  # what the line must name (what is wrong, what to do)
    env: dict[str, str] = field(default_factory=dict)
    config: str | None = None  # text of a RANKLOOP_CONFIG file (suffix from its first line)
    max_seconds: float | None = None


MISTAKES = {
    "unknown URI scheme": Mistake(("train", "--source", "foo://db/x"), 2, "bad_uri", ("'foo'", "postgresql://")),
    "unresolvable host": Mistake(("train", "--source", "postgresql://reader@no-such-host.invalid/app"), 7,
                                 "unreachable", ("no-such-host.invalid",), max_seconds=60),
    "wrong password": Mistake(("train", "--source", "mysql://root:not-the-password@127.0.0.1:3306/test"), 9, "auth",
                              ("password",)),
    "unknown mapping": Mistake(("train", "--mapping", "nosuch"), 2, "bad_mapping", ("nosuch", "ecommerce_mysql")),
    "bad date format": Mistake(("train", "--end", "16/11/2026"), 2, "invalid_input", ("--end", "YYYY-MM-DD")),
    "start after end": Mistake(("extract", "--start", "2026-11-16", "--end", "2026-11-02"), 2, "invalid_input",
                               ("--start", "--end")),
    "end before any data": Mistake(("train", "--end", "2001-01-01"), 2, "empty", ("2001-01-01", "--end")),
    "end far in the future": Mistake(("train", "--end", "2099-01-05"), 2, "empty", ("2099-01-05", "--end")),
    "not enough history": Mistake(("train", "--end", "2026-10-26"), 2, "empty", ("train", "days", "--end 2026-")),
    "malformed config file": Mistake(("train",), 2, "bad_config", ("rankloop.toml", "line 2"),
                                     config="[ranker]\nlearning_rate = = 0.1\n"),
    "unknown config file": Mistake(("train",), 2, "bad_config", ("absent.toml", "RANKLOOP_CONFIG"),
                                   env={"RANKLOOP_CONFIG": "absent.toml"}),
    "unknown setting in config file": Mistake(("train",), 2, "bad_config", ("rankloop.toml line 3", "learning_rat"),
                                              config="[ranker]\n# typo below\nlearning_rat = 0.1\n"),
    "bad environment value": Mistake(("train",), 2, "bad_config", ("RANKLOOP_RANKER__LEARNING_RATE", "'fast'"),
                                     env={"RANKLOOP_RANKER__LEARNING_RATE": "fast"}),
    "read-only data home": Mistake(("train", "--home", "/sys/fs/rankloop-home"), 10, "io",
                                   ("/sys/fs/rankloop-home", "--home"), max_seconds=30),
    "missing data home": Mistake(("runs", "--home", "MISSING"), 3, "not_found", ("no RankLoop data home", "--home")),
    "unknown option": Mistake(("train", "--ned", "2026-11-16"), 2, "invalid_input", ("--ned", "rankloop train --help")),
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("mistakes") / "home"
    make_demo_home(home)
    return home


@pytest.mark.parametrize("name", list(MISTAKES))
def test_a_mistake_is_one_line_with_its_exit_code(name: str, home: Path, tmp_path: Path,
                                                  prefect_server: PrefectServer) -> None:
    mistake = MISTAKES[name]
    env = prefect_server.env(RANKLOOP_HOME=str(home), **mistake.env)
    if mistake.config is not None:
        (tmp_path / "rankloop.toml").write_text(mistake.config)
        env["RANKLOOP_CONFIG"] = str(tmp_path / "rankloop.toml")
    args = [str(tmp_path / "missing") if a == "MISSING" else a for a in mistake.args]
    began = time.monotonic()
    done = subprocess.run([str(BIN / "rankloop"), *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S)
    took = time.monotonic() - began
    lines = done.stderr.splitlines()
    assert done.returncode == mistake.code, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr + done.stdout
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line.startswith(f"error ({mistake.reason}): ") and " - " in line, line
    for text in mistake.names:
        assert text in line, (text, line)
    if mistake.max_seconds is not None:  # not a timing assertion: a retry loop would take minutes
        assert took < mistake.max_seconds, (took, line)


def test_verbose_shows_the_traceback_after_the_command_name_too(home: Path, tmp_path: Path,
                                                                  prefect_server: PrefectServer) -> None:
    env = prefect_server.env(RANKLOOP_HOME=str(home), RANKLOOP_RANKER__LEARNING_RATE="fast")
    done = subprocess.run([str(BIN / "rankloop"), "train", "-v"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=CLI_TIMEOUT_S)
    assert done.returncode == 2
    assert "Traceback" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("error (bad_config): RANKLOOP_RANKER__LEARNING_RATE")
