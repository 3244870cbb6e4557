"""Every touch of Django's internals, in one place, applied once (after django-cachalot).

- ``SQLCompiler.execute_sql``: after a SELECT, add its read set to the running query's tracker.
- ``SQLInsertCompiler`` / ``SQLUpdateCompiler`` / ``SQLDeleteCompiler.execute_sql``: every ORM
  write ends here (``save``, ``update``, ``bulk_*``, cascades, ``SET_NULL``, many-to-many
  managers), signals or not. Updates and deletes first read the old values of the affected
  rows, limited to the columns live queries constrain, so a row leaving a result is seen (and
  the primary keys of updated users and deleted sessions, which may end a sign-in).
- ``CursorWrapper.execute`` / ``executemany`` / ``callproc``: SQL that bypassed the compilers
  (``cursor.execute``, ``.raw()``) is a read, or a write of every table it names.
- ``BaseDatabaseWrapper.savepoint_rollback`` / ``rollback`` / ``close``: drop the writes of a
  rolled-back savepoint or transaction. ``commit``: append the transaction's change record to the
  log table at the last moment before COMMIT, in the same transaction (``commits.py``).
- A write made in autocommit mode (``Model.save()``, ``QuerySet.update()`` outside ``atomic``,
  ``cursor.execute``) runs in a transaction of its own, so that its change record commits with it.
- ``connection.transaction_mode`` (SQLite): the invalidator's snapshots begin as readers.

``install()`` applies them once; ``uninstall()`` puts Django's own methods back.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext, suppress
from functools import cache, partial, wraps
from typing import Any

from django.core.exceptions import EmptyResultSet, FullResultSet
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.db.models import JSONField
from django.db.models.constants import OnConflict
from django.db.models.expressions import Col
from django.db.models.fields import AutoFieldMixin
from django.db.models.lookups import Exact
from django.db.models.sql import compiler as sql_compiler
from django.db.models.sql.constants import MULTI, NO_RESULTS, ROW_COUNT
from django.db.models.sql.query import Query

from ..records import ANY_TABLE, RowChange, encode_inserted_row, value_text
from . import commits, logtable, origin, tracking
from .readsets import (
    PLAIN_TYPES,
    canonical_value,
    plain_value_type,
    read_set_of_raw_sql,
    usable_value,
    value_field,
)


class _Local(threading.local):
    depth = 0  # compiler calls in progress (their SQL is not raw SQL)
    last_sql: Any = None  # the last statement a cursor ran, for the running compiler's read set
    begin_with: Any = None  # the connection whose own transaction's BEGIN rides with its next statement
    # The own transaction whose record and COMMIT ride with that statement too (Postgres).
    finish_with: _PostgresOwnTransaction | None = None


_local = _Local()
# (owner, attribute, Django's original) of every patch applied, for uninstall().
_originals: list[tuple[type, str, Any]] = []

_WRITE_COMPILERS = (
    sql_compiler.SQLInsertCompiler,
    sql_compiler.SQLUpdateCompiler,
    sql_compiler.SQLDeleteCompiler,
)
# Chunk size for "WHERE pk IN (...)" re-reads: under SQLite's 999-parameter floor.
_PK_CHUNK = 500


def install() -> None:
    """Apply every patch (idempotent)."""
    if _originals:
        return
    _patch(sql_compiler.SQLCompiler, "execute_sql", _wrap_read)
    _patch(sql_compiler.SQLInsertCompiler, "execute_sql", _wrap_insert)
    _patch(sql_compiler.SQLUpdateCompiler, "execute_sql", _wrap_update)
    _patch(sql_compiler.SQLDeleteCompiler, "execute_sql", _wrap_delete)
    _patch(CursorWrapper, "execute", _wrap_cursor)
    _patch(CursorWrapper, "executemany", _wrap_cursor)
    _patch(CursorWrapper, "callproc", _wrap_callproc)
    _patch(BaseDatabaseWrapper, "savepoint_rollback", _wrap_savepoint_rollback)
    _patch(BaseDatabaseWrapper, "commit", _wrap_commit)
    _patch(BaseDatabaseWrapper, "rollback", _wrap_rollback)
    _patch(BaseDatabaseWrapper, "close", _wrap_close)


def uninstall() -> None:
    """Put back Django's own methods, newest patch first."""
    while _originals:
        owner, attribute, original = _originals.pop()
        if original is _INHERITED:
            delattr(owner, attribute)
        else:
            setattr(owner, attribute, original)


def installed() -> bool:
    return bool(_originals)


_INHERITED = object()  # the class had no method of its own (SQLDeleteCompiler.execute_sql)


