"""Safe by default: a server started any other way than ``make run`` runs with DEBUG off, and
the demo still serves its page and its JavaScript client.

The Daphne server of the test harness runs the project's settings as a deployment would (no
``DJANGO_DEBUG``), over real HTTP and a real WebSocket.
"""

from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.request

import pytest

from harness.processes import Process
from tests.conftest import Harness

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(os.environ.get("DJANGO_DEBUG") == "1", reason="this shell turns DEBUG on"),
]


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


async def test_a_crash_shows_clients_no_exception_text(socket_server: Process):
    harness = Harness("socket", socket_server)
    try:
        async with harness.client() as client:
            with pytest.raises(Exception) as raised:
                await client.query("testapp.fails", {"kind": "crash"})
        assert raised.value.code == "server_error"
        assert "a bug in a query" not in str(raised.value)
        assert "RuntimeError" not in str(raised.value)
    finally:
        await harness.close()


async def test_an_unknown_page_is_a_plain_404_without_debug_details(socket_server: Process):
    status, _, body = await asyncio.to_thread(get, socket_server.http_url + "/no-such-page/")
    assert status == 404
    assert b"DEBUG = True" not in body
    assert b"urlpatterns" not in body


async def test_the_demo_page_and_its_client_are_served_without_debug(socket_server: Process):
    status, content_type, page = await asyncio.to_thread(get, socket_server.http_url + "/")
    assert status == 200 and content_type.startswith("text/html")
    assert b"/static/reactive/client.js" in page
    for path in ("/static/reactive/client.js", "/static/reactive/internal/socket_manager.js"):
        status, content_type, script = await asyncio.to_thread(get, socket_server.http_url + path)
        assert status == 200, path
        assert "javascript" in content_type, (path, content_type)
        assert b"export" in script
    # Only static files: a path that climbs out of them is refused.
    climbing = socket_server.http_url + "/static/../../project/settings.py"
    status, _, body = await asyncio.to_thread(get, climbing)
    assert status in (400, 404)
    assert b"SECRET_KEY" not in body
