"""Data contracts: validate extracted interactions, quarantine bad rows with reasons.

Public API: :func:`check_interactions` / :func:`validate_interactions`, :class:`ContractResult`,
:func:`validate_snapshot` (check + quarantine + report + profile), :func:`write_quarantine`,
:func:`suite_as_dict`, :func:`suite_version`. Imports neither prefect nor database clients.
"""

from core.config.contracts import ContractSettings
from data_contracts.profile import WindowProfile, previous_profile, source_key, write_profile
from data_contracts.quarantine import write_quarantine, write_report
from data_contracts.report import render_markdown
from data_contracts.rules import SUITE_NAME, row_rules, suite_as_dict, suite_version, table_rules
from data_contracts.run import ContractOutcome, validate_snapshot
from data_contracts.validate import (
    ContractResult,
    check_interactions,
    check_interactions_file,
    validate_interactions,
)

__all__ = [
    "SUITE_NAME",
    "ContractOutcome",
    "ContractResult",
    "ContractSettings",
    "WindowProfile",
    "check_interactions",
    "check_interactions_file",
    "previous_profile",
    "render_markdown",
    "row_rules",
    "source_key",
    "suite_as_dict",
    "suite_version",
    "table_rules",
    "validate_interactions",
    "validate_snapshot",
    "write_profile",
    "write_quarantine",
    "write_report",
]