def _patch(owner: type, attribute: str, wrap) -> None:
    _originals.append((owner, attribute, owner.__dict__.get(attribute, _INHERITED)))
    setattr(owner, attribute, wrap(getattr(owner, attribute)))


class _InCompiler:
    """Marks SQL issued by a compiler, so the cursor patch leaves it alone."""

    def __enter__(self) -> None:
        _local.depth += 1

    def __exit__(self, *exc: object) -> None:
        _local.depth -= 1


_in_compiler = _InCompiler()


# Reads ---------------------------------------------------------------------------------------


def _wrap_read(original):
    @wraps(original)
    def execute_sql(self, *args: Any, **kwargs: Any) -> Any:
        if isinstance(self, _WRITE_COMPILERS):
            # SQLUpdateCompiler's super() call; its own wrapper does the work.
            return original(self, *args, **kwargs)
        _local.last_sql = None
        with _in_compiler:
            try:
                return original(self, *args, **kwargs)
            finally:
                tracking.record_compiled_read(self, _local.last_sql)

    return execute_sql


# Writes --------------------------------------------------------------------------------------


def _own_transaction(connection, tables: Iterable[str]) -> AbstractContextManager:
    """A transaction around a tracked write made in autocommit mode: the write and its change
    record (appended just before COMMIT) then commit together, or not at all."""
    if connection.in_atomic_block:
        return _NO_TRANSACTION
    for table in tables:  # a loop, not any(): this runs for every write
        if commits.tracks(table):
            break
    else:
        return _NO_TRANSACTION
    # get_autocommit() connects first; once connected, its answer is the attribute.
    if not (connection.autocommit if connection.connection is not None else connection.get_autocommit()):
        return _NO_TRANSACTION  # a transaction managed by hand: its commit() appends the record
    pending = commits.pending_commit(connection)
    if pending.own:
        return _NO_TRANSACTION  # a write inside the one being wrapped (an update's related updates)
    if connection.vendor == "postgresql" and not connection.settings_dict["OPTIONS"].get(
        "server_side_binding"
    ):
        return _PostgresOwnTransaction(connection, pending)
    return _OwnTransaction(connection, pending)


_NO_TRANSACTION = nullcontext()


class _OwnTransaction:
    """BEGIN, the write, the change record, COMMIT, straight on the DB-API connection.

    ``transaction.atomic()`` would turn autocommit off and on again and keep savepoint and
    on-commit bookkeeping that one statement does not need. Django stays in autocommit mode
    throughout: the write runs as it would without ``reactive``, only inside a transaction that
    ``commits`` knows is open (``PendingCommit.own``). Errors of the capture's own statements
    become Django's (``wrap_database_errors``) where they happen, not around every statement.
    """

    __slots__ = ("connection", "cursor", "pending")

    # Whether the BEGIN is still to send, with the write's statement (Postgres).
    statement_carries_begin = False
    # Whether the write's statement committed the transaction (and recorded its change).
    committed = False

    def __init__(self, connection, pending: commits.PendingCommit) -> None:
        self.connection = connection
        self.pending = pending

    def __enter__(self) -> _OwnTransaction:
        connection = self.connection
        self.pending.own = True
        mode = getattr(connection, "transaction_mode", None)  # SQLite: IMMEDIATE takes the lock now
        self.cursor = cursor = logtable.capture_cursor(connection)
        try:
            cursor.execute(f"BEGIN {mode}" if mode else "BEGIN")
        except BaseException:
            self.pending.clear()
            with connection.wrap_database_errors:
                raise
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            self._rollback()
            return
        self._finish()

    def run_alone(self, run: Callable[[], Any], record: _Record, changes: _ChangesOf) -> Any:
        """``run()`` a write that is the whole of this transaction, then commit it with its
        change record, ``record(result)``, encoded (``changes(result)``: its rows and tables,
        should a write inside it have been buffered after all; none is).

        What ``with self:`` around the write and ``commits.record`` do, without the transaction's
        buffer: for the writes that come here (one row inserted, a table no query watches updated
        or deleted from: ``Model.objects.create()``, most writes) the record is all one write's,
        so it goes straight to the log. The tables are ones ``commits.tracks``.
        """
        self.__enter__()
        _local.depth += 1  # the compiler's SQL (``_in_compiler``, inline)
        try:
            result = run()
        except BaseException:
            self._rollback()
            raise
        finally:
            _local.depth -= 1
        self._finish(result, record, changes)
        return result

    def _finish(
        self, result: Any = None, record: _Record | None = None, changes: _ChangesOf | None = None
    ) -> None:
        """Append the change record and COMMIT; on failure roll back, and raise Django's error.
        The record is the buffered writes', or ``record(result)``, that of the one write that is
        the whole transaction."""
        connection = self.connection
        pending = self.pending
        try:
            if record is None:
                encoded = pending.encoded()
            elif pending.parts:  # a write inside it recorded itself: one record of them all
                commits.record(connection, *changes(result))
                encoded = pending.encoded()
            else:
                encoded = record(result)
            version = self._commit(encoded)
        except BaseException:
            self._rollback()
            with connection.wrap_database_errors:
                raise
        commits.committed(connection, version)

    def _commit(self, record: str | None) -> int | None:
        """Append ``record`` (unless None) and COMMIT, straight on the DB-API connection (none of
        this is a write to capture); the record's version."""
        return logtable.append_and_commit(self.connection, record, self.cursor)

    def _rollback(self) -> None:
        """Undo the write; the error that got here is the one worth raising, not the ROLLBACK's
        on a connection that broke meanwhile."""
        self.pending.clear()
        connection = self.connection
        raw = connection.connection
        if raw is not None and _in_transaction(connection):
            with suppress(Exception), connection.wrap_database_errors:
                raw.execute("ROLLBACK")


