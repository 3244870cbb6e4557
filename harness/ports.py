"""Loopback ports: a free one to listen on, waiting until a server listens on one, its URLs."""

from __future__ import annotations

import socket
import subprocess
import time

HOST = "127.0.0.1"


class ServerExited(RuntimeError):
    """The server process ended before it answered (e.g. its port was taken meanwhile)."""


def free_port() -> int:
    """A port nothing listens on now (another process may take it before we bind it)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


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
