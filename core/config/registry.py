"""What the registry needs of the settings (``Settings.registry``): the few fields its modules read, as one
small value, so ``registry`` depends on these and not on the whole configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config.gate import ReplaySettings


@dataclass(frozen=True)
class RegistryConfig:
    """The registry's configuration.

    Attributes:
        home_dir: the data home (locks, offline pins, the model cache live under it).
        tracking_uri: the MLflow tracking and registry URI.
        lock_timeout_s: how long a promotion or rollback waits for another of the same kind (``gate.lock_timeout_s``).
        replay: the serve-ability replay's bounds (``gate.replay``).
        explicit_tracking_uri: the tracking URI the user set (``MLFLOW_TRACKING_URI``), handed to the replay's
            process; None when the default under the home is used.
        manifest_config: the model-shaping configuration a manifest records by default
            (``Settings.model_config_dict``).
    """

    home_dir: Path
    tracking_uri: str
    lock_timeout_s: float = 120.0
    replay: ReplaySettings = field(default_factory=ReplaySettings)
    explicit_tracking_uri: str | None = None
    manifest_config: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def cache_dir(self) -> Path:
        """``<home>/cache``: the downloaded model versions."""
        return self.home_dir / "cache"