# What one write changed: its rows, and the tables it wrote without rows.
_Changes = tuple[list[RowChange], frozenset[str]]
_NO_TABLES: frozenset[str] = frozenset()
# A write alone's change record, encoded, and its changes, from what the write returned.
_Record = Callable[[Any], str]
_ChangesOf = Callable[[Any], _Changes]


class _PostgresOwnTransaction(_OwnTransaction):
    """Postgres counts round trips. The BEGIN rides with the write's first statement (``"BEGIN; "``
    before its SQL, where Django binds parameters on the client, its default). Where the write's
    change is known before it runs (``record_with_statement``: an insert of one row, an update or
    delete of a table no query watches), the record and the COMMIT ride with it too: one round
    trip, as the write alone. Otherwise the record goes with the COMMIT
    (``logtable.append_and_commit``): two round trips.
    """

    __slots__ = ("changes", "inserted_key", "version")

    def __init__(self, connection, pending: commits.PendingCommit) -> None:
        super().__init__(connection, pending)
        self.changes: Callable[[], tuple[list[RowChange], set[str]]] | None = None
        self.inserted_key: tuple[str, str] | None = None
        self.version: int | None = None  # set once committed with the statement

    def __enter__(self) -> _PostgresOwnTransaction:
        self.pending.own = True
        _local.begin_with = self.connection  # sent with the next statement (_execute)
        return self

    def record_with_statement(
        self,
        changes: Callable[[], tuple[list[RowChange], set[str]]],
        inserted_key: tuple[str, str] | None = None,
    ) -> None:
        """The write's change is ``changes()`` (rows, opaque tables), known once its statement is
        compiled: record it then, and send the record and the COMMIT with the statement. Only
        while the BEGIN is still to send with it (``statement_carries_begin``).
        ``inserted_key``: (table, column) of the key the database gives the one row inserted,
        filled into the record by the database."""
        self.changes = changes
        self.inserted_key = inserted_key
        _local.finish_with = self

    @property
    def statement_carries_begin(self) -> bool:
        return _local.begin_with is self.connection

    @property
    def committed(self) -> bool:
        return self.version is not None

    def execute_and_commit(self, original, cursor, sql: str, args, kwargs) -> Any:
        """Run the write's ``sql`` with the BEGIN, the change record and the COMMIT around it, in
        one string; leave the cursor on the write's own result."""
        connection = self.connection
        rows, opaque = self.changes()
        commits.record(connection, rows, opaque)
        changes = self.pending.encoded()
        if changes is None:  # nothing to record after all
            return _execute_after_begin(original, cursor, sql, args, kwargs)
        params = args[0] if args else kwargs.get("params")
        before, after = logtable.around_statement(connection, changes, self.inserted_key)
        if params is not None:  # the string is formatted with the parameters: keep its "%" signs
            before, after = before.replace("%", "%%"), after.replace("%", "%%")
        result = original(cursor, f"{before}; {sql}; {after}", *args, **kwargs)
        results = cursor.cursor
        results.nextset()  # past the BEGIN, to the transaction's id
        self.version = logtable.version_of(results.fetchone()[0])
        results.nextset()  # to the statement's own result: its rows, its rowcount
        return result

    def __exit__(self, exc_type, exc, traceback) -> None:
        if _local.finish_with is self:
            _local.finish_with = None
        if self.committed:  # with the statement, whatever came after it
            commits.committed(self.connection, self.version)
            return
        super().__exit__(exc_type, exc, traceback)

    def _commit(self, record: str | None) -> int | None:
        _begin_now(self.connection)  # if no statement took it
        return logtable.append_and_commit(self.connection, record)

    def _rollback(self) -> None:
        _local.begin_with = None
        super()._rollback()


