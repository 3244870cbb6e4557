"""A client that stops reading costs the server bounded memory, delays nobody, and catches up
with one transition once it reads again (on an ASGI server with back-pressure: uvicorn)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect

from harness.ports import free_port
from harness.processes import Process, uvicorn_command
from reactive.client import ReactiveClient
from reactive.client.testing import InstrumentedClient
from tests.conftest import migrated, server_env

pytestmark = pytest.mark.asyncio

BODY = "x" * 1500  # about 1.6 KB per message in a frame


@pytest.fixture
def uvicorn_server(tmp_path: Path):
    env = server_env(tmp_path / "db.sqlite3")
    migrated(env)
    port = free_port()
    argv = uvicorn_command(port, "--ws-max-size", "4194304", "--log-level", "warning")
    process = Process.start("uvicorn", argv, env, tmp_path / "uvicorn.log", port)
    try:
        process.wait_until_listening()
        yield port, process
    finally:
        process.stop()


async def test_client_that_stops_reading_costs_bounded_memory_and_catches_up(uvicorn_server):
    port, process = uvicorn_server
    url = f"ws://127.0.0.1:{port}/reactive/ws/"
    async with ReactiveClient(url) as control, InstrumentedClient(url) as fast:
        (channel,) = await control.action(
            "testapp.write", {"path": "make_channels", "kwargs": {"count": 1, "messages": 0}}
        )
        for _ in range(150):
            await control.mutation("chat.send_message", {"channel": channel, "body": BODY})
        args = {"channel": channel, "limit": 200}

        # No compression: the repetitive bodies would shrink to nothing and fit in kernel buffers.
        slow = await connect(url, origin=f"http://127.0.0.1:{port}", max_size=None, compression=None)
        await slow.send(
            orjson.dumps({"type": "subscribe", "id": 1, "query": "chat.list_messages", "args": args}).decode()
        )
        first = orjson.loads(await slow.recv())
        assert len(first["updates"][0]["value"]) == 150
        slow.transport.pause_reading()  # the client stops reading; the kernel buffers fill up

        watched = fast.subscribe("chat.list_messages", args)
        await watched.first()
        received_bytes = 0
        fast.on_frame(lambda frame: None)
        before = process.rss_kib()
        for index in range(200):
            await control.mutation("chat.send_message", {"channel": channel, "body": f"{index} {BODY}"})
            await watched.wait_for(lambda value, n=index: value[-1]["body"].startswith(f"{n} "), timeout=10)
            received_bytes += len(orjson.dumps(watched.value))
        growth_kib = process.rss_kib() - before
        expected = await control.action("testapp.fresh", {"name": "chat.list_messages", "args": args})
        assert watched.value == expected  # the fast client was never held back

        # The slow client missed ~60 MB of frames; the server kept a bounded amount of them.
        assert growth_kib * 1024 < received_bytes / 4, (growth_kib, received_bytes)

        slow.transport.resume_reading()
        versions = []
        while True:
            frame = orjson.loads(await asyncio.wait_for(slow.recv(), timeout=30))
            versions.append(frame["version"])
            if frame["type"] == "transition" and frame["updates"][0]["value"] == expected:
                break
        assert versions == sorted(versions)
        assert len(versions) < 200  # coalesced: not one frame per missed change
        await slow.close()
