"""Where a commit comes from: the process, and what ran in it (a mutation, the admin, a shell).

Written into each change record (``ChangeRecord.origin``) for the admin's live dashboard, which
shows why a query re-ran. What runs is a context variable: a mutation sets its name around its
transaction (``engine/execution.py``), an HTTP request its kind (``from_request``, connected to
``request_started`` in ``apps.py``); otherwise it is the process's own role, from its command
line (``shell``, ``command <name>``, ``worker``, ``server``).
"""

from __future__ import annotations

import contextvars
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.urls import NoReverseMatch, reverse

_acting: contextvars.ContextVar[str | None] = contextvars.ContextVar("reactive_origin", default=None)
_process: tuple[int, str] | None = None


def process_name() -> str:
    """``host:pid`` of this process (computed again after a fork)."""
    global _process
    pid = os.getpid()
    if _process is None or _process[0] != pid:
        _process = (pid, f"{socket.gethostname()}:{pid}")
    return _process[1]


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


def current() -> tuple[str, str]:
    """(process, what runs) for a commit made now in this context."""
    return process_name(), _acting.get() or process_role()


@contextmanager
def acting_as(label: str) -> Iterator[None]:
    """Commits inside the block come from ``label`` (``"mutation chat.send_message"``)."""
    token = _acting.set(label)
    try:
        yield
    finally:
        _acting.reset(token)


def from_request(
    sender: Any = None, *, environ: dict | None = None, scope: dict | None = None, **kwargs: Any
) -> None:
    """``request_started`` receiver: commits of this request come from the admin or a view."""
    if scope is not None:
        path = scope.get("path", "")
    elif environ is not None:
        path = environ.get("PATH_INFO", "")
    else:
        return
    _acting.set("admin" if path.startswith(_admin_prefix()) else f"view {path}")


def request_done(sender: Any = None, **kwargs: Any) -> None:
    """``request_finished`` receiver: a thread that served a request does not keep its origin."""
    _acting.set(None)


def _admin_prefix() -> str:
    global _admin_path
    if _admin_path is None:
        try:
            _admin_path = reverse("admin:index")
        except NoReverseMatch:  # no admin in this project
            _admin_path = "\0"
    return _admin_path


_admin_path: str | None = None
