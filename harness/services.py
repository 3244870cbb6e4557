"""Private Redis and Postgres servers, for the tests of the Redis backend and its benchmark.

    python -m harness.services run -- pytest -m "not embedded_only"

starts a ``redis-server`` and a Postgres on free 127.0.0.1 ports in a temporary directory, runs
the command with ``REDIS_URL`` and ``DATABASE_URL`` pointing at them, stops both and exits with
the command's code. A variable already set in the environment is used as is (nothing started).

Postgres refuses to run as root: as root, ``initdb`` and ``postgres`` run as the ``postgres``
system user (Debian's package creates it), in a data directory that user owns.

Only the standard library here, plus redis-py and psycopg to tell when a server answers.
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.ports import ServerExited, free_port
from harness.processes import tail, terminate

STARTUP_TIMEOUT = 30.0
POSTGRES_DATABASE = "reactive"
POSTGRES_USER = "postgres"


def _wait(ready: Callable[[], bool], process: subprocess.Popen, what: str, log: Path) -> None:
    """Until ``ready()``; a server that does not get there is killed, not left behind."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerExited(f"{what} exited with {process.returncode}:\n{tail(log, 20)}")
            if ready():
                return
            time.sleep(0.02)
        raise TimeoutError(f"{what} did not answer after {STARTUP_TIMEOUT} s:\n{tail(log, 20)}")
    except BaseException:
        terminate(process, signal.SIGKILL)
        raise


class Service:
    """A server process on a fixed 127.0.0.1 port; ``restart()`` keeps the port."""

    name = "service"
    stop_signal: int = signal.SIGTERM

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.process: subprocess.Popen | None = None
        self.log = directory / f"{self.name}.log"

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def halt(self) -> None:
        """Stop the process, keeping its files (``start()`` again uses them)."""
        if self.process is not None:
            terminate(self.process, self.stop_signal, timeout=20.0)

    def stop(self) -> None:
        self.halt()

    def restart(self) -> None:
        """Stop and start again on the same port: clients see the connection drop and come back."""
        self.halt()
        self.start()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


class Redis(Service):
    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # A new session: Ctrl-C in the terminal reaches the test command, not the servers.
        if shutil.which("redis-server") is None:
            raise FileNotFoundError("no redis-server on PATH: apt-get install redis-server")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.directory), "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        _wait(self._answers, self.process, f"redis-server on port {self.port}", self.log)

    def _answers(self) -> bool:
        import redis

        try:
            with redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False


def postgres_bindir() -> Path:
    """Where ``initdb`` and ``postgres`` are: Debian's newest version, else PATH or pg_config."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(Path(path).parts[-3]))
    if found:
        return Path(found[-1]).parent
    if initdb := shutil.which("initdb"):
        return Path(initdb).parent
    if pg_config := shutil.which("pg_config"):
        bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
        return Path(bindir.stdout.strip())
    raise FileNotFoundError("no Postgres server binaries (initdb): apt-get install postgresql")


def _server_account() -> pwd.struct_passwd | None:
    """The unprivileged account Postgres runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and there is no `postgres` user to run Postgres as")


def _reachable(path: Path, account: pwd.struct_passwd) -> bool:
    """Whether ``account`` can traverse every directory down to ``path`` (groups aside)."""
    for directory in [path, *path.parents]:
        mode = os.stat(directory).st_mode
        owner = os.stat(directory).st_uid
        bit = stat.S_IXUSR if owner == account.pw_uid else stat.S_IXOTH
        if not mode & bit:
            return False
    return True


