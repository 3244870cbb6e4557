"""Four server processes on the embedded default, sharing one SQLite file: the oracle holds.

Each Daphne process tails the change log and re-runs what its own sockets watch. A hypothesis
state machine subscribes on every process and writes through every path from every process
(ORM write paths run inside a server, mutations sent to any server, and management commands
in processes of their own); once the writes settle, every live subscription's last value must
equal a fresh run of its query.

Bounded and replayable: a fixed number of examples, derandomized (one fixed seed).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from harness.processes import ROOT, Process, manage_command
from reactive.client.testing import InstrumentedClient
from tests.conftest import next_frame_of_any, server_env, start_daphne
from tests.test_oracle import (
    CHANNEL_QUERIES,
    GLOBAL_QUERIES,
    TEXT,
    WRITE_PATHS,
    LoopThread,
    _acting_on_a_deleted_row,
    _args,
)

pytestmark = pytest.mark.embedded_only

PROCESSES = 4
EXAMPLES = 20
SETTLE_SECONDS = 20.0


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Process], dict[str, str]]]:
    directory = tmp_path_factory.mktemp("four-processes")
    db_path = directory / "db.sqlite3"
    started: list[Process] = []
    try:
        for number in range(PROCESSES):
            log = directory / f"daphne-{number}.log"
            started.append(start_daphne(db_path, log, migrate=number == 0))
        yield started, server_env(Path(db_path))
    finally:
        for process in started:
            process.stop()
        for process in started:
            print(f"--- {process.log.name} ---\n{process.tail(30)}")


def make_machine(
    servers: list[Process], env: dict[str, str], loop: LoopThread
) -> type[RuleBasedStateMachine]:
    async def connect(server: Process) -> InstrumentedClient:
        client = InstrumentedClient(server.ws_url)
        await client.connect()
        return client

    def command(path: str, **kwargs: Any) -> Any:
        """A write from a management command: a process of its own on the shared database."""
        done = subprocess.run(
            manage_command("write_path", path, "--kwargs", json.dumps(kwargs)),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        return json.loads(done.stdout)

    class FourProcesses(RuleBasedStateMachine):
        @initialize()
        def setup(self) -> None:
            # One client per process; each is also the way to run writes inside its process.
            self.clients = [loop.run(connect(server)) for server in servers]
            self.channels: list[int] = loop.run(self._write(0, "make_channels", count=3, prefix="four"))
            self.live: list[tuple[Any, str, dict[str, Any]]] = []
            self.task_ids: list[int] = []

        async def _write(self, process: int, path: str, **kwargs: Any) -> Any:
            return await self.clients[process].action(
                "testapp.write", {"path": path, "kwargs": kwargs}, timeout=30
            )

        @rule(
            process=st.integers(0, PROCESSES - 1),
            query=st.sampled_from(CHANNEL_QUERIES),
            channel=st.integers(0, 2),
            variant=st.integers(0, 5),
        )
        def subscribe_channel_query(self, process: int, query: str, channel: int, variant: int) -> None:
            args = _args(query, self.channels[channel], variant)
            self.live.append((self.clients[process].subscribe(query, args), query, args))

        @rule(process=st.integers(0, PROCESSES - 1), query=st.sampled_from(GLOBAL_QUERIES))
        def subscribe_global_query(self, process: int, query: str) -> None:
            self.live.append((self.clients[process].subscribe(query, {}), query, {}))

        @precondition(lambda self: self.live)
        @rule(data=st.data())
        def unsubscribe(self, data: st.DataObject) -> None:
            subscription, _, _ = self.live.pop(data.draw(st.integers(0, len(self.live) - 1)))
            loop.run(subscription.unsubscribe())

        @rule(
            process=st.integers(0, PROCESSES - 1),
            path=st.sampled_from(WRITE_PATHS),
            channel=st.integers(0, 2),
        )
        def write_in_a_server(self, process: int, path: str, channel: int) -> None:
            try:
                loop.run(self._write(process, path, channel=self.channels[channel]))
            except Exception as exc:
                if not _acting_on_a_deleted_row(exc):
                    raise

        @rule(path=st.sampled_from(WRITE_PATHS), channel=st.integers(0, 2))
        def write_from_a_management_command(self, path: str, channel: int) -> None:
            try:
                command(path, channel=self.channels[channel])
            except RuntimeError as exc:
                if not _acting_on_a_deleted_row(exc):
                    raise

        @rule(process=st.integers(0, PROCESSES - 1), channel=st.integers(0, 2), body=TEXT)
        def send_message_mutation(self, process: int, channel: int, body: str) -> None:
            try:
                loop.run(
                    self.clients[process].mutation(
                        "chat.send_message", {"channel": self.channels[channel], "body": body}
                    )
                )
            except Exception as exc:
                if getattr(exc, "code", None) != "user_error":  # the channel was deleted
                    raise

        @rule(process=st.integers(0, PROCESSES - 1), text=TEXT)
        def create_task(self, process: int, text: str) -> None:
            self.task_ids.append(loop.run(self.clients[process].mutation("tasks.create", {"text": text})))

        @precondition(lambda self: self.task_ids)
        @rule(process=st.integers(0, PROCESSES - 1), data=st.data())
        def toggle_task(self, process: int, data: st.DataObject) -> None:
            task = data.draw(st.sampled_from(self.task_ids))
            loop.run(self.clients[process].mutation("tasks.toggle", {"id": task}))

        def teardown(self) -> None:
            if not hasattr(self, "clients"):
                return
            try:
                loop.run(self._settled(), timeout=SETTLE_SECONDS + 60)
                for client in self.clients:
                    assert client.protocol_violations == [], client.protocol_violations
            finally:
                for client in self.clients:
                    loop.run(client.close())

        async def _settled(self) -> None:
            deadline = time.monotonic() + SETTLE_SECONDS
            while True:
                marks = [client.frames_received for client in self.clients]
                stale = []
                for subscription, query, args in self.live:
                    expected = await self.clients[0].action("testapp.fresh", {"name": query, "args": args})
                    if subscription.error is not None or not subscription.has_value:
                        stale.append((subscription, subscription.error or "no value yet", expected))
                    elif subscription.value != expected:
                        stale.append((subscription, subscription.value, expected))
                if not stale:
                    return
                if time.monotonic() > deadline:
                    details = "\n".join(
                        f"  {sub.client.url} {sub.name} {sub.args}: pushed {got!r}, fresh run {want!r}"
                        for sub, got, want in stale
                    )
                    raise AssertionError(f"live subscriptions did not converge to a fresh run:\n{details}")
                await next_frame_of_any(self.clients, marks, deadline - time.monotonic())

    return FourProcesses


@pytest.mark.timeout(1200)
def test_four_processes_on_one_sqlite_file_converge_to_fresh_runs(servers) -> None:
    processes, env = servers
    loop = LoopThread()
    try:
        run_state_machine_as_test(
            make_machine(processes, env, loop),
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=12,
                deadline=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
                database=None,
            ),
        )
    finally:
        loop.close()