def _begin_now(connection) -> None:
    """Send the deferred BEGIN of ``connection``'s own transaction, if it is still to send."""
    if _local.begin_with is connection:
        _local.begin_with = None
        with connection.wrap_database_errors:
            connection.connection.execute("BEGIN")


def _execute(original, cursor, sql, args, kwargs) -> Any:
    """``cursor.execute(sql, ...)``, with the deferred BEGIN of an own transaction in front (and
    its record and COMMIT after it, when known already)."""
    if _local.begin_with is not cursor.db:
        return original(cursor, sql, *args, **kwargs)
    from psycopg import ClientCursor

    finish, _local.finish_with = _local.finish_with, None
    if (
        original.__name__ != "execute"
        or not isinstance(sql, str)
        or not isinstance(cursor.cursor, ClientCursor)
    ):
        _begin_now(cursor.db)
        return original(cursor, sql, *args, **kwargs)
    _local.begin_with = None
    if finish is not None and finish.connection is cursor.db and _WRITE.match(sql):
        return finish.execute_and_commit(original, cursor, sql, args, kwargs)
    return _execute_after_begin(original, cursor, sql, args, kwargs)


def _execute_after_begin(original, cursor, sql: str, args, kwargs) -> Any:
    result = original(cursor, f"BEGIN; {sql}", *args, **kwargs)
    cursor.cursor.nextset()  # to the statement's own result: its rows, its rowcount
    return result


def _in_transaction(connection) -> bool:
    raw = connection.connection
    if connection.vendor == "postgresql":
        return raw.info.transaction_status != 0  # psycopg's IDLE: no transaction open
    return getattr(raw, "in_transaction", True)


def _wrap_insert(original):
    @wraps(original)
    def execute_sql(self, returning_fields=None):
        tracking.forbid_write()
        table = self.query.get_meta().db_table
        transaction = _own_transaction(self.connection, (table,))
        if (
            type(transaction) is _OwnTransaction
            and len(self.query.objs) == 1
            and self.query.on_conflict is None
        ):
            return transaction.run_alone(
                partial(original, self, returning_fields),
                partial(_inserted_record, self, returning_fields),
                partial(_inserted_changes, self, returning_fields),
            )
        with transaction as own:
            if (
                own is not None
                and own.statement_carries_begin
                and self.query.on_conflict is None
                and len(self.query.objs) == 1
            ):
                _record_insert_with_statement(own, self, returning_fields)
            with _in_compiler:
                returned = original(self, returning_fields)
            if own is not None and own.committed:
                return returned  # recorded and committed with the statement
            if self.query.on_conflict == OnConflict.UPDATE:
                # An upsert changes rows we did not read: every reader of the table is affected.
                commits.record(self.connection, [], {table})
            else:
                # With ignore_conflicts (many-to-many add), rows that already existed are reported
                # as inserted too: that only widens.
                commits.record(self.connection, _inserted_rows(self, returning_fields, returned))
        return returned

    return execute_sql


def _record_insert_with_statement(own: _PostgresOwnTransaction, compiler, returning_fields) -> None:
    """One row inserted in a transaction of its own: its image is known once the statement is
    compiled (``pre_save`` has run), but for the key the database gives it, which the database
    fills into the record itself."""
    meta = compiler.query.get_meta()
    if any(field is not meta.pk for field in returning_fields or ()):
        return  # other values the database gives: recorded once returned
    obj = compiler.query.objs[0]

    def changes() -> tuple[list[RowChange], set[str]]:
        return _inserted_rows(compiler, None, None), set()

    key_given = getattr(obj, meta.pk.attname, None) is not None
    if key_given or isinstance(meta.pk, AutoFieldMixin):
        own.record_with_statement(changes, None if key_given else (meta.db_table, meta.pk.column))


def _inserted_rows(compiler, returning_fields, returned) -> list[RowChange]:
    """The rows an INSERT wrote: the values it set, and those the database returned (its key)."""
    query = compiler.query
    meta = query.model._meta
    table = meta.db_table
    returned_rows = returned if type(returned) is list else ()
    rows = []
    for index, obj in enumerate(query.objs):
        returned_row = returned_rows[index] if index < len(returned_rows) else None
        image = _inserted_image(meta, query.fields, obj, returning_fields, returned_row, False)
        rows.append(RowChange(table, None, image))
    return rows


