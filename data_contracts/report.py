"""Human-readable accounts of a contract outcome: the ContractViolation message and its details."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from data_contracts.config import ContractSettings
from data_contracts.rules import SUITE_NAME, Counts
from rankloop.errors import ContractViolation, Reason


def examples_by_rule(quarantined: pa.Table, limit: int) -> dict[str, dict[str, Any]]:
    """Per first-failing rule: row count, its reasons and up to ``limit`` example rows."""
    out: dict[str, dict[str, Any]] = {}
    if quarantined.num_rows == 0:
        return out
    for entry in pc.value_counts(quarantined.column("rule")).to_pylist():
        rows = quarantined.filter(pc.equal(quarantined.column("rule"), entry["values"])).slice(0, limit)
        out[entry["values"]] = {
            "rows": entry["counts"],
            "event_ids": rows.column("event_id").to_pylist(),
            "examples": rows.select(["event_id", "user_id", "item_id", "event_type", "value", "ts", "reason"])
            .to_pylist(),
        }
    return out


def _describe(record: dict[str, Any], counts: Counts, settings: ContractSettings) -> str:
    if record["name"] == "max_quarantine_fraction":
        return (f"max_quarantine_fraction: {counts.rows_quarantined} of {counts.rows_in} rows quarantined "
                f"({record['observed_value']:.1%}), allowed at most {settings.max_quarantine_fraction:.1%}")
    if record["name"] == "min_rows_after_quarantine":
        return (f"min_rows_after_quarantine: {counts.rows_valid} valid rows remain of {counts.rows_in}, "
                f"need at least {settings.min_rows}")
    return f"{record['name']}: observed {record['observed_value']}"


def violation(
    failed: list[dict[str, Any]], records: list[dict[str, Any]], counts: Counts,
    quarantined: pa.Table, settings: ContractSettings,
) -> ContractViolation:
    """A ContractViolation saying which table rules failed, how many rows, and which rules quarantined them."""
    by_rule = examples_by_rule(quarantined, settings.example_rows)
    top = sorted(by_rule.items(), key=lambda kv: -kv[1]["rows"])
    offenders = "; ".join(f"{name}: {v['rows']} rows, e.g. event_id {v['event_ids']}" for name, v in top)
    message = (f"contract {SUITE_NAME!r} failed: " + "; ".join(_describe(r, counts, settings) for r in failed)
               + (f". Quarantined by rule: {offenders}" if offenders else ""))
    details = {
        "counts": vars(counts),
        "failed_expectations": [r["name"] for r in failed]
        + [r["name"] for r in records if r["engine"] != "table" and not r["success"]],
        "quarantined_by_rule": by_rule,
    }
    return ContractViolation(message, reason=Reason.CONTRACT, details=details)
