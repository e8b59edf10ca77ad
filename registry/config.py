"""The registry's configuration from what a caller holds: ``Settings`` (its ``registry`` part), a
``RegistryConfig``, or nothing (the settings of the environment)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.config.registry import RegistryConfig

if TYPE_CHECKING:
    from core.settings import Settings


def config_of(settings: Settings | RegistryConfig | None) -> RegistryConfig:
    """``settings`` as the registry's configuration; None reads the environment's settings."""
    if isinstance(settings, RegistryConfig):
        return settings
    if settings is None:
        from core.settings import Settings

        settings = Settings()
    return settings.registry


__all__ = ["RegistryConfig", "config_of"]
