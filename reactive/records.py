"""What flows between the stages: what a query read, and what a commit wrote.

- ``ReadSet`` (capture -> index): the rows a query run depends on.
- ``RowChange`` and ``ChangeRecord`` (capture -> change log -> invalidator): what a commit wrote.
- ``value_text`` and ``encode_change`` / ``decode_change``: the one text form of values and of
  change records, shared by the log table, the in-memory index and Redis.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

import orjson

# The table name standing for "every table": what a raw SQL read whose tables are unknown reads.
ANY_TABLE = "*"
# The entry of ``ChangeRecord.revoked`` standing for "any sign-in": a write whose rows are unknown.
ANYONE = "*"

Conjunction = frozenset  # frozenset[tuple[str, Hashable]]
ANY_ROW: Conjunction = frozenset()


class ReadSet:
    """Tables read and, per table, the equality conjunctions that bound the rows read."""

    __slots__ = ("tables",)

    def __init__(self, tables: dict[str, set[Conjunction]] | None = None) -> None:
        self.tables: dict[str, set[Conjunction]] = tables if tables is not None else {}

    def add(self, table: str, conjunction: Conjunction = ANY_ROW) -> None:
        conjunctions = self.tables.setdefault(table, set())
        if ANY_ROW in conjunctions:
            return
        if conjunction == ANY_ROW:
            conjunctions.clear()
        conjunctions.add(conjunction)

    def add_table(self, table: str) -> None:
        """Depend on every row of ``table``."""
        self.add(table, ANY_ROW)

    def merge(self, other: ReadSet) -> None:
        for table, conjunctions in other.tables.items():
            for conjunction in conjunctions:
                self.add(table, conjunction)

    def matches(self, table: str, row: dict[str, Hashable]) -> bool:
        """Whether a row of ``table`` (column -> canonical value) may change this read's result.

        A missing column in ``row`` is treated as unknown, so it matches any value.
        """
        if ANY_TABLE in self.tables:
            return True
        conjunctions = self.tables.get(table, ())
        return any(
            all(column not in row or row[column] == value for column, value in conjunction)
            for conjunction in conjunctions
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReadSet) and self.tables == other.tables

    def __repr__(self) -> str:
        return f"ReadSet({self.tables!r})"


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

    ``revoked`` names the sign-ins the commit may have ended or whose rights it may have changed
    (``capture/identities.py``): ``"user:<pk>"`` for a user row updated or deleted,
    ``"session:<key>"`` for a session deleted, ``ANYONE`` when it cannot tell whose.

    ``origin`` says where the commit came from, for the admin's dashboard: the process
    (``host:pid``) and what ran in it (``mutation chat.send_message``, ``admin``, ``shell``...).
    """

    version: int
    rows: tuple[RowChange, ...] = ()
    opaque_tables: frozenset[str] = field(default_factory=frozenset)
    revoked: frozenset[str] = field(default_factory=frozenset)
    origin: tuple[str, str] | None = None


# The text form ---------------------------------------------------------------------------------
# A change record is written to the log table by one process and read by others, so its values
# travel as text. Canonical values become typed text (``i5``, ``sabc``, ``~`` for NULL): two values
# are equal exactly when their texts are, whatever the type, so the index compares texts only.


def value_text(value: Hashable) -> str:
    """A canonical value as typed text, identical for reads (the index) and writes (row images)."""
    if value is None:
        return "~"
    if value is True or value is False:
        return "b1" if value else "b0"
    if isinstance(value, int):
        return f"i{value}"
    if isinstance(value, float):
        return f"f{value!r}"
    if isinstance(value, str):
        return "s" + value
    if isinstance(value, bytes):
        return "x" + value.hex()
    if isinstance(value, tuple):
        return "t(" + ",".join(value_text(item) for item in value) + ")"
    return "r" + repr(value)


def image_text(image: RowImage | None) -> dict[str, str] | None:
    return None if image is None else {column: value_text(value) for column, value in image.items()}


def encode_change(
    rows: Iterable[RowChange],
    opaque_tables: Iterable[str],
    revoked: Iterable[str] = (),
    origin: tuple[str, str] | None = None,
) -> str:
    """One commit's changes as the JSON text stored in the change log (images as value texts)."""
    record: dict = {
        "rows": [[row.table, image_text(row.old), image_text(row.new)] for row in rows],
        "opaque": sorted(opaque_tables),
    }
    if revoked:  # rare: most commits end no sign-in
        record["revoked"] = sorted(revoked)
    if origin is not None:
        record["origin"] = origin
    return orjson.dumps(record).decode()


def decode_change(version: int, text: str | bytes) -> ChangeRecord:
    """A change record read back from the log: its row images hold value texts."""
    data = orjson.loads(text)
    rows = tuple(RowChange(table, old, new) for table, old, new in data["rows"])
    origin = data.get("origin")
    return ChangeRecord(
        version,
        rows,
        frozenset(data["opaque"]),
        frozenset(data.get("revoked", ())),
        tuple(origin) if origin else None,
    )


# What a pruned stretch of the log is replaced by: every table changed.
EVERYTHING_CHANGED = encode_change((), (ANY_TABLE,), (ANYONE,))
