"""Declarative mappings from a source's layout to the canonical schema (``core.schema``).

A mapping is a YAML file (see ``docs/sources.md``): the table, collection or SQL query, then one
entry per canonical column saying where its values come from (a column, a dotted JSON/nested path,
a constant, the first non-null of several, several joined into one) and how to convert them (value
lookups, comparisons, scale/offset/clamp, timestamp units). Row filters, extra columns carried into
the snapshot, and a union of several tables or collections complete it. Shipped mappings live
beside this module in ``mappings/``.

Names that reach SQL are checked here: table and column names must be printable text (they are
quoted by the database's rules when used), JSON path segments letters, digits, ``_`` and ``-``.
Values (lookups, comparisons, filters) never reach SQL: they are applied to the fetched Arrow data.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from core.errors import Reason, SourceError
from core.schema import INTERACTION_COLUMNS, ITEM_SCHEMA, REQUIRED_COLUMNS, SOURCE_ERRORS, USER_SCHEMA

MAPPINGS_DIR = Path(__file__).parent / "mappings"
TimeUnit = Literal["auto", "timestamp", "s", "ms", "us", "ns"]
ExtraType = Literal["string", "float", "int", "bool", "timestamp"]
Scalar = str | float | int | bool | None

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PATH_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_EXTRA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MAX_IDENTIFIER = 128
# A text timestamp layout is compared as text at the source, so it must sort like time:
# year, month, day, then optionally hour, minute, second and fraction, with fixed separators.
_TEXT_LAYOUT = re.compile(r"^%Y[-/._]?%m[-/._]?%d(?:[ T_]?%H[:._]?%M(?:[:._]?%S(?:\.%f)?)?)?$")
_PLACEHOLDER = re.compile(r"(?<![:\w]):(start|end)\b")


def check_identifier(name: str, what: str) -> str:
    """A table or column name: printable, non-empty, at most 128 characters (quoting does the rest)."""
    if not name or len(name) > MAX_IDENTIFIER or _CONTROL.search(name) or name != name.strip():
        raise ValueError(f"{what} {name!r} must be 1-{MAX_IDENTIFIER} printable characters without "
                         f"surrounding spaces")
    return name


def split_source(source: str) -> tuple[str, list[str]]:
    """``column.path.inside`` -> (column, [path, inside]), every part checked."""
    column, *path = source.split(".")
    check_identifier(column, "column")
    bad = [p for p in path if not _PATH_SEGMENT.match(p)]
    if bad:
        raise ValueError(f"JSON path {source!r}: segment(s) {bad} may hold only letters, digits, '_' and '-' "
                         f"(and start with a letter or '_'); read other keys with a `query:`")
    return column, path


class Condition(BaseModel):
    """Tests on one value; every test given must hold. Numbers compare numerically (text is parsed),
    strings as text; ``in``/``not_in`` and ``eq``/``ne`` compare the value's text form."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    eq: Scalar = Field(default=None, description="Equal to.")
    ne: Scalar = Field(default=None, description="Not equal to (a null value passes).")
    gt: float | str | None = Field(default=None, description="Greater than.")
    ge: float | str | None = Field(default=None, description="Greater than or equal to.")
    lt: float | str | None = Field(default=None, description="Less than.")
    le: float | str | None = Field(default=None, description="Less than or equal to.")
    between: tuple[float, float] | None = Field(default=None, description="Inclusive range [low, high].")
    in_: list[Scalar] | None = Field(default=None, alias="in", description="One of these values.")
    not_in: list[Scalar] | None = Field(default=None, description="None of these values (null values pass).")
    is_null: bool | None = Field(default=None, description="true: the value is null; false: it is present.")

    def tests(self) -> dict[str, Any]:
        """The tests given, by name (``in`` for ``in_``)."""
        names = [n for n in type(self).model_fields if n in self.model_fields_set and n not in ("then", "source")]
        return {("in" if n == "in_" else n): getattr(self, n) for n in names}

    @model_validator(mode="after")
    def _some_test(self) -> Condition:
        if not self.tests():
            raise ValueError("a condition needs at least one of eq, ne, gt, ge, lt, le, between, in, not_in, is_null")
        return self


class Case(Condition):
    """``{ge: 4, then: like}``: a value passing the tests becomes ``then`` (the first matching case wins)."""

    then: Scalar = Field(description="What a matching value becomes.")


class RowFilter(Condition):
    """``{from: status, ne: deleted}``: rows whose source field fails the tests are not extracted."""

    source: str = Field(alias="from", description="Source column or JSON path the tests read.")

    @field_validator("source")
    @classmethod
    def _source_ok(cls, value: str) -> str:
        split_source(value)
        return value


