"""What flows between the stages: what a query read, and what a commit wrote.

- ``ReadSet`` (capture -> index): the rows a query run depends on.
- ``RowChange`` and ``ChangeRecord`` (capture -> change log -> invalidator): what a commit wrote.
- ``value_text`` and ``encode_change`` (``encode_inserted_row``) / ``decode_change``: the one
  text form of values and of change records, shared by the log table, the in-memory index and
  Redis.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson

# The table name standing for "every table": what a raw SQL read whose tables are unknown reads.
ANY_TABLE = "*"
# The entry of ``ChangeRecord.revoked`` standing for "any sign-in": a write whose rows are unknown.
ANYONE = "*"

Conjunction = frozenset  # frozenset[tuple[str, Hashable]]
ANY_ROW: Conjunction = frozenset()


class ReadSet:
    """Tables read and, per table, the equality conjunctions that bound the rows read, and the
    columns the result depends on.

    ``columns`` maps a table to the columns whose values the result can depend on (selected,
    filtered, joined, grouped or ordered by); a table read but absent from ``columns`` depends on
    every column. An UPDATE that assigns none of a table's dependency columns leaves the result
    as it was, whatever rows it touches. Adding a table without columns (the default) makes it
    depend on every column, so a reader that can't name its columns widens, never narrows.
    """

    __slots__ = ("columns", "tables")

    def __init__(
        self,
        tables: dict[str, set[Conjunction]] | None = None,
        columns: dict[str, frozenset[str]] | None = None,
    ) -> None:
        self.tables: dict[str, set[Conjunction]] = tables if tables is not None else {}
        self.columns: dict[str, frozenset[str]] = columns if columns is not None else {}

    def add(
        self, table: str, conjunction: Conjunction = ANY_ROW, columns: Iterable[str] | None = None
    ) -> None:
        """Depend on the rows of ``table`` bound by ``conjunction``, through ``columns`` (None:
        every column)."""
        self._depend_on_columns(table, columns)
        conjunctions = self.tables.setdefault(table, set())
        if ANY_ROW in conjunctions:
            return
        if conjunction == ANY_ROW:
            conjunctions.clear()
        conjunctions.add(conjunction)

    def _depend_on_columns(self, table: str, columns: Iterable[str] | None) -> None:
        if columns is None:
            self.columns.pop(table, None)  # every column
        elif table not in self.tables:
            self.columns[table] = frozenset(columns)
        elif table in self.columns:
            self.columns[table] = self.columns[table].union(columns)
        # else: the table already depends on every column

    def add_table(self, table: str) -> None:
        """Depend on every row of ``table``, through every column."""
        self.add(table, ANY_ROW)

    def columns_of(self, table: str) -> frozenset[str] | None:
        """The columns of ``table`` the result depends on; None: every column."""
        return self.columns.get(table)

    def merge(self, other: ReadSet) -> None:
        for table, conjunctions in other.tables.items():
            columns = other.columns.get(table)
            for conjunction in conjunctions:
                self.add(table, conjunction, columns)

    def matches(self, table: str, row: dict[str, Hashable], changed: frozenset[str] | None = None) -> bool:
        """Whether a row of ``table`` (column -> canonical value) may change this read's result;
        ``changed``: the columns an UPDATE assigned (None: any column, or not an update).

        A missing column in ``row`` is treated as unknown, so it matches any value.
        """
        if ANY_TABLE in self.tables:
            return True
        conjunctions = self.tables.get(table, ())
        if not depends_on(self.columns.get(table), changed):
            return False
        return any(
            all(column not in row or row[column] == value for column, value in conjunction)
            for conjunction in conjunctions
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReadSet) and self.tables == other.tables and self.columns == other.columns

    def __repr__(self) -> str:
        return f"ReadSet({self.tables!r}, columns={self.columns!r})"


def depends_on(dependency_columns: frozenset[str] | None, changed: frozenset[str] | None) -> bool:
    """Whether a reader depending on ``dependency_columns`` of a table (None: every column) may
    see an UPDATE that assigned ``changed`` (None: unknown columns, an insert or a delete)."""
    return dependency_columns is None or changed is None or not dependency_columns.isdisjoint(changed)


# A row image: canonical values of the columns that were captured. A column missing from an
# image is unknown, and the matcher treats it as matching any value (it widens, never narrows).
RowImage = dict[str, Hashable]


class RowChange(NamedTuple):
    """One written row: its values before (``None`` for an insert) and after (``None`` for a delete).

    ``columns``, for an update, are the columns it assigned a possibly different value; ``None``
    (unknown, and always for an insert or a delete) stands for every column.

    A named tuple (immutable, as the record it goes into): one is made for every row written,
    and a tuple is the cheapest object Python makes.
    """

    table: str
    old: RowImage | None
    new: RowImage | None
    columns: frozenset[str] | None = None

    @property
    def changed_columns(self) -> frozenset[str] | None:
        """The columns an update changed; None for an insert, a delete or unknown columns."""
        if self.old is None or self.new is None:
            return None
        return self.columns


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
    kind = type(value)
    if kind is int:  # the most common first: keys and counts
        return f"i{value}"
    if kind is str:
        return "s" + value
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
    if image is None:
        return None
    text = {}
    for column, value in image.items():  # a loop: a comprehension is a call of its own (3.11)
        # value_text's most common case inline: the call would cost more than the work.
        text[column] = f"i{value}" if type(value) is int else value_text(value)
    return text


def encode_change(
    rows: Iterable[RowChange],
    opaque_tables: Iterable[str],
    revoked: Iterable[str] = (),
    origin: tuple[str, str] | None = None,
) -> str:
    """One commit's changes as the JSON text stored in the change log (images as value texts).

    The columns each updated row changed travel in ``"columns"``, a list beside ``"rows"`` (one
    entry per row, ``null`` for unknown), so a reader that predates them still reads the rows.
    """
    # One loop, no generators: this runs for every committed write.
    encoded = []
    columns = []
    any_columns = False
    for table, old, new, changed in rows:
        encoded.append(
            [table, None if old is None else image_text(old), None if new is None else image_text(new)]
        )
        if changed is None or old is None or new is None:  # RowChange.changed_columns
            columns.append(None)
        else:
            any_columns = True
            columns.append(sorted(changed))
    record: dict = {"rows": encoded, "opaque": sorted(opaque_tables) if opaque_tables else []}
    if any_columns:
        record["columns"] = columns
    if revoked:  # rare: most commits end no sign-in
        record["revoked"] = sorted(revoked)
    if origin is not None:
        record["origin"] = origin
    return orjson.dumps(record).decode()


def encode_inserted_row(table: str, new_text: dict[str, str], origin: tuple[str, str] | None) -> str:
    """``encode_change`` of a commit that inserted one row, its image already value texts (as
    ``image_text`` makes them): the record of ``Model.objects.create()``, the most common write,
    without a loop for its one row. An insert ends no sign-in (``capture/identities.py``)."""
    record: dict = {"rows": [[table, None, new_text]], "opaque": []}
    if origin is not None:
        record["origin"] = origin
    return orjson.dumps(record).decode()


def decode_change(version: int, text: str | bytes) -> ChangeRecord:
    """A change record read back from the log: its row images hold value texts. A row without
    its columns (all rows of a record written before they were recorded) changed every column."""
    data = orjson.loads(text)
    columns = data.get("columns") or [None] * len(data["rows"])
    rows = tuple(
        RowChange(table, old, new, None if changed is None else frozenset(changed))
        for (table, old, new), changed in zip(data["rows"], columns, strict=True)
    )
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
