"""Data contracts: validate extracted interactions, quarantine bad rows with reasons.

Public API: :func:`validate_interactions`, :class:`ContractResult`, :func:`write_quarantine`,
:func:`suite_as_dict`, :func:`suite_version`. Imports neither prefect nor database clients.
"""

from data_contracts.config import ContractSettings
from data_contracts.quarantine import write_quarantine
from data_contracts.rules import SUITE_NAME, row_rules, suite_as_dict, suite_version, table_rules
from data_contracts.validate import ContractResult, validate_interactions

__all__ = [
    "SUITE_NAME",
    "ContractResult",
    "ContractSettings",
    "row_rules",
    "suite_as_dict",
    "suite_version",
    "table_rules",
    "validate_interactions",
    "write_quarantine",
]
