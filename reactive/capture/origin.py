"""Where a commit comes from: the process, and what ran in it (a mutation, the admin, a shell).

Written into each change record (``ChangeRecord.origin``) for the admin's live dashboard, which
shows why a query re-ran. What ran is, in this order: what a context variable says (mutations
and actions set their name around their run, ``engine/execution.py``); ``admin`` when the
transaction wrote the admin's log (every add, change and delete made in the Django admin writes
a ``LogEntry`` in its own transaction, so no middleware or request hook is needed); else the
process's own role, from its command line (``shell``, ``command <name>``, ``worker``, ``server``).
"""

from __future__ import annotations

import contextvars
import os
import socket
import sys
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager

from ..records import RowChange

ADMIN_LOG_TABLE = "django_admin_log"  # django.contrib.admin.models.LogEntry

_acting: contextvars.ContextVar[str | None] = contextvars.ContextVar("reactive_origin", default=None)
_process: str | None = None


def process_name() -> str:
    """``host:pid`` of this process."""
    global _process
    if _process is None:
        _process = f"{socket.gethostname()}:{os.getpid()}"
    return _process


def process_role(argv: list[str] | None = None) -> str:
    """What this process is, from its command line."""
    argv = sys.argv if argv is None else argv
    program = os.path.basename(argv[0]) if argv else ""
    if program == "__main__.py":  # python -m <package>
        program = os.path.basename(os.path.dirname(argv[0]))
    if program in ("manage.py", "django-admin", "django") and len(argv) > 1:
        command = argv[1]
        if command == "shell":
            return "shell"
        if command == "reactive_worker":
            return "worker"
        if command == "runserver":
            return "server"
        return f"command {command}"
    if program in ("daphne", "uvicorn", "gunicorn", "hypercorn"):
        return "server"
    return program or "python"


def current(rows: Iterable[RowChange] = (), opaque_tables: Collection[str] = ()) -> tuple[str, str]:
    """(process, what runs) for a commit made now in this context, which wrote these rows and
    these tables (written without rows, or whose rows need not be looked at)."""
    acting = _acting.get()
    if acting is not None:
        return process_name(), acting
    for row in rows:  # a loop, not any(): this runs for every committed write
        if row.table == ADMIN_LOG_TABLE:
            return process_name(), "admin"
    if ADMIN_LOG_TABLE in opaque_tables:
        return process_name(), "admin"
    return _this_process or _process_origin()


def _process_origin() -> tuple[str, str]:
    """(process, its role): the origin of most commits, made once."""
    global _this_process
    _this_process = (process_name(), process_role())
    return _this_process


_this_process: tuple[str, str] | None = None


def _forget_process() -> None:
    global _process, _this_process
    _process = _this_process = None


os.register_at_fork(after_in_child=_forget_process)


@contextmanager
def acting_as(label: str) -> Iterator[None]:
    """Commits inside the block come from ``label`` (``"mutation chat.send_message"``)."""
    token = _acting.set(label)
    try:
        yield
    finally:
        _acting.reset(token)
