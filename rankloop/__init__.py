"""RankLoop's pipeline: the weekly retrain's stages, the policy tables stage, serving guards and
operations, over the packages below it (core, sources, features, models, data_contracts, registry).
Prefect wiring lives in flows/, the command line in cli/."""

from core.version import package_version

__version__ = package_version()