class Postgres(Service):
    name = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown: abort sessions, no checkpoint wait for clients

    def __init__(self, directory: Path, port: int) -> None:
        super().__init__(directory, port)
        self.bindir = postgres_bindir()
        self.account = _server_account()
        self._private_root: Path | None = None
        # The server account owns its directory (data and socket); it must be able to reach it.
        if self.account is None or _reachable(directory, self.account):
            self.root = directory / "postgres"
            self.root.mkdir(parents=True, exist_ok=True)
        else:
            self.root = self._private_root = Path(tempfile.mkdtemp(prefix="reactive-postgres-"))
        if self.account is not None:
            os.chown(self.root, self.account.pw_uid, self.account.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgres://{POSTGRES_USER}@127.0.0.1:{self.port}/{POSTGRES_DATABASE}"

    def _popen(self, argv: list[str], **kwargs: object) -> subprocess.Popen:
        options: dict = {"cwd": self.root, "stdin": subprocess.DEVNULL, "start_new_session": True}
        if self.account is not None:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_"))}
            env.update(HOME=str(self.root), USER=self.account.pw_name, LOGNAME=self.account.pw_name)
            options.update(
                user=self.account.pw_uid, group=self.account.pw_gid, extra_groups=[], env=env, umask=0o077
            )
        return subprocess.Popen(argv, **options, **kwargs)

    def initdb(self) -> None:
        with self.log.open("ab") as log:
            if self.account is not None:
                os.chown(self.log, self.account.pw_uid, self.account.pw_gid)
            process = self._popen(
                [str(self.bindir / "initdb"), "-D", str(self.data), "-U", POSTGRES_USER, "--auth=trust",
                 "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            if process.wait() != 0:
                raise RuntimeError(f"initdb failed with {process.returncode}:\n{tail(self.log, 20)}")

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self.initdb()
        with self.log.open("ab") as log:
            self.process = self._popen(
                [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-h", "127.0.0.1", "-k", str(self.root), "-F",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=300"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        _wait(self._answers, self.process, f"postgres on port {self.port}", self.log)
        self._create_database()

    def _connect(self, dbname: str):
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=POSTGRES_USER, dbname=dbname, connect_timeout=2,
            autocommit=True,
        )  # fmt: skip

    def _answers(self) -> bool:
        import psycopg

        try:
            with self._connect("postgres") as connection:
                connection.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def _create_database(self) -> None:
        # Every database is a copy of template1 (pytest-django's test_reactive too): what it holds,
        # they all do. tests/testapp declares SQLite's case-insensitive NOCASE collation on a column;
        # its Postgres twin is a nondeterministic ICU collation (case-insensitive, accent-sensitive).
        with self._connect("template1") as connection:
            connection.execute(
                "CREATE COLLATION IF NOT EXISTS nocase"
                " (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"
            )
        with self._connect("postgres") as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (POSTGRES_DATABASE,)
            ).fetchone()
            if not exists:
                connection.execute(f'CREATE DATABASE "{POSTGRES_DATABASE}"')

    def stop(self) -> None:
        self.halt()
        if self._private_root is not None:
            shutil.rmtree(self._private_root, ignore_errors=True)
            self._private_root = None


def _start(cls: type[Service], directory: Path, attempts: int = 5) -> Service:
    # A free port can be taken between choosing it and binding it: try another one.
    for attempt in range(attempts):
        service = cls(Path(directory), free_port())
        try:
            service.start()
            return service
        except ServerExited:
            service.stop()
            if attempt == attempts - 1:
                raise
        except BaseException:
            service.stop()
            raise
    raise AssertionError("unreachable")


def start_redis(directory: str | os.PathLike) -> Service:
    """A ``redis-server`` on a free 127.0.0.1 port, answering PING; nothing saved to disk."""
    return _start(Redis, Path(directory))


def start_postgres(directory: str | os.PathLike) -> Service:
    """A Postgres on a free 127.0.0.1 port with trust auth and a ``reactive`` database."""
    return _start(Postgres, Path(directory))


def scratch_parent() -> str | None:
    """Where the servers' files go: tmpfs (/dev/shm) when it has room, unless TMPDIR says otherwise.

    On a disk, the TRUNCATE of every table after each transactional test (Django's flush) costs
    Postgres a file creation and removal per table and index: about twice as slow.
    """
    if os.environ.get("TMPDIR") or not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK):
        return None
    room = os.statvfs("/dev/shm")
    return "/dev/shm" if room.f_bavail * room.f_frsize >= 1 << 30 else None  # Docker's default: 64 MiB


def start_all(directory: Path, starters: dict[str, Callable[[Path], Service]]) -> dict[str, Service]:
    """Start several services at once (Postgres takes longer: initdb): all of them, or none.

    On an error, or Ctrl-C while they start, the ones that came up are stopped and it raises.
    """
    services: dict[str, Service] = {}
    errors: list[BaseException] = []

    def start(name: str, starter: Callable[[Path], Service]) -> None:
        try:
            services[name] = starter(directory)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start, args=item) for item in starters.items()]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
    except BaseException:
        for thread in threads:  # interrupted while starting: stop what still comes up
            if thread.is_alive():
                thread.join()
        for service in services.values():
            service.stop()
        raise
    return services


class Terminated(Exception):
    """SIGTERM while running the command."""


def run(command: Sequence[str]) -> int:
    """Run ``command`` with REDIS_URL and DATABASE_URL set, starting the servers that are missing."""
    wanted = {
        "REDIS_URL": start_redis,
        "DATABASE_URL": start_postgres,
    }
    wanted = {name: start for name, start in wanted.items() if not os.environ.get(name)}
    services: dict[str, Service] = {}
    directory = Path(tempfile.mkdtemp(prefix="reactive-services-", dir=scratch_parent()))
    directory.chmod(0o755)  # as root, Postgres runs as another user inside it

    def on_sigterm(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    child: subprocess.Popen | None = None
    try:
        began = time.monotonic()
        services = start_all(directory, wanted)
        env = dict(os.environ)
        for name, service in services.items():
            env[name] = service.url
            print(f"harness.services: {name}={service.url}", file=sys.stderr)
        if services:
            print(f"harness.services: started in {time.monotonic() - began:.1f} s", file=sys.stderr)
        child = subprocess.Popen(list(command), env=env)
        return child.wait()
    except (KeyboardInterrupt, Terminated) as interruption:
        # Ctrl-C reached the child too (same process group): let it finish its teardown.
        # SIGTERM reached only us: interrupt the child the same way.
        if child is not None:
            if isinstance(interruption, Terminated):
                child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                terminate(child, timeout=20.0)
        return 128 + (signal.SIGTERM if isinstance(interruption, Terminated) else signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for service in services.values():
            service.stop()
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.services", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="action", required=True)
    run_parser = commands.add_parser("run", help="run a command with REDIS_URL and DATABASE_URL set")
    run_parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("run: no command given (python -m harness.services run -- COMMAND...)")
    return run(command)


if __name__ == "__main__":
    sys.exit(main())
