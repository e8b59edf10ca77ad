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

from data_contracts.config import ContractSettings
from features.config import FeatureSettings, LabelSettings
from models.config import RankerSettings
from models.policy_config import (
    BanditSettings,
    LinUCBSettings,
    OPESettings,
    QLearningSettings,
    RewardSettings,
)
from rankloop.executor import ExecutorSettings
from registry.config import GateSettings
from sources.config import SourceSettings


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
    max_lateness_hours: float = Field(
        default=12.0, gt=0, description="A scheduled run starting later than this skips (logged) instead of piling up."
    )
    notify_webhook: str | None = Field(default=None, description="URL that receives a JSON summary when a run fails or a gate holds.")
    notify_file: Path | None = Field(default=None, description="File that receives one JSON line per failed or held run.")
    actor: str = Field(default="weekly-retrain", description="Name recorded in the ledger for promotions made by runs.")


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
            path = Path(config)
            if not path.is_file():
                raise FileNotFoundError(f"RANKLOOP_CONFIG names {str(path)!r}, which is not a file")
            if path.suffix in {".yaml", ".yml"}:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
            elif path.suffix == ".toml":
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            else:
                raise ValueError(f"RANKLOOP_CONFIG must be a .toml, .yaml or .yml file, got {str(path)!r}")
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

    # --- recording ---------------------------------------------------------------------
    def model_config_dict(self) -> dict[str, Any]:
        """The parts of the configuration that shape a model (recorded in every manifest)."""
        return self.model_dump(
            mode="json", include={
                "labels", "features", "ranker", "rewards", "bandit", "linucb",
                "qlearning", "ope", "gate", "contracts", "window",
            }
        )

    def config_hash(self) -> str:
        """sha256 (first 16 hex) of the model-shaping configuration."""
        blob = json.dumps(self.model_config_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def apply_environment(settings: Settings) -> None:
    """Point Prefect and MLflow at the data home. Call before using prefect or mlflow.

    ``PREFECT_HOME`` is only set when absent (Prefect reads it once, at import). MLflow's
    tracking and registry URIs are set for this process from ``settings.tracking_uri``, which
    already honours an explicit ``MLFLOW_TRACKING_URI``.
    """
    import mlflow

    settings.home_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home_dir))
    # Keep library chatter (progress bars, telemetry) out of unattended logs.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)


def ensure_experiment(settings: Settings, name: str | None = None) -> str:
    """Id of experiment ``name`` (default ``settings.experiment``), created with its artifacts
    under ``<home>/mlartifacts`` when MLflow's store is the embedded default."""
    import mlflow

    apply_environment(settings)
    name = name or settings.experiment
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None if settings.mlflow_tracking_uri else (settings.artifact_root / name).as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        # Created concurrently by another process: use theirs.
        found = mlflow.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id
