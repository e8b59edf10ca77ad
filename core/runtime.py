"""Process set-up for the libraries that keep global state: Prefect reads its home and timeouts from
the environment at import, MLflow keeps a process-wide tracking URI.

``core.settings`` only describes the configuration; the functions here are the one place that applies
it to the process, and are called by the commands, flows and stages before they use Prefect or MLflow.
"""

from __future__ import annotations

import os

from core.settings import Settings, is_local_store

PREFECT_STARTUP_TIMEOUT_S = 180
"""How long a command waits for Prefect's local API to start (``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``
unless set)."""


def quiet_libraries() -> None:
    """Keep library chatter out of unattended logs, unless the user's environment says otherwise:
    progress bars, telemetry, and MLflow's "View run ... at: <tracking URI>" line (credentials included)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def apply_environment(settings: Settings) -> None:
    """Point Prefect and MLflow at the data home. Call before using prefect or mlflow.

    ``PREFECT_HOME`` is only set when absent (Prefect reads it once, at import). MLflow's
    tracking and registry URIs are set for this process from ``settings.tracking_uri``, which
    already honours an explicit ``MLFLOW_TRACKING_URI``.
    """
    import mlflow

    settings.home_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home_dir))
    quiet_libraries()
    # Prefect's local API (no PREFECT_API_URL) migrates a new database before it answers: ~10 s on an
    # idle 2-core machine, past Prefect's 20 s default when the machine is busy (a first
    # `rankloop train` in a new home then failed with "Timed out ... ephemeral Prefect API server").
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(PREFECT_STARTUP_TIMEOUT_S))
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; put the environment back, or the next
    # Settings() would take our own default for the user's explicit choice.
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def ensure_experiment(settings: Settings, name: str | None = None) -> str:
    """Id of experiment ``name`` (default ``settings.experiment``), created with its artifacts
    under ``<home>/mlartifacts`` when MLflow's store is the embedded default."""
    import mlflow

    apply_environment(settings)
    name = name or settings.experiment
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # A local store keeps every experiment's artifacts in the data home, whatever the current directory
    # (MLflow's own default is ./mlruns); a tracking server decides for itself.
    location = (settings.artifact_root / name).as_uri() if is_local_store(settings.tracking_uri) else None
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        # Created concurrently by another process: use theirs.
        found = mlflow.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id
