"""Our subprocesses: start one with its own log, wait until it listens, and stop it for sure.

Every process runs from the repository root in a session of its own, so Ctrl-C in the terminal
reaches only the test run or the benchmark, which then stops its processes itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness import procfs
from harness.ports import HOST, Listening, ServerExited, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
ASGI_APP = "project.asgi:application"
# Above REACTIVE's MAX_MESSAGE_BYTES, so oversized frames reach the app and get `too_large`.
DAPHNE_LIMITS = ("--websocket-max-message-size", "4194304", "--websocket-max-frame-size", "4194304")
STOP_TIMEOUT = 10.0


def django_env(settings: str, **variables: str | None) -> dict[str, str]:
    """This environment for a Django process of ours; a variable set to None is removed."""
    env = dict(os.environ)
    env.update(DJANGO_SETTINGS_MODULE=settings, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    for name, value in variables.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def manage_command(*args: str) -> list[str]:
    return [sys.executable, "manage.py", *args]


def daphne_command(port: int, *options: str, app: str = ASGI_APP) -> list[str]:
    return [sys.executable, "-m", "daphne", "-b", HOST, "-p", str(port), *options, app]


def uvicorn_command(port: int, *options: str, app: str = ASGI_APP) -> list[str]:
    return [sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port), *options]


def migrate(env: dict[str, str]) -> None:
    """``manage.py migrate`` of the database that ``env`` names; raises if it fails."""
    subprocess.run(manage_command("migrate", "--noinput", "-v0"), cwd=ROOT, env=env, check=True)


def terminate(popen: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
    """Send ``sig`` and wait; SIGKILL if the process is still there after ``timeout`` or if we are
    interrupted while waiting (a process is never left behind). Returns its exit code."""
    try:
        if popen.poll() is None:
            popen.send_signal(sig)
            popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()
    except BaseException:
        popen.kill()
        popen.wait()
        raise
    return popen.returncode


def tail(log: Path, lines: int = 40) -> str:
    """The last ``lines`` of a log ("" if it cannot be read)."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Process(Listening):
    """One subprocess of ours, its log (stdout and stderr) and, for a server, its port."""

    name: str
    popen: subprocess.Popen
    log: Path
    port: int | None = None

    @classmethod
    def start(
        cls,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log: Path,
        port: int | None = None,
        cwd: Path = ROOT,
    ) -> Process:
        """Start ``argv`` in ``cwd``, appending its output to ``log``; returns at once (see
        ``wait_until_listening``)."""
        with log.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return cls(name, popen, log, port)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_until_listening(self, timeout: float = 30.0) -> None:
        """Until the server accepts connections on its port; raises ServerExited or TimeoutError,
        with the end of its log."""
        assert self.port is not None, f"{self.name} is not a server"
        try:
            wait_for_port(self.port, timeout, self.popen)
        except ServerExited as exc:
            raise ServerExited(f"{self.name}: {exc}\n{self.name}'s log:\n{self.tail()}") from None
        except TimeoutError as exc:
            raise TimeoutError(f"{self.name}: {exc}\n{self.name}'s log:\n{self.tail()}") from None

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return tail(self.log, lines)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        return procfs.cpu_seconds(self.pid)

    def rss_kib(self) -> int:
        return procfs.rss_kib(self.pid)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash, an OOM kill)."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; returns its exit code."""
        return terminate(self.popen)
