"""A WebSocket to a path nothing serves is refused as an unknown page is, under both ASGI servers:
a clear status and one ``Not Found`` line in the log, no traceback, and the server goes on
serving its own path."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from harness.ports import free_port
from harness.processes import Process, uvicorn_command
from tests.conftest import migrated, server_env, start_daphne

pytestmark = pytest.mark.asyncio

UNROUTED = ["/ws/reactive/", "/", "/reactive/ws/more/", "/reactive/wss/", "/reactive/ws"]


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    directory = tmp_path_factory.mktemp(f"routing-{request.param}")
    if request.param == "daphne":
        process = start_daphne(directory / "db.sqlite3", directory / "server.log")
    else:
        env = server_env(directory / "db.sqlite3")
        migrated(env)
        port = free_port()
        process = Process.start("uvicorn", uvicorn_command(port), env, directory / "server.log", port)
        process.wait_until_listening()
    try:
        yield process
    finally:
        process.stop()


def _url(server: Process, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


async def test_an_unrouted_path_is_refused_without_a_traceback(server: Process) -> None:
    # Daphne cannot answer a handshake with a response of the application's: it refuses with 403.
    expected = 403 if server.name == "daphne" else 404
    for path in UNROUTED:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(_url(server, path), origin=f"http://127.0.0.1:{server.port}"):
                pass
        assert refused.value.response.status_code == expected, path
        if expected == 404:
            assert b"no WebSocket is served at this path" in refused.value.response.body
    log = server.output()
    for path in UNROUTED:
        assert f"Not Found: WebSocket {path}\n" in log, path
    assert "Traceback" not in log
    assert "No route found" not in log

    # The server still serves its own path.
    assert server.alive()
    async with connect(_url(server, "/reactive/ws/"), origin=f"http://127.0.0.1:{server.port}") as socket:
        await socket.send(
            orjson.dumps({"type": "connect", "protocol": 1, "session_id": "a-session-of-a-user"}).decode()
        )
        assert orjson.loads(await socket.recv())["type"] == "connected"
