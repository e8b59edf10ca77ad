"""Human-readable accounts of a contract outcome: the ContractViolation and the Markdown report."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from core.config.contracts import ContractSettings
from core.errors import ContractViolation, Reason
from data_contracts.rules import SUITE_NAME


class ContractResult(Protocol):
    """What the accounts read of a contract outcome (``data_contracts.validate.ContractResult``, which
    imports this module; a Protocol keeps the two modules out of an import cycle)."""

    valid: pa.Table
    quarantined: pa.Table
    suite_name: str
    suite_version: str
    expectations: list[dict[str, Any]]
    gate_passed: bool
    ge_rows: int | None

    @property
    def rows_in(self) -> int: ...

    @property
    def rows_valid(self) -> int: ...

    @property
    def failures(self) -> list[dict[str, Any]]: ...

    def reason_counts(self) -> dict[str, int]: ...

    def summary(self) -> dict[str, Any]: ...

EXAMPLE_COLUMNS = ["event_id", "user_id", "item_id", "event_type", "value", "ts", "session_id", "request_id",
                   "reason"]


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
            "examples": rows.select(EXAMPLE_COLUMNS).to_pylist(),
        }
    return out


def describe_failure(record: dict[str, Any], result: ContractResult, settings: ContractSettings) -> str:
    """One sentence: the check, observed vs allowed (and the previous run it compares with)."""
    rows_in, valid, quarantined = result.rows_in, result.rows_valid, result.quarantined.num_rows
    if record["name"] == "max_quarantine_fraction":
        return (f"max_quarantine_fraction: {quarantined} of {rows_in} rows quarantined "
                f"({record['observed_value']:.1%}), allowed at most {settings.max_quarantine_fraction:.1%}")
    if record["name"] == "min_rows_after_quarantine":
        return (f"min_rows_after_quarantine: {valid} valid rows remain of {rows_in}, "
                f"need at least {settings.min_rows}")
    if record.get("message"):
        return f"{record['name']}: {record['message']}"
    return f"{record['name']}: observed {record['observed_value']}"


def violation(result: ContractResult, settings: ContractSettings) -> ContractViolation:
    """A ContractViolation naming every failed gate rule, the rows quarantined per rule with examples."""
    failed = result.failures
    by_rule = examples_by_rule(result.quarantined, settings.example_rows)
    top = sorted(by_rule.items(), key=lambda kv: -kv[1]["rows"])
    offenders = "; ".join(f"{name}: {v['rows']} rows, e.g. event_id {v['event_ids']}" for name, v in top)
    message = (f"contract {SUITE_NAME!r} failed: " + "; ".join(describe_failure(r, result, settings) for r in failed)
               + (f". Quarantined by rule: {offenders}" if offenders else ""))
    details = {
        "counts": {"rows_in": result.rows_in, "rows_valid": result.rows_valid,
                   "rows_quarantined": result.quarantined.num_rows},
        "reasons": result.reason_counts(),
        "failed_expectations": [r["name"] for r in failed]
        + [r["name"] for r in result.expectations if r["engine"] not in ("table", "batch") and not r["success"]],
        "batch_checks": result.summary()["batch_checks"],
        "quarantined_by_rule": by_rule,
    }
    return ContractViolation(message, reason=Reason.CONTRACT, details=details)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(result: ContractResult, settings: ContractSettings,
                    context: Mapping[str, Any] | None = None) -> str:
    """The validation report: verdict, counts, every expectation (pass/fail, counts), batch checks, examples.

    ``context`` adds lines such as the source, the snapshot digest and where the quarantine file is.
    """
    s = result.summary()
    verdict = "PASSED" if result.gate_passed else "FAILED (the run stops before training)"
    lines = [f"# Data contract `{result.suite_name}` v`{result.suite_version}`: {verdict}", ""]
    window = s["window"] or ["?", "?"]
    lines += [f"- window: [{window[0]}, {window[1]})", f"- validated at (now): {s['now']}"]
    lines += [f"- {k}: {v}" for k, v in (context or {}).items()]
    lines += [f"- Great Expectations: {_ge_line(result)}", "",
              "## Counts", "", "| rows extracted | clean | quarantined | quarantined fraction | nothing lost |",
              "| ---: | ---: | ---: | ---: | --- |",
              f"| {s['rows_in']:,} | {s['rows_valid']:,} | {s['rows_quarantined']:,} | "
              f"{s['rows_quarantined'] / s['rows_in']:.3%} (allowed {settings.max_quarantine_fraction:.2%}) | "
              f"{s['rows_valid']:,} + {s['rows_quarantined']:,} = {s['rows_in']:,} |", ""]
    if result.failures:
        lines += ["## Why the gate failed", ""]
        lines += [f"- {describe_failure(r, result, settings)}" for r in result.failures] + [""]
    lines += ["## Quarantined rows per reason", ""]
    reasons = s["reasons"]
    lines += (["| reason | rows |", "| --- | ---: |"] + [f"| `{k}` | {v:,} |" for k, v in reasons.items()]
              if reasons else ["none"]) + [""]
    lines += _expectation_table(result) + _batch_table(result) + _examples(result, settings)
    return "\n".join(lines) + "\n"


def _ge_line(result: ContractResult) -> str:
    if result.ge_rows is None:
        return "not run (masks only)"
    if result.ge_rows < result.rows_in:
        return (f"run on an evenly strided sample of {result.ge_rows:,} of {result.rows_in:,} rows "
                "(counts below are exact, from the masks over every row; GE's sample counts in `ge sample`)")
    return f"run on all {result.ge_rows:,} rows (its counts are the official ones below)"


def _expectation_table(result: ContractResult) -> list[str]:
    lines = ["## Expectations", "", "| expectation | engine | result | unexpected | of rows | quarantined | ge sample |",
             "| --- | --- | --- | ---: | ---: | ---: | --- |"]
    for e in result.expectations:
        if e["engine"] == "batch":
            continue
        sample = e.get("ge_sample")
        sample_text = (f"{sample['unexpected_count']} of {sample['element_count']}" if sample
                       else e.get("ge", ""))
        observed = e.get("observed_value") if e["engine"] == "table" else e.get("unexpected_count")
        lines.append(f"| `{e['name']}` | {e['engine']} | {'pass' if e['success'] else '**FAIL**'} | "
                     f"{_cell(observed)} | {_cell(e.get('element_count'))} | {_cell(e.get('quarantined_count'))} | "
                     f"{_cell(sample_text)} |")
    return [*lines, ""]


def _batch_table(result: ContractResult) -> list[str]:
    lines = ["## Batch checks", "", "| check | result | observed | allowed | detail |", "| --- | --- | ---: | ---: | --- |"]
    for e in result.expectations:
        if e["engine"] == "batch":
            lines.append(f"| `{e['name']}` | {'pass' if e['success'] else '**FAIL**'} | {_cell(e['observed_value'])} | "
                         f"{_cell(e['allowed'])} | {_cell(e['message'])} |")
    return [*lines, ""]


def _examples(result: ContractResult, settings: ContractSettings) -> list[str]:
    by_rule = examples_by_rule(result.quarantined, settings.example_rows)
    if not by_rule:
        return []
    lines = ["## Example quarantined rows (by first failing rule)", ""]
    for name, entry in sorted(by_rule.items(), key=lambda kv: -kv[1]["rows"]):
        lines += [f"### `{name}`: {entry['rows']:,} rows", "", "| " + " | ".join(EXAMPLE_COLUMNS) + " |",
                  "|" + " --- |" * len(EXAMPLE_COLUMNS)]
        lines += ["| " + " | ".join(_cell(row[c]) for c in EXAMPLE_COLUMNS) + " |" for row in entry["examples"]]
        lines.append("")
    return lines
