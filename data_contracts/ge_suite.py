"""Run the declared suite through Great Expectations 1.x (ephemeral context, pandas data source).

GE is imported lazily, with analytics and progress bars off and its loggers held at WARNING, so
importing :mod:`data_contracts` stays cheap and quiet.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from data_contracts.rules import SUITE_NAME, RowRule

logger = logging.getLogger(__name__)

_QUIET_LOGGERS = ("great_expectations", "great_expectations.core", "great_expectations.data_context")


def quiet_great_expectations() -> None:
    """Analytics off, GE loggers at WARNING (only GE's own loggers; the root logger is untouched)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    for name in _QUIET_LOGGERS:
        ge_logger = logging.getLogger(name)
        if ge_logger.level < logging.WARNING:
            ge_logger.setLevel(logging.WARNING)


def _expectation(rule: RowRule) -> Any:
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    column = {} if "column_list" in rule.check.kwargs() else {"column": rule.column}
    kwargs: dict[str, Any] = {**column, **rule.check.kwargs(), "meta": {"rule": rule.name}}
    if rule.when_event_types is not None:
        kwargs["row_condition"] = Column("event_type").is_in(list(rule.when_event_types))
    return getattr(gx.expectations, rule.check.expectation_type)(**kwargs)


def ge_rules(rules: Sequence[RowRule]) -> list[RowRule]:
    """The rules Great Expectations can express (the exposure join has no GE equivalent)."""
    return [r for r in rules if r.check.expectation_type is not None]


def build_suite(rules: Sequence[RowRule], required_columns: Sequence[str]) -> Any:
    """An ``ExpectationSuite`` named ``interactions``: column existence, then one expectation per GE-expressible rule."""
    import great_expectations as gx

    existence = [
        gx.expectations.ExpectColumnToExist(column=c, meta={"rule": f"{c}_exists"}) for c in required_columns
    ]
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=[*existence, *(_expectation(r) for r in ge_rules(rules))])


def _context() -> Any:
    quiet_great_expectations()
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    return context


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas for GE: nullable ints stay ``Int32`` (not float), timestamps stay UTC."""
    return table.to_pandas(types_mapper={pa.int32(): pd.Int32Dtype()}.get)


def run_suite(
    frame: pd.DataFrame, rules: Sequence[RowRule], required_columns: Sequence[str], params: dict[str, datetime]
) -> list[dict[str, Any]]:
    """Validate ``frame`` with a ValidationDefinition; one record per expectation.

    Returns:
        ``[{"name", "expectation", "column", "success", "unexpected_count", "element_count"}]``
        in suite order (existence checks first).
    """
    import great_expectations as gx

    context = _context()
    batch_definition = (
        context.data_sources.add_pandas("interactions_frame")
        .add_dataframe_asset("interactions")
        .add_batch_definition_whole_dataframe("whole_extract")
    )
    suite = context.suites.add(build_suite(rules, required_columns))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="interactions_contract", data=batch_definition, suite=suite)
    )
    try:
        result = definition.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=dict(params),
            result_format={"result_format": "BASIC", "partial_unexpected_count": 0},
        )
        return [_record(r) for r in result.results]
    finally:
        # The context (GX keeps the one made last) held the frame through its data source for the rest of the
        # run: 45 MB of the contract's 200,000-row sample under every later stage at 10M interactions.
        context.data_sources.delete("interactions_frame")


def _record(result: Any) -> dict[str, Any]:
    config = result.expectation_config
    if result.exception_info and result.exception_info.get("raised_exception"):
        logger.warning("GE expectation %s raised: %s", config.meta.get("rule"), result.exception_info)
    return {
        "name": config.meta.get("rule"),
        "expectation": type(config.to_domain_obj()).__name__,
        "column": config.kwargs.get("column"),
        "success": bool(result.success),
        "unexpected_count": result.result.get("unexpected_count"),
        "element_count": result.result.get("element_count"),
    }


def sample_indices(n_rows: int, max_rows: int | None) -> np.ndarray | None:
    """Evenly strided row indices (first and last row included), or None for the full table."""
    if max_rows is None or n_rows <= max_rows:
        return None
    return np.unique(np.linspace(0, n_rows - 1, max_rows).round().astype(np.int64))


def merge_ge_records(
    table: pa.Table, rules: Sequence[RowRule], exact: list[dict[str, Any]],
    params: dict[str, datetime], settings: Any,
) -> list[dict[str, Any]]:
    """Run GE (full table, or a strided sample above ``settings.ge_max_rows``) and merge its records.

    Full table: success/unexpected/element counts are GE's (``engine="great_expectations"``) and
    ``mask_unexpected_count`` keeps ours. Sample: the exact counts stay ours (``engine="rankloop"``)
    and GE's sample record goes under ``ge_sample``.
    """
    indices = sample_indices(table.num_rows, settings.ge_max_rows)
    checked = table if indices is None else table.take(pa.array(indices))
    return merge_checked_records(checked, indices is not None, rules, exact, params)


def merge_checked_records(
    checked: pa.Table, sampled: bool, rules: Sequence[RowRule], exact: list[dict[str, Any]],
    params: dict[str, datetime],
) -> list[dict[str, Any]]:
    """:func:`merge_ge_records` given the rows GE checks (``sampled``: they are :func:`sample_indices`'
    rows of a larger table, not all of it)."""
    from core.schema import REQUIRED_COLUMNS

    records = run_suite(to_pandas(checked), rules, REQUIRED_COLUMNS, params)
    by_name = {r["name"]: r for r in records}
    by_rule = {r.name for r in rules}
    merged = [{**r, "engine": "great_expectations"} for r in records if r["name"] not in by_rule]
    for ours in exact:
        theirs = by_name.get(ours["name"])
        if theirs is None:  # no GE equivalent: the masks' record is the record
            merged.append(ours)
            continue
        if sampled:
            merged.append({**ours, "ge_sample": {**theirs, "rows": int(checked.num_rows)}})
            continue
        if theirs["unexpected_count"] != ours["unexpected_count"]:
            logger.warning("rule %s: GE counts %s unexpected rows, the mask %s",
                           ours["name"], theirs["unexpected_count"], ours["unexpected_count"])
        official = {k: theirs[k] for k in ("success", "unexpected_count", "element_count")}
        merged.append({**ours, **official, "engine": "great_expectations",
                       "mask_unexpected_count": ours["unexpected_count"]})
    return merged
