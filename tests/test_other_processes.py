"""Commits from other processes reach a server's subscribers: a ``manage.py shell``, a management
command, and a writer killed the moment its COMMIT returned.

The server is a Daphne subprocess on a database of its own (the embedded default on SQLite in the
embedded pass; Redis with Postgres in the Redis pass), and the writers are ``manage.py``
subprocesses on the same database: they share nothing with the server but the database.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.processes import ROOT, Process, manage_command
from reactive.client.testing import InstrumentedClient
from tests.conftest import server_env, start_daphne

pytestmark = pytest.mark.asyncio


class Server:
    def __init__(self, process: Process, db_path: Path) -> None:
        self.process = process
        self.env = server_env(db_path)

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        """``manage.py`` in a process of its own, on the server's database."""
        return subprocess.run(
            manage_command(*args), cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60
        )

    def write(self, path: str, *options: str, **kwargs: Any) -> subprocess.CompletedProcess:
        return self.manage("write_path", path, "--kwargs", json.dumps(kwargs), *options)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("other-processes")
    db_path = directory / "db.sqlite3"
    process = start_daphne(db_path, directory / "daphne.log")
    try:
        yield Server(process, db_path)
    finally:
        process.stop()
        print(process.tail(60))


async def connect(server: Server) -> InstrumentedClient:
    client = InstrumentedClient(server.process.ws_url)
    await client.connect()
    return client


async def make_channel(client: InstrumentedClient) -> int:
    (channel,) = await client.action(
        "testapp.write", {"path": "make_channels", "kwargs": {"count": 1, "messages": 1}}, timeout=30
    )
    return channel


def succeeded(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


async def test_a_write_from_manage_py_shell_reaches_subscribers_and_later_ones(server: Server) -> None:
    client = await connect(server)
    try:
        channel = await make_channel(client)
        messages = client.subscribe("chat.list_messages", {"channel": channel})
        count = client.subscribe("chat.message_count", {"channel": channel})
        assert len(await messages.first()) == 1
        assert await count.first() == 1
        code = (
            "from project.chat.models import Message; "
            f"Message.objects.create(channel_id={channel}, body='from a shell')"
        )
        succeeded(await asyncio.to_thread(server.manage, "shell", "-c", code))
        await messages.wait_for(lambda value: [m["body"] for m in value] == ["seed 0", "from a shell"])
        await count.wait_for(lambda value: value == 2)

        # A later subscriber of the same queries (the server holds them live, with their last
        # value) gets the current value, not one from before the shell's commit.
        later = await connect(server)
        try:
            assert await later.subscribe("chat.message_count", {"channel": channel}).first() == 2
            assert await later.subscribe("chat.list_messages", {"channel": channel}).first() == messages.value
        finally:
            await later.close()
        assert client.protocol_violations == []
    finally:
        await client.close()


async def test_a_write_from_a_management_command_reaches_subscribers(server: Server) -> None:
    client = await connect(server)
    try:
        channel = await make_channel(client)
        count = client.subscribe("chat.message_count", {"channel": channel})
        assert await count.first() == 1
        succeeded(await asyncio.to_thread(server.write, "bulk_create", channel=channel))
        await count.wait_for(lambda value: value == 4)
        succeeded(await asyncio.to_thread(server.write, "queryset_delete", channel=channel))
        await count.wait_for(lambda value: value == 0)
    finally:
        await client.close()


async def test_a_writer_killed_right_after_commit_loses_nothing(server: Server) -> None:
    client = await connect(server)
    try:
        channel = await make_channel(client)
        messages = client.subscribe("chat.list_messages", {"channel": channel})
        assert len(await messages.first()) == 1
        killed = await asyncio.to_thread(server.write, "create", "--kill-after-commit", channel=channel)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        await messages.wait_for(lambda value: [m["body"] for m in value] == ["seed 0", "created"])
    finally:
        await client.close()


async def test_versions_keep_growing_across_a_server_restart(tmp_path: Path) -> None:
    db_path = tmp_path / "db.sqlite3"
    versions = []
    for run in range(2):
        process = start_daphne(db_path, tmp_path / f"daphne-{run}.log", migrate=run == 0)
        server = Server(process, db_path)
        try:
            client = await connect(server)
            try:
                channel = await make_channel(client)
                count = client.subscribe("chat.message_count", {"channel": channel})
                await count.first()
                succeeded(await asyncio.to_thread(server.write, "create", channel=channel))
                await count.wait_for(lambda value: value == 2)
                versions.append(count.version)
            finally:
                await client.close()
        finally:
            process.stop()
    # The version is the change log's position in the database, not a counter of the process.
    assert versions[1] > versions[0] > 0


async def test_a_flush_reaches_subscribers_and_writes_after_it_too(tmp_path: Path) -> None:
    # `manage.py flush` empties every table of the project and restarts their keys (SQLite:
    # sqlite_sequence). The change log keeps its records and its numbering: the flush itself is a
    # commit subscribers hear of, and so is every write after it.
    db_path = tmp_path / "db.sqlite3"
    process = start_daphne(db_path, tmp_path / "daphne.log")
    server = Server(process, db_path)
    try:
        client = await connect(server)
        try:
            channel = await make_channel(client)
            for _ in range(5):  # the log's position well past what a restarted numbering reaches
                succeeded(await asyncio.to_thread(server.write, "create", channel=channel))
            count = client.subscribe("chat.message_count", {"channel": channel})
            await count.wait_for(lambda value: value == 6)
            succeeded(await asyncio.to_thread(server.manage, "flush", "--no-input"))
            await count.wait_for(lambda value: value == 0)

            (channel,) = await client.action(
                "testapp.write", {"path": "make_channels", "kwargs": {"count": 1, "messages": 1}}, timeout=30
            )
            later = client.subscribe("chat.message_count", {"channel": channel})
            await later.wait_for(lambda value: value == 1)
            succeeded(await asyncio.to_thread(server.write, "create", channel=channel))
            await later.wait_for(lambda value: value == 2)
            assert client.protocol_violations == []
        finally:
            await client.close()
    finally:
        process.stop()
