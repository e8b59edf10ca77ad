"""Sources: the only package that talks to databases. Reads a window of interactions into an
immutable Parquet snapshot in the canonical schema, and writes Arrow tables into databases."""

from __future__ import annotations

from sources.uri import SourceURI, parse_uri, redact
from sources.writer import write_collection, write_table

__all__ = ["SourceURI", "parse_uri", "redact", "write_collection", "write_table"]
