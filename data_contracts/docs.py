"""Render the declared rules as Markdown for docs/contracts.md (generated, never hand-edited).

Regenerate with::

    .venv/bin/python -c "from pathlib import Path; from data_contracts.docs import update_docs; \
update_docs(Path('docs/contracts.md'))"
"""

from __future__ import annotations

import json
from pathlib import Path

from core.atomic import write_text
from core.config.contracts import ContractSettings
from data_contracts.rules import suite_as_dict

BEGIN = "<!-- BEGIN GENERATED RULES (data_contracts.docs.update_docs) -->"
END = "<!-- END GENERATED RULES -->"


def _cell(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text.replace("|", "\\|")


def render_rules_markdown(settings: ContractSettings | None = None) -> str:
    """The generated section: suite name/version, required columns, row rules, table rules."""
    suite = suite_as_dict(settings)
    lines = [
        f"Suite `{suite['name']}`, version `{suite['version']}` (default settings).",
        "",
        "Required columns: " + ", ".join(f"`{c}`" for c in suite["required_columns"]) + ".",
        "",
        "### Row rules (a failing row is quarantined)",
        "",
        "| # | rule | reason | column | GE expectation | kwargs | event types | description |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(suite["row_rules"], 1):
        when = ", ".join(r["when_event_types"]) if r["when_event_types"] else "all"
        lines.append(f"| {i} | `{r['name']}` | `{r['reason']}` | `{r['column']}` | `{r['expectation']}` | "
                     f"{_cell(r['kwargs']) if r['kwargs'] else ''} | {when} | {_cell(r['description'])} |")
    lines += ["", "### Table rules (after quarantine)", "", "| rule | reason | fatal | description |",
              "| --- | --- | --- | --- |"]
    for t in suite["table_rules"]:
        lines.append(f"| `{t['name']}` | `{t['reason']}` | {'yes' if t['fatal'] else 'no'} | {_cell(t['description'])} |")
    return "\n".join(lines) + "\n"


def update_docs(path: Path, settings: ContractSettings | None = None) -> None:
    """Replace the generated section of ``path`` (between the markers) atomically."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path} lacks the markers {BEGIN!r} and {END!r}")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    write_text(path, f"{head}{BEGIN}\n{render_rules_markdown(settings)}{END}{tail}")


def generated_section(path: Path) -> str:
    """The text currently between the markers of ``path``."""
    return path.read_text().split(BEGIN, 1)[1].split(END, 1)[0].lstrip("\n")
