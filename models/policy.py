"""The policy tables' one interface, and the one list of model kinds.

Thompson (:class:`models.thompson.BetaTables`), LinUCB (:class:`models.linucb.LinUCB`) and the Q table
(:class:`models.qlearning.QTable`) each declare their kind, the JSON meta file that marks a saved
table, the verbs serving code may call and the settings section that holds their hyperparameters,
and save/load themselves (Parquet + JSON, no pickles). The registry (kinds, serving verbs, loading),
the pyfunc wrapper and the tables stage read these declarations instead of keeping their own maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol, Self, runtime_checkable

from models.linucb import LinUCB
from models.qlearning import QTable
from models.thompson import BetaTables


@runtime_checkable
class PolicyTable(Protocol):
    """What a policy table offers the registry, the loader and the tables stage."""

    kind: ClassVar[str]
    meta_file: ClassVar[str]
    verbs: ClassVar[tuple[str, ...]]
    settings_field: ClassVar[str]

    def save(self, directory: Path) -> Path:
        """Write the table's files into ``directory`` (atomically, file by file); returns it."""
        ...

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Read a table written by :meth:`save`."""
        ...

    @classmethod
    def load_for_refit(cls, directory: Path) -> Self:
        """Read a table written by :meth:`save` as a refit reads it: what the refit reads a piece at a time
        may stay in its file (not to be served)."""
        ...


POLICY_TABLES: dict[str, type[PolicyTable]] = {cls.kind: cls for cls in (BetaTables, LinUCB, QTable)}
"""Policy kind -> its class, in the order the tables stage fits and reports them."""

RANKER = "ranker"
MODEL_KINDS: tuple[str, ...] = (RANKER, *POLICY_TABLES)
"""Every kind the registry holds: the ranker, then the policy tables."""

RANKER_VERBS: tuple[str, ...] = ("predict",)


def serving_verbs(kind: str) -> tuple[str, ...]:
    """What serving code may call on a loaded model of ``kind``."""
    return RANKER_VERBS if kind == RANKER else POLICY_TABLES[kind].verbs


def load_policy_table(directory: Path, *, for_refit: bool = False) -> PolicyTable:
    """Load whichever policy table ``directory`` holds (told apart by its meta file); ``for_refit``: as a
    refit reads it (:meth:`PolicyTable.load_for_refit`)."""
    directory = Path(directory)
    for cls in POLICY_TABLES.values():
        if (directory / cls.meta_file).is_file():
            return cls.load_for_refit(directory) if for_refit else cls.load(directory)
    expected = sorted(cls.meta_file for cls in POLICY_TABLES.values())
    raise FileNotFoundError(f"{directory} holds no policy table; expected one of {expected}")
