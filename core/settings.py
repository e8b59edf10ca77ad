"""The one typed settings model: environment variables (``RANKLOOP_*``, nested with ``__``)
plus an optional TOML/YAML file named by ``RANKLOOP_CONFIG``.

Examples::

    RANKLOOP_HOME=/data/rankloop
    RANKLOOP_SOURCE__URI=postgresql://reader@db/app
    RANKLOOP_RANKER__LEARNING_RATE=0.03
    RANKLOOP_CONFIG=rankloop.toml
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from core.config.contracts import ContractSettings
from core.config.executor import ExecutorSettings
from core.config.features import FeatureSettings, LabelSettings
from core.config.gate import GateSettings
from core.config.guard import DriftSettings, GuardSettings
from core.config.policy import (
    BanditSettings,
    LinUCBSettings,
    OPESettings,
    QLearningSettings,
    RewardSettings,
)
from core.config.ranker import RankerSettings
from core.config.registry import RegistryConfig
from core.config.source import SourceSettings


class WindowSettings(BaseModel):
    """Which interactions a run reads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    end: date | None = Field(
        default=None,
        description="Exclusive end of the window (a date, 00:00 UTC). Default: the most recent Monday, "
        "so the last complete week is the test week.",
    )
    history_days: int = Field(default=35, ge=14, description="Days of history before `end` the run extracts.")

    def resolve(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        """The window ``[start, end)`` as UTC datetimes."""
        if self.end is not None:
            end = datetime(self.end.year, self.end.month, self.end.day, tzinfo=UTC)
        else:
            end = last_monday(now or datetime.now(UTC))
        return end - timedelta(days=self.history_days), end


def last_monday(now: datetime) -> datetime:
    """00:00 UTC of the most recent Monday at or before ``now``."""
    now = now.astimezone(UTC)
    day = datetime(now.year, now.month, now.day, tzinfo=UTC)
    return day - timedelta(days=day.weekday())


class OpsSettings(BaseModel):
    """Scheduling and failure reporting."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: str = Field(default="UTC", description="Timezone of both crons.")
    weekly_cron: str = Field(
        default="0 1 * * 1", description="When `rankloop schedule` runs the weekly retrain (cron; prefect.yaml keeps the same)."
    )
    bandit_cron: str = Field(
        default="0 2 * * *", description="When `rankloop schedule` runs the daily bandit refresh (cron; prefect.yaml keeps the same)."
    )
    ab_cron: str = Field(
        default="0 3 * * *", description="When the daily A/B report deployment runs (cron; prefect.yaml keeps the same).")
    guard_cron: str = Field(
        default="30 3 * * *", description="When the guardrail deployment runs (cron; prefect.yaml keeps the same).")
    max_lateness_hours: float = Field(
        default=12.0, gt=0, description="A scheduled run starting later than this skips (logged) instead of piling up."
    )
    notify_webhook: str | None = Field(default=None, description="URL that receives a JSON summary when a run fails or a gate holds.")
    notify_file: Path | None = Field(default=None, description="File that receives one JSON line per failed or held run.")
    actor: str = Field(default="weekly-retrain", description="Name recorded in the ledger for promotions made by runs.")
    keep_failed_runs: int = Field(
        default=2, ge=0, description="Failed runs whose intermediate data (<home>/runs/<end>/<stamp>/data) is kept for "
        "inspection; older ones are removed at the start of the next run.")


class Settings(BaseSettings):
    """Everything a RankLoop run can be told. Every field is described; all are recorded per run."""

    model_config = SettingsConfigDict(
        env_prefix="RANKLOOP_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    home: Path = Field(default=Path(".rankloop"), description="Data home: snapshots, MLflow store, Prefect home, caches.")
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "RANKLOOP_MLFLOW_TRACKING_URI"),
        description="MLflow tracking URI. Default: sqlite:///<home>/mlflow.db with artifacts in <home>/mlartifacts.",
    )
    experiment: str = Field(default="rankloop", description="MLflow experiment name.")
    prefect_home: Path | None = Field(default=None, description="PREFECT_HOME. Default: <home>/prefect.")
    source: SourceSettings = Field(default_factory=SourceSettings)
    window: WindowSettings = Field(default_factory=WindowSettings)
    contracts: ContractSettings = Field(default_factory=ContractSettings)
    labels: LabelSettings = Field(default_factory=LabelSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    ranker: RankerSettings = Field(default_factory=RankerSettings)
    rewards: RewardSettings = Field(default_factory=RewardSettings)
    bandit: BanditSettings = Field(default_factory=BanditSettings)
    linucb: LinUCBSettings = Field(default_factory=LinUCBSettings)
    qlearning: QLearningSettings = Field(default_factory=QLearningSettings)
    ope: OPESettings = Field(default_factory=OPESettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    ops: OpsSettings = Field(default_factory=OpsSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get("RANKLOOP_CONFIG")
        if config:
            from core.errors import ConfigError, Reason

            path = Path(config)
            if not path.is_file():
                raise ConfigError(f"RANKLOOP_CONFIG names {str(path)!r}, which is not a file", reason=Reason.BAD_CONFIG,
                                  hint="point RANKLOOP_CONFIG at a .toml or .yaml settings file, or unset it")
            if path.suffix in {".yaml", ".yml"}:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
            elif path.suffix == ".toml":
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            else:
                raise ConfigError(f"RANKLOOP_CONFIG must be a .toml, .yaml or .yml file, got {str(path)!r}",
                                  reason=Reason.BAD_CONFIG, hint="rename the file or point RANKLOOP_CONFIG at another")
        return tuple(sources)

    # --- derived locations -------------------------------------------------------------
    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.home_dir / "mlartifacts"

    @property
    def prefect_home_dir(self) -> Path:
        return (self.prefect_home or self.home_dir / "prefect").expanduser().resolve()

    @property
    def demo_db(self) -> Path:
        return self.home_dir / "interactions.db"

    @property
    def source_uri(self) -> str:
        return self.source.uri or f"sqlite:///{self.demo_db}"

    @property
    def snapshot_dir(self) -> Path:
        return self.home_dir / "snapshots"

    @property
    def quarantine_dir(self) -> Path:
        return self.home_dir / "quarantine"

    @property
    def cache_dir(self) -> Path:
        return self.home_dir / "cache"

    @property
    def registry(self) -> RegistryConfig:
        """The few settings the registry reads (``registry`` takes these, not the whole configuration)."""
        return RegistryConfig(home_dir=self.home_dir, tracking_uri=self.tracking_uri,
                              lock_timeout_s=self.gate.lock_timeout_s, replay=self.gate.replay,
                              explicit_tracking_uri=self.mlflow_tracking_uri, manifest_config=self.model_config_dict())

    # --- recording ---------------------------------------------------------------------
    def model_config_dict(self) -> dict[str, Any]:
        """The parts of the configuration that shape a model (recorded in every manifest)."""
        return self.model_dump(
            mode="json", include={
                "labels", "features", "ranker", "rewards", "bandit", "linucb",
                "qlearning", "ope", "gate", "contracts", "window", "drift",
            }
        )

    def config_hash(self) -> str:
        """sha256 (first 16 hex) of the model-shaping configuration."""
        blob = json.dumps(self.model_config_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def load_settings(**overrides: Any) -> Settings:
    """``Settings(**overrides)``, with every configuration mistake as one :class:`ConfigError` that
    names the environment variable or the settings file and line, and what was expected."""
    from pydantic import ValidationError

    from core.errors import ConfigError, Reason

    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise ConfigError(_describe_invalid(e), reason=Reason.BAD_CONFIG,
                          hint="fix or unset it (README, Configuration, lists every setting)") from None
    except ConfigError:
        raise
    except Exception as e:  # the file's parser: YAML/TOML syntax, a refused YAML tag
        config = os.environ.get("RANKLOOP_CONFIG", "")
        raise ConfigError(f"RANKLOOP_CONFIG file {config}: {_parser_problem(e)}", reason=Reason.BAD_CONFIG,
                          hint="fix the file or unset RANKLOOP_CONFIG") from None


def _describe_invalid(error: Any) -> str:
    """The first problem of a ValidationError, named as the user wrote it (variable, or file and line)."""
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"]]
    dotted = ".".join(loc)
    got = first.get("input")
    what = "unknown setting" if first["type"] == "extra_forbidden" else first["msg"].rstrip(".")
    variable = "RANKLOOP_" + "__".join(part.upper() for part in loc)
    if loc == ["mlflow_tracking_uri"] and "MLFLOW_TRACKING_URI" in os.environ:
        variable = "MLFLOW_TRACKING_URI"
    if variable in os.environ:
        return f"{variable}={os.environ[variable]!r}: {what}"
    config = os.environ.get("RANKLOOP_CONFIG")
    if config:
        line = _line_of(Path(config), loc[-1])
        where = f"{config}" + (f" line {line}" if line else "")
        return f"{where}: {dotted} = {got!r}: {what}" if what != "unknown setting" else f"{where}: unknown setting {dotted}"
    return f"setting {dotted} = {got!r}: {what}"


def _line_of(path: Path, key: str) -> int | None:
    import re

    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*[:=]")
    return next((i for i, text in enumerate(lines, 1) if pattern.match(text)), None)


def _parser_problem(error: BaseException) -> str:
    mark = getattr(error, "problem_mark", None)  # yaml.MarkedYAMLError
    if mark is not None:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        return f"line {mark.line + 1}: {problem}"
    return " ".join(str(error).split()) or type(error).__name__


def is_local_store(tracking_uri: str) -> bool:
    """True for a tracking store this process writes itself (a database or folder), not a server."""
    return not tracking_uri.startswith(("http://", "https://", "databricks"))
