"""Declarative mappings from a source's layout to the canonical schema (``rankloop.schema``).

A mapping is a YAML file (see ``docs/sources.md``): the table or collection, then one entry per
canonical column saying where its values come from (a column, a dotted JSON/nested path, a
constant, or the first non-null of several) and how to convert them (value maps, scale/offset,
timestamp units). Shipped mappings live beside this module in ``mappings/``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rankloop.errors import Reason, SourceError
from rankloop.schema import INTERACTION_COLUMNS, ITEM_SCHEMA, REQUIRED_COLUMNS, USER_SCHEMA

MAPPINGS_DIR = Path(__file__).parent / "mappings"
TimeUnit = Literal["auto", "timestamp", "s", "ms", "us", "ns"]


class FieldSpec(BaseModel):
    """Where one canonical column comes from and how its values are converted."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str | None = Field(default=None, alias="from", description="Column, or column.path.into.json / nested field.")
    const: str | float | int | bool | None = Field(default=None, description="A constant for every row.")
    coalesce: list[FieldSpec] | None = Field(default=None, description="First non-null of these specs.")
    values: dict[str, str | float | int | None] | None = Field(default=None, description="Value map, e.g. CART_ADD: cart_add.")
    unmapped: Literal["keep", "null"] = Field(default="keep", description="What a value missing from `values` becomes.")
    case_insensitive: bool = Field(default=False, description="Match `values` keys ignoring case.")
    scale: float | None = Field(default=None, description="Multiply numbers (ms -> s: 0.001, fraction -> percent: 100).")
    offset: float | None = Field(default=None, description="Add after scaling (1-based -> 0-based position: -1).")
    unit: TimeUnit | None = Field(default=None, description="Timestamps: native `timestamp`, epoch `s`/`ms`/`us`/`ns` numbers, or `auto` "
                                        "(epoch us in SQLite as write_table stores them, native elsewhere).")
    json_text: bool = Field(default=False, alias="json", description="The value is JSON text to parse (lists, e.g. embeddings).")

    @model_validator(mode="after")
    def _one_origin(self) -> FieldSpec:
        origins = [k for k in ("source", "const", "coalesce") if k in self.model_fields_set]
        if len(origins) != 1:
            raise ValueError(f"a column spec needs exactly one of from/const/coalesce, got {origins or 'none'}")
        return self

    @property
    def has_const(self) -> bool:
        return "const" in self.model_fields_set

    def leaves(self) -> list[FieldSpec]:
        """The specs that read a source field (this one, or the members of a coalesce)."""
        if self.coalesce is not None:
            return [leaf for spec in self.coalesce for leaf in spec.leaves()]
        return [self] if self.source is not None else []


class TableSpec(BaseModel):
    """One table or collection and its column specs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str | None = Field(default=None, description="SQL table (or Parquet path) to read.")
    collection: str | None = Field(default=None, description="MongoDB collection to read.")
    columns: dict[str, FieldSpec] = Field(description="Canonical column -> spec.")

    @property
    def relation(self) -> str | None:
        return self.table or self.collection


class CatalogSpec(BaseModel):
    """Optional catalogue tables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    items: TableSpec | None = None
    users: TableSpec | None = None


class Mapping(TableSpec):
    """A source layout -> canonical interactions (plus optional catalogue)."""

    name: str = Field(description="Mapping name (recorded in manifests).")
    description: str = ""
    catalog: CatalogSpec | None = None

    @model_validator(mode="after")
    def _canonical(self) -> Mapping:
        _check_names("interactions", self.columns, INTERACTION_COLUMNS, REQUIRED_COLUMNS)
        ts = self.columns["ts"]
        if ts.source is None or ts.unit is None:
            raise ValueError("column 'ts' must read a source field (`from:`) and declare its `unit` "
                             "(auto, timestamp, s, ms, us or ns): the window is pushed down on it")
        if self.catalog and self.catalog.items:
            _check_names("items", self.catalog.items.columns, tuple(ITEM_SCHEMA.names), ("item_id",))
        if self.catalog and self.catalog.users:
            _check_names("users", self.catalog.users.columns, tuple(USER_SCHEMA.names), ("user_id",))
        return self

    @property
    def ts_spec(self) -> FieldSpec:
        return self.columns["ts"]


def _check_names(what: str, columns: dict[str, Any], allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
    unknown = sorted(set(columns) - set(allowed))
    missing = [c for c in required if c not in columns]
    if unknown or missing:
        raise ValueError(f"{what} mapping: unknown canonical column(s) {unknown}, missing required {missing}; "
                         f"allowed: {list(allowed)}")


def mapping_path(name_or_path: str | Path) -> Path:
    """The YAML file for a shipped mapping name or an explicit path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".json") or path.is_file():
        return path
    return MAPPINGS_DIR / f"{name_or_path}.yaml"


def shipped_mappings() -> list[str]:
    """Names of the mappings shipped in ``sources/mappings``."""
    return sorted(p.stem for p in MAPPINGS_DIR.glob("*.yaml"))


def load_mapping(name_or_path: str | Path) -> tuple[Mapping, str]:
    """Load and validate a mapping.

    Args:
        name_or_path: a shipped mapping name (see :func:`shipped_mappings`) or a YAML/JSON path.

    Returns:
        The mapping and the sha256 of its canonical JSON form (its content hash).

    Raises:
        SourceError: (Reason.BAD_MAPPING) the file is missing, unparsable or invalid.
    """
    path = mapping_path(name_or_path)
    if not path.is_file():
        raise SourceError(f"mapping {str(name_or_path)!r} not found: expected a file or one of {shipped_mappings()}",
                          reason=Reason.BAD_MAPPING)
    try:
        raw = yaml.safe_load(path.read_text())
        mapping = Mapping.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as e:
        raise SourceError(f"mapping {str(path)!r} is invalid: {e}", reason=Reason.BAD_MAPPING) from e
    blob = json.dumps(mapping.model_dump(mode="json", by_alias=True), sort_keys=True).encode()
    return mapping, hashlib.sha256(blob).hexdigest()
