"""What a commit changed: the unit that flows from the writer to the invalidator."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

# A row image: canonical values of the columns that were captured. A column missing from an
# image is unknown, and the matcher treats it as matching any value (it widens, never narrows).
RowImage = dict[str, Hashable]


@dataclass(frozen=True, slots=True)
class RowChange:
    """One written row: its values before (``None`` for an insert) and after (``None`` for a delete)."""

    table: str
    old: RowImage | None
    new: RowImage | None


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """Everything one commit wrote, with the commit's place in the change log.

    ``opaque_tables`` are tables written in a way whose rows are unknown (raw SQL, an upsert,
    a write to a table nobody watched at the time): every reader of them is affected.
    ``readsets.ANY_TABLE`` among them means every table.
    """

    version: int
    rows: tuple[RowChange, ...] = ()
    opaque_tables: frozenset[str] = field(default_factory=frozenset)