def _inserted_changes(compiler, returning_fields, returned) -> _Changes:
    return _inserted_rows(compiler, returning_fields, returned), _NO_TABLES


def _inserted_record(compiler, returning_fields, returned) -> str:
    """The change record of the one row of an INSERT in a transaction of its own: its image
    made text as it is read, then encoded without another pass over it."""
    query = compiler.query
    meta = query.model._meta
    returned_row = returned[0] if type(returned) is list and returned else None
    image = _inserted_image(meta, query.fields, query.objs[0], returning_fields, returned_row, True)
    table = meta.db_table
    return encode_inserted_row(table, image, origin.current((), (table,)))


def _inserted_image(meta, fields, obj, returning_fields, returned_row, as_text: bool) -> dict:
    """The image of a row an INSERT wrote: the values it set (every field it sets is concrete:
    it names the field's column), and those the database returned (``returned_row``: its key).
    ``as_text``: each value's text (``records.value_text``, as ``image_text`` makes them)."""
    image = {}
    for field in fields:  # no list of (field, plain type) first: most inserts are of one row
        try:
            plain = field.reactive_plain_type  # plain_value_type(field), once known
        except AttributeError:
            plain = plain_value_type(field)
        value = getattr(obj, field.attname, None)
        # canonical_value's own shortcut first, without a call per value.
        if type(value) is not plain and (value is not None or plain is None):
            if type(value) not in PLAIN_TYPES and hasattr(value, "resolve_expression"):
                continue  # an expression's value (a database default's) stays unknown
            value = canonical_value(field, value)
        if as_text:  # value_text's most common case inline
            value = f"i{value}" if type(value) is int else value_text(value)
        image[field.column] = value
    if returned_row is not None:
        for field, value in zip(returning_fields, returned_row, strict=False):
            value = canonical_value(field, value)
            image[field.column] = value_text(value) if as_text else value
    else:
        pk = meta.pk
        if pk.column not in image and getattr(obj, pk.attname, None) is not None:
            value = canonical_value(pk, getattr(obj, pk.attname))
            image[pk.column] = value_text(value) if as_text else value
    return image


def _wrap_update(original):
    @wraps(original)
    def execute_sql(self, result_type):
        tracking.forbid_write()
        if not self.query.values:
            # Nothing to set on this table (its related updates run through this wrapper too).
            with _in_compiler:
                return original(self, result_type)
        table = self.query.get_meta().db_table
        transaction = _own_transaction(self.connection, (table,))
        fields = _image_fields(self, "update")
        if fields is None and type(transaction) is _OwnTransaction and not self.query.related_updates:
            return transaction.run_alone(partial(original, self, result_type), *_table_written(table))
        with transaction as own:
            if fields is None:
                run = partial(original, self, result_type)
                return _write_table(own, self.connection, table, run, not self.query.related_updates)
            assigned = {field.column for field, _model, _value in self.query.values}
            if not self.query.related_updates and assigned.isdisjoint(fields.columns):
                # The columns read are not written: their values after the UPDATE are the old ones.
                returned = _execute_returning(self, fields, result_type)
                if returned is not None:
                    result, old = returned
                    assignments = _constant_assignments(self) or {}
                    columns = frozenset(assigned)
                    rows = [RowChange(table, image, {**image, **assignments}, columns) for image in old]
                    commits.record(self.connection, rows)
                    return 0 if result is None else result  # as Django's: 0 for an empty WHERE
            old = _read_images(self, fields)
            with _in_compiler:
                result = original(self, result_type)
            commits.record(self.connection, _updated_rows(self, table, fields, old))
        return result

    return execute_sql


def _write_table(
    own: _OwnTransaction | None,
    connection,
    table: str,
    run: Callable[[], Any],
    one_statement: bool = True,
) -> Any:
    """``run()`` a write of ``table`` whose rows nobody needs (no query watches it): it is
    recorded as writing the table, with its statement when that is its only one."""
    if own is not None and one_statement and own.statement_carries_begin:
        own.record_with_statement(lambda: ([], {table}))
    with _in_compiler:
        result = run()
    if own is None or not own.committed:
        commits.record(connection, [], {table})
    return result


@cache
def _table_written(table: str) -> tuple[_Record, _ChangesOf]:
    """The record and the changes of a write alone of ``table`` whose rows nobody needs,
    whatever it returned (``_OwnTransaction.run_alone``)."""
    tables = frozenset((table,))
    return lambda _result: commits.encoded_alone([], tables), lambda _result: ([], tables)


