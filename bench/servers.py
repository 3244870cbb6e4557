"""The benchmark's single-process servers: Daphne or uvicorn on a fresh SQLite database.

Three flavours of server, each an ASGI application with its settings: ``reactive`` (the
demo's ``project.asgi`` with ``bench.settings``: the embedded backend), ``dcrf`` (the
djangochannelsrestframework baseline, ``bench.dcrf.asgi`` with ``bench.settings_plain``) and
``plain`` (Django alone, ``bench.asgi``). Each server gets a copy of a database migrated once per
settings module. Access logs are off (a line per request would cost the server CPU).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from bench import Broken
from harness.ports import ServerExited, free_port
from harness.processes import ROOT, Process, daphne_command, django_env, migrate, uvicorn_command

ACCESS_LINE = re.compile(r'^\S+ - - \[[^\]]+\] "')  # Daphne's access log: a line per request
WORKER_LINE = re.compile(r"^reactive worker (\w+ started; waiting for the lease|stopped)$")


@dataclass(frozen=True)
class Flavour:
    settings: str
    app: str
    ws_path: str | None  # where subscribers connect (None: no WebSocket)


FLAVOURS = {
    "reactive": Flavour("bench.settings", "project.asgi:application", "/reactive/ws/"),
    "dcrf": Flavour("bench.settings_plain", "bench.dcrf.asgi:application", "/dcrf/ws/"),
    "plain": Flavour("bench.settings_plain", "bench.asgi:application", None),
}
ASGI_SERVERS = ("daphne", "uvicorn")


def embedded_env(settings: str, db_path: Path, **extra: str | None) -> dict[str, str]:
    """A Django process on the embedded backend and its own SQLite database (whatever REDIS_URL)."""
    return django_env(
        settings, SQLITE_PATH=str(db_path), REDIS_URL=None, REACTIVE_LOG_LEVEL="WARNING", **extra
    )


class Databases:
    """Fresh SQLite databases: one migrated template per settings module, copied per server."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.templates: dict[str, Path] = {}
        self.copies = 0
        self.lock = threading.Lock()  # servers start from several threads at once

    def fresh(self, settings: str) -> Path:
        with self.lock:
            if settings not in self.templates:
                template = self.directory / f"template-{settings.replace('.', '-')}.sqlite3"
                migrate(embedded_env(settings, template))
                self.templates[settings] = template
            self.copies += 1
            copy = self.directory / f"db-{self.copies}.sqlite3"
            shutil.copyfile(self.templates[settings], copy)
            return copy


# uvicorn without its access log (a line per request costs the server CPU), as Daphne's "-v 0".
UVICORN_OPTIONS = ("--log-level", "warning", "--no-access-log", "--backlog", "4096")


def server_command(asgi_server: str, port: int, app: str) -> list[str]:
    if asgi_server == "daphne":
        return daphne_command(port, "-v", "0", app=app)
    if asgi_server == "uvicorn":
        return uvicorn_command(port, *UVICORN_OPTIONS, app=app)
    raise ValueError(f"unknown ASGI server {asgi_server!r}")


def start_server(
    databases: Databases,
    workdir: Path,
    name: str,
    flavour: str,
    asgi_server: str,
    db: Path | None = None,
    **env: str | None,
) -> Process:
    """A server of ``flavour`` under ``asgi_server`` on a free loopback port, listening; on a
    fresh database, or on ``db`` (another server's: two processes sharing one SQLite file)."""
    spec = FLAVOURS[flavour]
    db = db or databases.fresh(spec.settings)
    port = free_port()
    process = Process.start(
        name,
        server_command(asgi_server, port, spec.app),
        embedded_env(spec.settings, db, **env),
        workdir / f"{name}.log",
        port,
    )
    listening(process)
    return process


def listening(process: Process, timeout: float = 60.0) -> None:
    """Until a server listens; a server that does not is Broken."""
    try:
        process.wait_until_listening(timeout)
    except (ServerExited, TimeoutError) as exc:
        process.stop()
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
    lines = [without_machine_paths(line) for line in lines]
    return lines[:limit] + ([f"... {len(lines) - limit} more lines"] if len(lines) > limit else [])


def without_machine_paths(text: str) -> str:
    """A log line as it reads on any machine: installed packages from ``site-packages/``, the
    project's files from the repository's root."""
    text = re.sub(r"[^\s\"']*/(site-packages/)", r"\1", text)
    return text.replace(f"{ROOT}/", "")
