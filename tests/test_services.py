"""harness/services.py: the private Redis and Postgres servers of the Redis pass of `make test`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from harness.services import Service, start_postgres, start_redis

pytestmark = pytest.mark.redis_only

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL under `python -m harness.services run`, else a private server."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    with start_redis(tmp_path_factory.mktemp("redis")) as service:
        yield service.url


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DATABASE_URL under `python -m harness.services run`, else a private server."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    with start_postgres(tmp_path_factory.mktemp("postgres")) as service:
        yield service.url


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Service]:
    with start_redis(tmp_path) as service:
        yield service


def test_redis_answers_ping(redis_url):
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()


def test_postgres_accepts_a_query(database_url):
    with psycopg.connect(database_url, connect_timeout=5) as connection:
        assert connection.execute("SELECT 1 + 1").fetchone() == (2,)


def test_postgres_user_can_create_the_test_database(database_url):
    # pytest-django creates test_<name> itself: the user must be allowed to.
    with psycopg.connect(database_url, connect_timeout=5) as connection:
        row = connection.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user")
        assert row.fetchone() == (True,)


def test_private_redis_listens_on_loopback_and_keeps_nothing_on_disk(private_redis):
    assert private_redis.url == f"redis://127.0.0.1:{private_redis.port}/0"
    with redis.Redis.from_url(private_redis.url) as client:
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert client.config_get("save")["save"] == ""
        assert client.config_get("appendonly")["appendonly"] == "no"


def test_restarted_redis_comes_back_on_the_same_port_and_a_client_reconnects(private_redis):
    port, first = private_redis.port, private_redis.process
    with redis.Redis.from_url(private_redis.url) as client:
        client.set("before", "1")
        private_redis.restart()
        assert first.poll() is not None
        assert private_redis.process is not first and private_redis.process.poll() is None
        assert private_redis.port == port
        # The same client: its dropped connection is replaced on the next command.
        assert client.ping()
        assert client.get("before") is None  # a new, empty server
        client.set("after", "2")
        assert client.get("after") == b"2"


def test_stopped_redis_refuses_connections(private_redis):
    private_redis.stop()
    assert private_redis.process.poll() is not None
    with (
        redis.Redis.from_url(private_redis.url, socket_connect_timeout=1) as client,
        pytest.raises(redis.ConnectionError),
    ):
        client.ping()


def test_private_postgres_serves_the_reactive_database_until_stopped(tmp_path):
    service = start_postgres(tmp_path)
    try:
        assert service.url == f"postgres://postgres@127.0.0.1:{service.port}/reactive"
        with psycopg.connect(service.url, autocommit=True) as connection:
            assert connection.execute("SELECT current_database()").fetchone() == ("reactive",)
            connection.execute("CREATE TABLE kept (value int)")
            connection.execute("INSERT INTO kept VALUES (7)")
        service.restart()
        with psycopg.connect(service.url) as connection:
            assert connection.execute("SELECT value FROM kept").fetchone() == (7,)
    finally:
        service.stop()
    assert service.process.poll() is not None
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(service.url, connect_timeout=2)


def run_cli(*command: str, **env: str | None) -> subprocess.CompletedProcess:
    environment = {**os.environ, **{key: value for key, value in env.items() if value is not None}}
    for key, value in env.items():
        if value is None:
            environment.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "harness.services", "run", "--", *command],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


CHECK_SERVICES = """
import os, sys, psycopg, redis
assert redis.Redis.from_url(os.environ["REDIS_URL"]).ping()
with psycopg.connect(os.environ["DATABASE_URL"]) as connection:
    connection.execute("SELECT 1")
print(os.environ["REDIS_URL"], os.environ["DATABASE_URL"])
sys.exit(3)
"""


def test_cli_starts_both_servers_for_the_command_and_stops_them_after(tmp_path):
    result = run_cli(sys.executable, "-c", CHECK_SERVICES, REDIS_URL=None, DATABASE_URL=None)
    assert result.returncode == 3, result.stderr  # the command's own exit code
    redis_url, database_url = result.stdout.split()
    assert redis_url.startswith("redis://127.0.0.1:")
    assert database_url.startswith("postgres://postgres@127.0.0.1:")
    with (
        redis.Redis.from_url(redis_url, socket_connect_timeout=1) as client,
        pytest.raises(redis.ConnectionError),
    ):
        client.ping()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(database_url, connect_timeout=2)


def test_cli_uses_the_servers_already_configured():
    result = run_cli(
        sys.executable,
        "-c",
        "import os; print(os.environ['REDIS_URL'], os.environ['DATABASE_URL'])",
        REDIS_URL="redis://example.invalid:1/0",
        DATABASE_URL="postgres://someone@example.invalid/db",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["redis://example.invalid:1/0", "postgres://someone@example.invalid/db"]
    assert "started" not in result.stderr