def _constant_assignments(compiler) -> dict | None:
    """The canonical values an UPDATE sets, by column; None if one is an expression."""
    assignments = {}
    for field, _model, value in compiler.query.values:
        if hasattr(value, "resolve_expression"):
            return None
        if hasattr(value, "prepare_database_save"):
            value = value.prepare_database_save(field)
        assignments[field.column] = canonical_value(field, value)
    return assignments


def _updated_rows(compiler, table: str, fields: _ImageFields, old: list[dict]) -> list[RowChange]:
    assignments = _constant_assignments(compiler)
    assigned = frozenset(field.column for field, _model, _value in compiler.query.values)
    comparable = fields.comparable
    if assignments is None:
        # An expression (F() + 1, Case/When of bulk_update): read the new values back.
        pk = compiler.query.get_meta().pk
        new = _read_images_by_pk(compiler, fields.fields, [image[pk.column] for image in old])
        new_by_pk = {image[pk.column]: image for image in new}
        images = [(image, new_by_pk.get(image[pk.column])) for image in old]
    else:
        images = [(image, {**image, **assignments}) for image in old]
    return [
        RowChange(table, before, after, _changed_columns(assigned, comparable, before, after))
        for before, after in images
    ]


def _changed_columns(assigned: frozenset[str], comparable: frozenset[str], old, new) -> frozenset[str]:
    """The assigned columns minus those whose old and new values are both known (the images
    hold the watched columns) and equal: ``save()`` assigns every column, most keep their value."""
    if old is None or new is None:
        return assigned
    return frozenset(
        column
        for column in assigned
        if not (
            column in comparable
            and column in old
            and column in new
            and old[column] == new[column]
            and usable_value(old[column])
        )
    )


def _wrap_delete(original):
    @wraps(original)
    def execute_sql(self, result_type=MULTI, *args: Any, **kwargs: Any) -> Any:
        tracking.forbid_write()
        table = self.query.get_meta().db_table
        transaction = _own_transaction(self.connection, (table,))
        fields = _image_fields(self, "delete")
        if fields is None and type(transaction) is _OwnTransaction:
            run = partial(original, self, result_type, *args, **kwargs)
            return transaction.run_alone(run, *_table_written(table))
        with transaction as own:
            if fields is None:
                run = partial(original, self, result_type, *args, **kwargs)
                return _write_table(own, self.connection, table, run)
            returned = None if args or kwargs else _execute_returning(self, fields, result_type)
            if returned is not None:
                result, old = returned
            else:
                old = _read_images(self, fields)
                with _in_compiler:
                    result = original(self, result_type, *args, **kwargs)
            commits.record(self.connection, [RowChange(table, image, None) for image in old])
        return result

    return execute_sql


def _execute_returning(compiler, fields: _ImageFields, result_type) -> tuple[int | None, list[dict]] | None:
    """Run an UPDATE or DELETE with ``RETURNING`` the columns of ``fields``: what Django's
    ``execute_sql(result_type)`` returns, and the rows' images, in one statement (Postgres,
    SQLite >= 3.35). None where it cannot, and nothing ran: the caller reads the images first.

    A DELETE returns the rows as they were; an UPDATE returns them as they are after it, which is
    as they were for the columns it does not set (the caller checks).
    """
    connection = compiler.connection
    if (
        result_type not in (ROW_COUNT, NO_RESULTS)
        or connection.vendor not in ("postgresql", "sqlite")
        or not connection.features.can_return_columns_from_insert
        or getattr(compiler.query.get_meta(), "is_composite_pk", False)
    ):
        return None
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:
        sql = ""
    if not sql:
        return None, []  # Django runs nothing either
    images = _fetch_images(compiler, fields, f"{sql} RETURNING {fields.quoted}", params)
    return (len(images) if result_type == ROW_COUNT else None), images


def _fetch_images(compiler, fields: _ImageFields, sql: str, params) -> list[dict]:
    """Run ``sql``, whose rows hold the columns of ``fields``: their images, as the ORM would
    read them (the fields' converters) in canonical form."""
    with _in_compiler, compiler.connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    if fields.converters:
        rows = compiler.apply_converters(rows, fields.converters)
    images = []
    for row in rows:  # loops, not comprehensions: this runs for every watched write
        image = {}
        for field, value in zip(fields.fields, row, strict=True):
            image[field.column] = canonical_value(field, value)
        images.append(image)
    return images


