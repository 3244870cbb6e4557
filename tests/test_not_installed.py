"""A project that routes the socket and the HTTP API but leaves "reactive" out of INSTALLED_APPS.

No system check can say so (the app registers them), so the consumer and the views answer every
request with an error saying what to add, and the server logs it once. A real Daphne serves the
project's own ASGI application with tests.settings minus "reactive".
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest

from harness.ports import free_port
from harness.processes import ROOT, Process, daphne_command, django_env
from reactive.client import ReactiveClient, ReactiveClientError

# The subprocess runs the embedded default whatever the test run uses.
pytestmark = pytest.mark.embedded_only

ADVICE = 'The "reactive" app is not installed: add "reactive" to INSTALLED_APPS'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    folder = tmp_path_factory.mktemp("not-installed")
    (folder / "without_reactive.py").write_text(
        "from tests.settings import *  # noqa\n"
        'INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "reactive"]\n'
    )
    env = django_env(
        "without_reactive", REDIS_URL=None, DATABASE_URL=None, SQLITE_PATH=str(folder / "db.sqlite3")
    )
    env["PYTHONPATH"] = f"{ROOT}:{folder}"
    port = free_port()
    process = Process.start("daphne", daphne_command(port), env, folder / "daphne.log", port)
    try:
        process.wait_until_listening()
        yield process
    finally:
        process.stop()


def post_query(server: Process) -> tuple[int, dict]:
    body = json.dumps({"name": "tasks.list", "args": {}}).encode()
    request = Request(
        f"{server.http_url}/reactive/api/query", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except HTTPError as error:
        return error.code, json.loads(error.read())


async def test_every_request_is_answered_with_what_to_add_and_logged_once(server: Process) -> None:
    # The socket: the client's `connect` frame already gets the answer.
    with pytest.raises(ReactiveClientError) as raised:
        await ReactiveClient(server.ws_url, reconnect=False).connect()
    assert raised.value.code == "server_error"
    assert raised.value.message.startswith(ADVICE), raised.value.message

    # A subscription on a socket without `connect` gets it too, for its id.
    client = ReactiveClient(server.ws_url, send_connect=False, reconnect=False)
    await client.connect()
    try:
        subscription = client.subscribe("tasks.list")
        with pytest.raises(ReactiveClientError) as raised:
            await subscription.first()
        assert raised.value.message.startswith(ADVICE)
        await client.ping()  # pings are still answered: the socket itself is fine
    finally:
        await client.close()

    status, body = await asyncio.to_thread(post_query, server)
    assert status == 500
    assert body["ok"] is False and body["error"]["code"] == "server_error"
    assert body["error"]["message"].startswith(ADVICE), body

    # Once, however many requests (the log shows each record twice: its handler and Daphne's).
    logged = [line for line in server.output().splitlines() if ADVICE in line and "ERROR" in line]
    assert len(logged) == 1, server.output()
