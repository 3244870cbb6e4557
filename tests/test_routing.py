"""A WebSocket to a path nothing serves is refused under both ASGI servers: a 403, one
``Not Found`` line in the log, no traceback or error, and the server goes on serving its own
path."""

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
    for path in UNROUTED:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(_url(server, path), origin=f"http://127.0.0.1:{server.port}"):
                pass
        assert refused.value.response.status_code == 403, path
    log = server.output()
    for path in UNROUTED:
        assert f"Not Found: WebSocket {path}\n" in log, path
    assert "Traceback" not in log
    assert "No route found" not in log
    assert "ERROR" not in log  # nor the ASGI server's complaint about the handshake

    # A path that decodes to a line break is logged escaped: no line of the log is forged.
    with pytest.raises(InvalidStatus):
        async with connect(_url(server, "/ws%0Aforged-line"), origin=f"http://127.0.0.1:{server.port}"):
            pass
    log = server.output()
    assert "Not Found: WebSocket /ws\\nforged-line\n" in log
    assert not any(line.startswith("forged-line") for line in log.splitlines())

    # The server still serves its own path.
    assert server.alive()
    async with connect(_url(server, "/reactive/ws/"), origin=f"http://127.0.0.1:{server.port}") as socket:
        await socket.send(
            orjson.dumps({"type": "connect", "protocol": 1, "session_id": "a-session-of-a-user"}).decode()
        )
        assert orjson.loads(await socket.recv())["type"] == "connected"