class _ImageFields:
    """The fields whose old values an update or delete of a table reads (``_image_fields``), and
    what reading them takes, made once per connection: the columns, quoted for ``SELECT`` and
    ``RETURNING``, the ``SELECT`` by primary key that ``save()`` needs, and the fields'
    converters (``SQLCompiler.get_converters``)."""

    __slots__ = ("by_key", "columns", "comparable", "converters", "fields", "quoted", "select")

    def __init__(self, compiler, meta, fields: tuple) -> None:
        quote = compiler.connection.ops.quote_name
        self.fields = fields
        self.columns = frozenset(field.column for field in fields)
        # Two equal canonical values of a JSON column need not be one database value (its text
        # keeps its key order in some databases): they are never compared.
        self.comparable = frozenset(
            field.column for field in fields if not isinstance(value_field(field), JSONField)
        )
        self.quoted = ", ".join(quote(field.column) for field in fields)
        self.select = f"SELECT {self.quoted} FROM {quote(meta.db_table)}"
        self.by_key = f"{self.select} WHERE {quote(meta.pk.column)} = %s"
        self.converters = compiler.get_converters([field.get_col(meta.db_table) for field in fields])


_IMAGE_FIELDS_KEPT = 256  # per connection: tables times the sets of columns watched on each


def _image_fields(compiler, write: str) -> _ImageFields | None:
    """The fields whose old values an ``"update"`` or ``"delete"`` must read: the primary key and
    every column that a live query constrains. ``None``: the table is ignored or nobody watches
    it, and the write cannot end a sign-in (``identities.py``)."""
    meta = compiler.query.get_meta()
    watched = commits.watched_columns(meta.db_table, write)
    if watched is None:
        return None
    connection = compiler.connection
    try:
        kept = connection.reactive_image_fields
    except AttributeError:
        kept = connection.reactive_image_fields = {}
    key = (meta, watched)  # a proxy model's fields are not its concrete model's
    fields = kept.get(key)
    if fields is None:
        if len(kept) >= _IMAGE_FIELDS_KEPT:
            kept.clear()
        chosen = tuple(f for f in meta.local_concrete_fields if f.primary_key or f.column in watched)
        fields = kept[key] = _ImageFields(compiler, meta, chosen)
    return fields


def _read_images(compiler, fields: _ImageFields) -> list[dict]:
    """The current values of ``fields`` for the rows the write's WHERE selects."""
    images = _read_images_by_where(compiler, fields)
    if images is not None:
        return images
    query = compiler.query.chain(klass=Query)
    return _select(query, compiler.using, fields.fields)


def _read_images_by_where(compiler, fields: _ImageFields) -> list[dict] | None:
    """``SELECT`` the columns of ``fields`` ``WHERE`` the write's own condition, compiled by the
    write's compiler, when that condition names the write's table alone (``save()``,
    ``filter(pk=...).update()``): building a SELECT through the ORM costs as much as the write.
    None when it names another table (a join): the caller builds the SELECT through the ORM."""
    query = compiler.query
    meta = query.get_meta()
    table = meta.db_table
    for alias, count in query.alias_refcount.items():  # a loop, not any(): every watched write
        if count and alias != table:
            return None
    key = _primary_key_value(query.where, meta.pk)
    if key is not None:  # save(): the WHERE is the key alone, known without compiling it again
        return _fetch_images(compiler, fields, fields.by_key, (key,))
    try:
        where, params = compiler.compile(query.where)
    except EmptyResultSet:
        return []
    except FullResultSet:
        where, params = "", ()
    sql = f"{fields.select} WHERE {where}" if where else fields.select
    return _fetch_images(compiler, fields, sql, params)


def _primary_key_value(where, pk) -> Any:
    """The value ``pk = value`` is the whole of ``where`` about, if it is, and a value of the
    key's plain type (what ``save()`` updates by); else None."""
    if where.negated or len(where.children) != 1:
        return None
    lookup = where.children[0]
    if not isinstance(lookup, Exact) or not isinstance(lookup.lhs, Col) or lookup.lhs.target is not pk:
        return None
    value = lookup.rhs
    plain = plain_value_type(pk)
    return value if plain is not None and type(value) is plain else None


def _read_images_by_pk(compiler, fields, pks: list) -> list[dict]:
    images = []
    model = compiler.query.model
    for start in range(0, len(pks), _PK_CHUNK):
        query = Query(model)
        query.add_filter("pk__in", pks[start : start + _PK_CHUNK])
        images.extend(_select(query, compiler.using, fields))
    return images


def _select(query: Query, using: str, fields) -> list[dict]:
    query.clear_ordering(force=True)
    query.select_for_update = False
    query.select_related = False
    query.clear_select_clause()
    query.add_fields([f.attname for f in fields], allow_m2m=False)
    with tracking.untracked():
        rows = query.get_compiler(using).results_iter(tuple_expected=True)
        return [
            {f.column: canonical_value(f, value) for f, value in zip(fields, row, strict=True)}
            for row in rows
        ]


