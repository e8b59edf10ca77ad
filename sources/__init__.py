"""Sources: the only package that talks to databases. Reads a window of interactions into an
immutable Parquet snapshot in the canonical schema, and writes Arrow tables into databases."""

from __future__ import annotations

from sources.catalog import read_catalog
from sources.mapping import FieldSpec, Mapping, load_mapping, shipped_mappings
from sources.snapshot import (
    Snapshot,
    extract_snapshot,
    load_snapshot,
    prior_exposures,
    read_index,
    snapshot_dataset_info,
)
from sources.stream import window_queries
from sources.uri import SourceURI, parse_uri, redact
from sources.writer import write_collection, write_table

__all__ = [
    "FieldSpec",
    "Mapping",
    "Snapshot",
    "SourceURI",
    "extract_snapshot",
    "load_mapping",
    "load_snapshot",
    "parse_uri",
    "prior_exposures",
    "read_catalog",
    "read_index",
    "redact",
    "shipped_mappings",
    "snapshot_dataset_info",
    "window_queries",
    "write_collection",
    "write_table",
]
