"""Writes that may end a sign-in or change its rights: a user row updated or deleted, a session
deleted.

Django decides who a request comes from with two rows: the session (deleted on logout, flushed
when its auth hash no longer matches) and the user (``is_active``, the password behind the auth
hash, ``is_staff``, ...). An open socket must not outlive either (ARCHITECTURE.md invariant 8), so
the capture stage keeps these writes in the change log with their primary keys, even when no
query watches the tables and even though the session table is in ``IGNORED_TABLES``: each change
record carries them as ``revoked`` keys (``"user:<pk>"``, ``"session:<key>"``), and the hubs
re-check the sockets they name. Session inserts and updates (a save on every request) are not
among them and stay as cheap as before: nothing is read, nothing is logged.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.signals import setting_changed

from ..records import ANY_TABLE, ANYONE, RowChange


@dataclass(frozen=True, slots=True)
class IdentityTables:
    """The user table and the session table (None when sessions are not kept in the database),
    with their primary key columns."""

    user_table: str
    user_pk: str
    session_table: str | None
    session_pk: str | None


@functools.cache
def identity_tables() -> IdentityTables:
    user_meta = get_user_model()._meta
    store = import_module(settings.SESSION_ENGINE).SessionStore
    # Only the database engines ("db", "cached_db" and subclasses) have a session model, and
    # theirs exists only if its app is installed.
    try:
        session_meta = store.get_model_class()._meta if hasattr(store, "get_model_class") else None
    except RuntimeError:  # "Model class ... isn't in an application in INSTALLED_APPS"
        session_meta = None
    return IdentityTables(
        user_table=user_meta.db_table,
        user_pk=user_meta.pk.column,
        session_table=session_meta.db_table if session_meta else None,
        session_pk=session_meta.pk.column if session_meta else None,
    )


def _forget_tables(*, setting: str, **kwargs: Any) -> None:
    if setting in ("AUTH_USER_MODEL", "SESSION_ENGINE"):
        identity_tables.cache_clear()


setting_changed.connect(_forget_tables)


def user_key(pk: Any) -> str:
    """The ``revoked`` key of a user, from their primary key (as a write or a socket holds it)."""
    return f"user:{get_user_model()._meta.pk.to_python(pk)}"


def session_key(key: str) -> str:
    """The ``revoked`` key of a session, from its session key."""
    return f"session:{key}"


def must_read_keys(table: str, write: str) -> bool:
    """Whether an ``"update"`` or ``"delete"`` of ``table`` must read the primary keys of the rows
    it writes, watched or not: they may end a sign-in."""
    tables = identity_tables()
    if table == tables.user_table:
        return True
    return table == tables.session_table and write == "delete"


_NONE: frozenset[str] = frozenset()


def revoked_by(
    rows: Collection[RowChange], opaque_tables: Collection[str], *, raw_sql: bool = False
) -> frozenset[str]:
    """The ``revoked`` keys of one write: updated or deleted users, deleted sessions.

    A write whose rows are unknown revokes ``ANYONE`` if it may have changed a user (the user
    table, or every table), or deleted a session (raw SQL naming the session table; an update
    of the session table without row images is a session save, which ends nothing).
    """
    if not opaque_tables:
        for row in rows:  # a loop, not all(): this runs for every write
            if row.old is not None:
                break
        else:
            return _NONE  # inserts end no sign-in (most writes: no lookup, no set)
    tables = identity_tables()
    revoked: set[str] = set()
    for row in rows:
        if row.old is None:  # an insert ends nothing
            continue
        if row.table == tables.user_table:
            pk = row.old.get(tables.user_pk)
            revoked.add(ANYONE if pk is None else user_key(pk))
        elif row.table == tables.session_table and row.new is None:
            pk = row.old.get(tables.session_pk)
            revoked.add(ANYONE if pk is None else session_key(str(pk)))
    for table in opaque_tables:
        if table in (ANY_TABLE, tables.user_table) or (raw_sql and table == tables.session_table):
            revoked.add(ANYONE)
    return frozenset(revoked)