# Raw SQL -------------------------------------------------------------------------------------

_READ = re.compile(r"^\s*(\(\s*)*(select|with|values|explain)\b", re.IGNORECASE)
_WRITE = re.compile(
    r"^\s*(insert|update|delete|replace|merge|upsert|create|alter|drop|truncate|rename)\b", re.IGNORECASE
)
_WRITE_ANYWHERE = re.compile(
    r"\b(insert\s+into|update\s+\S+\s+set|delete\s+from|merge\s+into)\b", re.IGNORECASE
)
# Schema changes are not wrapped in a transaction of their own: some refuse to run in one
# (CREATE INDEX CONCURRENTLY); in autocommit mode their record follows them (commits.record).
_SCHEMA = re.compile(r"^\s*(create|alter|drop|rename)\b", re.IGNORECASE)


def _raw_sql_kind(sql: Any) -> str | None:
    """ "read", "write" or None (transaction control, PRAGMA, SET, or SQL a compiler issued)."""
    if _local.depth:
        return None
    if not isinstance(sql, str):
        sql = str(sql)
    if _WRITE.match(sql):
        return "write"
    if _READ.match(sql):
        is_cte = sql.lstrip()[:4].lower() == "with"
        return "write" if is_cte and _WRITE_ANYWHERE.search(sql) else "read"
    return None


def _wrap_cursor(original):
    @wraps(original)
    def execute(self, sql, *args: Any, **kwargs: Any) -> Any:
        _local.last_sql = sql  # what a compiler ran, for its read set
        if _local.depth and _local.begin_with is None:  # a compiler's SQL, no BEGIN to send with it
            return original(self, sql, *args, **kwargs)
        kind = _raw_sql_kind(sql)
        if kind != "write":
            result = _execute(original, self, sql, args, kwargs)
            if kind == "read":
                tracking.record_raw_sql_read(str(sql))
            return result
        tracking.forbid_write()
        tables = set(read_set_of_raw_sql(str(sql), tracking.known_tables()).tables) or {ANY_TABLE}
        wrap = nullcontext() if _SCHEMA.match(str(sql)) else _own_transaction(self.db, tables)
        with wrap:
            result = _execute(original, self, sql, args, kwargs)
            commits.record(self.db, [], tables, raw_sql=True)
        return result

    return execute


def _wrap_callproc(original):
    @wraps(original)
    def callproc(self, *args: Any, **kwargs: Any) -> Any:
        # A stored procedure may read or write anything.
        tracking.forbid_write()
        with _own_transaction(self.db, (ANY_TABLE,)):
            _begin_now(self.db)
            result = original(self, *args, **kwargs)
            commits.record(self.db, [], {ANY_TABLE})
        return result

    return callproc


# Transactions --------------------------------------------------------------------------------


def _wrap_savepoint_rollback(original):
    @wraps(original)
    def savepoint_rollback(self, sid):
        original(self, sid)
        commits.savepoint_rolled_back(self, sid)

    return savepoint_rollback


def _wrap_commit(original):
    # Every commit passes here: the outermost atomic block's and a manual transaction's. The
    # change record is appended at the last moment before COMMIT, when every savepoint rollback
    # has been applied; if appending fails, the commit fails and Atomic rolls the data back.
    @wraps(original)
    def commit(self):
        # The log's own SQL is not a write to capture. Its errors are Django's, as the COMMIT's
        # would be: Atomic rolls back on a DatabaseError, and only on one.
        with _in_compiler, self.wrap_database_errors:
            version = commits.before_commit(self)
        try:
            original(self)
        except BaseException:
            commits.rolled_back(self)
            raise
        commits.committed(self, version)

    return commit


def _wrap_rollback(original):
    @wraps(original)
    def rollback(self):
        original(self)
        commits.rolled_back(self)

    return rollback


def _wrap_close(original):
    # A connection closed inside a transaction loses the transaction.
    @wraps(original)
    def close(self):
        commits.rolled_back(self)
        original(self)

    return close


def deferred_sqlite_transactions(connection) -> None:
    """Let this connection's transactions begin as readers, whatever ``transaction_mode`` says.

    With ``"transaction_mode": "IMMEDIATE"`` every SQLite transaction takes the write lock when
    it begins; the invalidator's read-only snapshots must not, or re-runs would block writers.
    Django reads the mode into ``connection.transaction_mode`` on every connect.
    """
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        connection.transaction_mode = None
