"""The embedded backend's server (Daphne, ``bench.settings``, a fresh SQLite database), the
environment of bench's Django subprocesses, and what a process's log says beyond routine lines."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from bench import Broken
from harness.ports import ServerExited, free_port
from harness.processes import Process, daphne_command, django_env, migrate

ACCESS_LINE = re.compile(r'^\S+ - - \[[^\]]+\] "(WSCONNECTING|WSCONNECT|WSDISCONNECT|WSREJECT) ')
WORKER_LINE = re.compile(r"^reactive worker (\w+ started; waiting for the lease|stopped)$")


def embedded_env(settings: str, db_path: Path) -> dict[str, str]:
    """A Django process on the embedded backend and its own SQLite database (whatever REDIS_URL)."""
    return django_env(settings, SQLITE_PATH=str(db_path), REDIS_URL=None, REACTIVE_LOG_LEVEL="WARNING")


def start_embedded_server(workdir: Path) -> Process:
    """``python -m daphne`` on a free loopback port with ``bench.settings`` and a database migrated
    first; returns once started (see ``listening``)."""
    env = embedded_env("bench.settings", workdir / "db.sqlite3")
    migrate(env)
    port = free_port()
    return Process.start("daphne", daphne_command(port), env, workdir / "daphne.log", port)


def listening(process: Process, timeout: float = 30.0) -> None:
    """Until a server listens; a server that does not is Broken."""
    try:
        process.wait_until_listening(timeout)
    except (ServerExited, TimeoutError) as exc:
        raise Broken(str(exc)) from None


def rss_mib(process: Process) -> float | None:
    with contextlib.suppress(OSError, RuntimeError):
        return process.rss_kib() / 1024
    return None


def log_problems(process: Process, limit: int = 60) -> list[str]:
    """The process's log without Daphne's access lines and the worker's routine lines: what it
    logged at WARNING and above."""
    lines = [
        line
        for line in process.output().splitlines()
        if not ACCESS_LINE.search(line) and not WORKER_LINE.match(line)
    ]
    return lines[:limit] + ([f"... {len(lines) - limit} more lines"] if len(lines) > limit else [])