class FieldSpec(BaseModel):
    """Where one column comes from and how its values are converted."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str | None = Field(default=None, alias="from", description="Column, or column.path.into.json / nested field.")
    const: Scalar = Field(default=None, description="A constant for every row.")
    coalesce: list[FieldSpec] | None = Field(default=None, description="First non-null of these specs.")
    concat: list[FieldSpec] | None = Field(default=None, description="Text of these specs joined by `sep` "
                                           "(composite ids); null when any part is null.")
    sep: str = Field(default=":", description="Separator of `concat`.")
    values: dict[str, Scalar] | None = Field(default=None, validation_alias=AliasChoices("values", "lookup"),
                                             description="Lookup table, e.g. CART_ADD: cart_add (also `lookup:`).")
    cases: list[Case] | None = Field(default=None, description="Comparisons in order, e.g. {ge: 4, then: like}.")
    unmapped: Literal["keep", "null"] = Field(default="keep", description="What a value matched by no lookup key or "
                                                                          "case becomes (unless `otherwise`).")
    otherwise: Scalar = Field(default=None, description="What a value matched by no lookup key or case becomes.")
    case_insensitive: bool = Field(default=False, description="Match `values` keys ignoring case.")
    scale: float | None = Field(default=None, description="Multiply numbers (ms -> s: 0.001, fraction -> percent: 100).")
    offset: float | None = Field(default=None, description="Add after scaling (1-based -> 0-based position: -1).")
    clamp: tuple[float | None, float | None] | None = Field(default=None, description="[low, high] limits applied "
                                                            "after scale/offset (null: unbounded).")
    unit: TimeUnit | None = Field(default=None, description="Timestamps: native `timestamp` (or ISO text), epoch "
                                  "`s`/`ms`/`us`/`ns` numbers, or `auto` (epoch us in SQLite, native elsewhere).")
    format: str | None = Field(default=None, description="Timestamps stored as text: their strftime layout "
                               "(default ISO 8601, `YYYY-MM-DD HH:MM:SS[.ffffff]`, naive = UTC).")
    json_text: bool = Field(default=False, alias="json", description="The value is JSON text to parse (lists, e.g. embeddings).")

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        origins = [k for k in ("source", "const", "coalesce", "concat") if k in self.model_fields_set]
        if len(origins) != 1:
            raise ValueError(f"a column spec needs exactly one of from/const/coalesce/concat, got {origins or 'none'}")
        if self.source is not None:
            split_source(self.source)
        if self.values is not None and self.cases is not None:
            raise ValueError("give either `values` (a lookup) or `cases` (comparisons), not both")
        if self.format is not None and not _TEXT_LAYOUT.match(self.format):
            raise ValueError(f"format {self.format!r}: a text timestamp layout must run year, month, day[, hour, "
                             f"minute[, second[.%f]]] with fixed separators (e.g. '%Y-%m-%d %H:%M:%S') so that text "
                             f"order is time order; convert other layouts in a `query:`")
        return self

    @property
    def has_const(self) -> bool:
        return "const" in self.model_fields_set

    def members(self) -> list[FieldSpec]:
        """The specs of a coalesce or concat (empty for a leaf or constant)."""
        return list(self.coalesce or self.concat or [])

    def leaves(self) -> list[FieldSpec]:
        """The specs that read a source field (this one, or the members' leaves)."""
        if self.members():
            return [leaf for spec in self.members() for leaf in spec.leaves()]
        return [self] if self.source is not None else []


class ExtraSpec(FieldSpec):
    """An extra source column carried into the snapshot under its own name."""

    type: ExtraType = Field(default="string", description="Arrow type of the extra column.")


class TableSpec(BaseModel):
    """One table, collection or query, its column specs, row filters and extra columns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str | None = Field(default=None, description="SQL table or view (`schema.table` too), or a Parquet path.")
    collection: str | None = Field(default=None, description="MongoDB collection to read.")
    query: str | None = Field(default=None, description="SQL sources: a SELECT with :start and :end (the window "
                              "bounds, bound in the encoding of `ts`), for what the declarative form cannot say.")
    columns: dict[str, FieldSpec] = Field(default_factory=dict, description="Canonical column -> spec.")
    filter: list[RowFilter] = Field(default_factory=list, description="Rows must pass every filter.")
    extra: dict[str, ExtraSpec] = Field(default_factory=dict, description="Extra snapshot column -> spec.")

    @field_validator("table", "collection")
    @classmethod
    def _name_ok(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value, "table/collection name")

    @field_validator("query")
    @classmethod
    def _query_ok(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip().rstrip(";").strip()
        if re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", text) or ";" in _strip_quoted(text):
            raise ValueError("`query:` must be one SELECT statement (no ';' between statements, no control characters)")
        return text

    @field_validator("extra")
    @classmethod
    def _extra_names(cls, value: dict[str, ExtraSpec]) -> dict[str, ExtraSpec]:
        bad = [n for n in value if not _EXTRA_NAME.match(n) or n in INTERACTION_COLUMNS or n == SOURCE_ERRORS]
        if bad:
            raise ValueError(f"extra column name(s) {bad}: use lower-case letters, digits and '_' (at most 63), not a "
                             f"canonical column name nor {SOURCE_ERRORS!r}")
        return value

    @property
    def relation(self) -> str | None:
        return self.table or self.collection

    def origins(self) -> list[str]:
        return [k for k in ("table", "collection", "query") if getattr(self, k) is not None]


def _strip_quoted(sql: str) -> str:
    """``sql`` without its quoted strings and identifiers (a ';' inside them is harmless)."""
    return re.sub(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`(?:[^`]|``)*`", "", sql)


class CatalogSpec(BaseModel):
    """Optional catalogue tables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    items: TableSpec | None = None
    users: TableSpec | None = None


class Mapping(TableSpec):
    """A source layout -> canonical interactions (plus optional catalogue).

    With ``union:``, each part names its table/collection/query and may override columns, extra
    columns and add filters; the top-level ``columns``/``extra``/``filter`` apply to every part.
    """

    name: str = Field(description="Mapping name (recorded in manifests).")
    description: str = ""
    union: list[TableSpec] | None = Field(default=None, description="Parts read one after another into one log.")
    catalog: CatalogSpec | None = None

    @model_validator(mode="after")
    def _canonical(self) -> Mapping:
        if self.union is not None and (self.origins() or not self.union):
            raise ValueError("with `union:`, the table/collection/query go in its parts (and it lists at least one)")
        if len(self.origins()) > 1:
            raise ValueError(f"give one of table/collection/query, got {self.origins()}")
        for i, part in enumerate(self.parts()):
            where = f"union part {i + 1}" if self.union is not None else "interactions"
            if self.union is not None and len(part.origins()) != 1:
                raise ValueError(f"{where}: give exactly one of table/collection/query, got {part.origins() or 'none'}")
            _check_names(where, part.columns, INTERACTION_COLUMNS, REQUIRED_COLUMNS)
            ts = part.columns["ts"]
            if ts.source is None or ts.unit is None:
                raise ValueError(f"{where}: column 'ts' must read a source field (`from:`) and declare its `unit` "
                                 "(auto, timestamp, s, ms, us or ns): the window is pushed down on it")
            if part.query is not None and not {m.group(1) for m in _PLACEHOLDER.finditer(part.query)} >= {"start", "end"}:
                raise ValueError(f"{where}: `query:` must use both :start and :end (the window bounds)")
        if self.catalog and self.catalog.items:
            _check_names("items", self.catalog.items.columns, tuple(ITEM_SCHEMA.names), ("item_id",))
        if self.catalog and self.catalog.users:
            _check_names("users", self.catalog.users.columns, tuple(USER_SCHEMA.names), ("user_id",))
        return self

    def parts(self) -> list[TableSpec]:
        """The tables read, each with the shared columns, filters and extra columns merged in."""
        if self.union is None:
            return [TableSpec(table=self.table, collection=self.collection, query=self.query, columns=self.columns,
                              filter=self.filter, extra=self.extra)]
        return [part.model_copy(update={"columns": {**self.columns, **part.columns},
                                        "filter": [*self.filter, *part.filter], "extra": {**self.extra, **part.extra}})
                for part in self.union]

    def extra_types(self) -> dict[str, ExtraType]:
        """Extra column -> type over every part (a part without one writes nulls).

        Raises:
            ValueError: two parts declare one extra column with different types.
        """
        found: dict[str, ExtraType] = {}
        for part in self.parts():
            for name, spec in part.extra.items():
                if found.setdefault(name, spec.type) != spec.type:
                    raise ValueError(f"extra column {name!r} is {found[name]} in one part and {spec.type} in another")
        return found

    @property
    def ts_spec(self) -> FieldSpec:
        return self.parts()[0].columns["ts"]


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
        raise SourceError(f"mapping {str(name_or_path)!r} not found", reason=Reason.BAD_MAPPING,
                          hint=f"name a shipped mapping ({', '.join(shipped_mappings())}) or give the path of a mapping "
                               f"YAML file (docs/sources.md shows how to write one)")
    try:
        raw = yaml.safe_load(path.read_text())
        mapping = Mapping.model_validate(raw)
        mapping.extra_types()
    except (yaml.YAMLError, ValidationError, ValueError) as e:
        raise SourceError(f"mapping {str(path)!r} is invalid: {e}", reason=Reason.BAD_MAPPING) from e
    blob = json.dumps(mapping.model_dump(mode="json", by_alias=True), sort_keys=True).encode()
    return mapping, hashlib.sha256(blob).hexdigest()


def placeholders(query: str) -> list[tuple[int, int, str]]:
    """``(start, end, "start"|"end")`` spans of the window placeholders in a ``query:``."""
    return [(m.start(), m.end(), m.group(1)) for m in _PLACEHOLDER.finditer(query)]
