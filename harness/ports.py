"""Loopback ports: a free one to listen on, waiting until a server listens on one, its URLs."""

from __future__ import annotations

import fcntl
import socket
import subprocess
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"


class ServerExited(RuntimeError):
    """The server process ended before it answered (e.g. its port was taken meanwhile)."""


def free_port() -> int:
    """A port nothing listens on now, and that no process of this machine (this one included)
    was handed by ``free_port`` in the last ``PORT_HELD_S`` (``make test`` runs its two passes at
    once: each starts servers, and without this one could be told the port the other's server is
    about to take). Another program may still take it before our server binds it
    (``ServerExited``)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if _reserve(port):
            return port
    return port  # every port tried was handed out just now: the kernel's choice all the same


PORT_HELD_S = 300
_RESERVED = Path(tempfile.gettempdir()) / "reactive-test-ports"


def _reserve(port: int) -> bool:
    """Mark ``port`` as handed out (a file per port, shared by every process of the machine,
    under one lock); False if another process was handed it in the last ``PORT_HELD_S``."""
    _RESERVED.mkdir(exist_ok=True)
    mark = _RESERVED / str(port)
    with open(_RESERVED / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if time.time() - mark.stat().st_mtime < PORT_HELD_S:
                return False
        except FileNotFoundError:
            pass
        mark.touch()
        return True


def wait_for_port(port: int, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    """Until something accepts connections on ``port``; ``process``, if given, must not exit first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerExited(f"server exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {HOST}:{port} after {timeout} s")


class Listening:
    """Mixin: a server of this project on a loopback ``port``, and where its endpoints are."""

    port: int | None

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/reactive/ws/"

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.port}"
