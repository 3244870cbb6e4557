"""docker-compose.yml: the Redis backend deployed as two Daphne servers, a worker, Postgres and Redis.

No Docker engine runs the tests, so these check the file's structure (and run the web health check).
"""

from __future__ import annotations

import http.server
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from harness.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
WEB = ("web1", "web2")
APP = ("web1", "web2", "worker", "migrate")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def command(service: dict[str, Any]) -> list[str]:
    value = service["command"]
    return shlex.split(value) if isinstance(value, str) else list(value)


def test_compose_runs_postgres_redis_two_web_servers_a_worker_and_a_migration(services):
    assert set(services) == {"postgres", "redis", "web1", "web2", "worker", "migrate"}
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    for name in APP:
        assert services[name]["build"] == ".", name


def test_postgres_and_redis_report_their_health(services):
    postgres = services["postgres"]["healthcheck"]["test"]
    redis = services["redis"]["healthcheck"]["test"]
    assert "pg_isready" in " ".join(postgres)
    assert redis[-2:] == ["redis-cli", "ping"]


def test_postgres_keeps_its_data_in_a_named_volume():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    volume = compose["services"]["postgres"]["volumes"][0]
    name, target = volume.split(":")
    assert target == "/var/lib/postgresql/data"
    assert name in compose["volumes"]


def test_servers_and_worker_start_after_healthy_databases_and_a_successful_migration(services):
    for name in ("web1", "web2", "worker"):
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name


def test_migration_waits_for_healthy_databases_then_migrates_and_seeds_the_demo(services):
    migrate = services["migrate"]
    assert migrate["depends_on"]["postgres"] == {"condition": "service_healthy"}
    script = " ".join(command(migrate))
    assert script.index("manage.py migrate --noinput") < script.index("manage.py seed_demo")
    assert "&&" in script  # no seeding (and no servers) after a failed migration
    assert migrate.get("restart", "no") == "no"


def test_both_web_servers_share_one_database_and_one_redis_on_distinct_ports(services):
    environments = [services[name]["environment"] for name in APP]
    for key in ("DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY"):
        assert len({environment[key] for environment in environments}) == 1, key
    host_ports = [services[name]["ports"][0].split(":")[0] for name in WEB]
    assert host_ports == ["8001", "8002"]
    for name in WEB:
        assert services[name]["ports"][0].split(":")[1] == "8000"


def test_database_and_redis_urls_reach_the_compose_services(services):
    environment = services["web1"]["environment"]
    postgres = services["postgres"]["environment"]
    database = urlsplit(environment["DATABASE_URL"])
    assert database.scheme in {"postgres", "postgresql"}
    assert (database.hostname, database.port) == ("postgres", 5432)
    assert (database.username, database.password) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
    )
    assert database.path == "/" + postgres["POSTGRES_DB"]
    redis = urlsplit(environment["REDIS_URL"])
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)


def test_web_servers_accept_their_published_host_names(services):
    for name in WEB:
        environment = services[name]["environment"]
        hosts = environment["DJANGO_ALLOWED_HOSTS"].split(",")
        assert {"localhost", "127.0.0.1"} <= set(hosts)
        assert environment["DJANGO_SECRET_KEY"]


def test_every_process_runs_with_debug_off(services):
    # project/settings.py turns DEBUG on only for DJANGO_DEBUG=1 (`make run` sets it); DEBUG
    # would show tracebacks and settings to any client that causes an error.
    for name in APP:
        assert services[name]["environment"].get("DJANGO_DEBUG", "0") != "1", name


def test_web_servers_run_daphne_with_the_large_websocket_limits(services):
    for name in WEB:
        argv = command(services[name])
        assert argv[0] == "daphne"
        assert argv[-1] == "project.asgi:application"
        assert argv[argv.index("-b") + 1] == "0.0.0.0"
        assert argv[argv.index("-p") + 1] == "8000"
        assert argv[argv.index("--websocket-max-message-size") + 1] == "4194304"
        assert argv[argv.index("--websocket-max-frame-size") + 1] == "4194304"


def test_worker_runs_the_invalidator(services):
    assert command(services["worker"]) == ["python", "manage.py", "reactive_worker"]


class _Answer405(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(405)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_405() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer405)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def run_web_healthcheck(services: dict[str, dict[str, Any]], name: str, port: int) -> int:
    test = services[name]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    script = test[3]
    assert "http://127.0.0.1:8000/reactive/api/query" in script
    script = script.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30).returncode


@pytest.mark.parametrize("name", WEB)
def test_web_healthcheck_passes_on_any_http_answer_even_405(services, http_405, name):
    assert run_web_healthcheck(services, name, http_405) == 0


@pytest.mark.parametrize("name", WEB)
def test_web_healthcheck_fails_when_nothing_listens(services, name):
    assert run_web_healthcheck(services, name, free_port()) != 0


def test_image_installs_requirements_then_copies_the_repository():
    dockerfile = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    install = next(i for i, line in enumerate(lines) if "pip install" in line)
    assert "-r requirements.txt" in lines[install]
    assert lines.index("COPY requirements.txt .") < install < lines.index("COPY . .")


def test_image_leaves_out_the_local_virtualenv_and_databases():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "db.sqlite3*"} <= set(ignored)
