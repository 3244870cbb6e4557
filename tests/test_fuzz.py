"""Random frames from one client never stop another client's updates, nor grow the server.

Hypothesis generates frames of every shape: valid and invalid types and fields, random JSON
arguments with deep nesting, integers beyond 64 bits, odd unicode and lone surrogates, names of
real functions and of none. One client sends them while another client's subscription must
receive every update a third client's mutations cause. Both harness modes, both backends.
Generation is seeded: a failure prints ``FUZZ_SEED=<n>``; set it to replay the same run.
"""

from __future__ import annotations

import json
import os
import random

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from harness.procfs import rss_kib
from reactive.client import ReactiveClient
from reactive.client.testing import InstrumentedClient
from tests.conftest import Harness, LoopThread

SEED = int(os.environ.get("FUZZ_SEED") or random.randrange(2**32))
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
# Growth of the server process's memory over the whole run that counts as unbounded.
RSS_GROWTH_LIMIT_KIB = 96 * 1024

# Functions a fuzzing client may name: every one answers quickly, none changes server-wide state
# (the rate-limit clock, gates, the test-only write helpers).
NAMES = [
    "chat.list_messages",
    "chat.message_count",
    "chat.paginated_messages",
    "chat.send_message",
    "chat.create_channel",
    "chat.edit_message",
    "tasks.list",
    "testapp.echo",
    "testapp.fails",
    "testapp.big_number",
    "testapp.whoami",
    "testapp.fresh",
]

integers = st.integers(min_value=-(10**30), max_value=10**30) | st.integers(min_value=-5, max_value=50)
scalars = (
    st.none()
    | st.booleans()
    | integers
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=25,
)
names = st.sampled_from(NAMES) | st.text(max_size=30)
frame_types = st.sampled_from(
    ["subscribe", "unsubscribe", "mutation", "action", "authenticate", "ping", "connect", "bogus"]
)
frames = st.fixed_dictionaries(
    {"type": frame_types | scalars},
    optional={
        "id": integers | scalars,
        "request_id": integers | scalars,
        "query": names | scalars,
        "name": names | scalars,
        "args": st.dictionaries(
            st.sampled_from(["channel", "body", "text", "number", "kind", "pagination", "limit"])
            | st.text(max_size=8),
            json_values,
            max_size=4,
        )
        | json_values,
        "token": st.text(max_size=60) | scalars,
        "protocol": integers | scalars,
        "session_id": st.text(max_size=70),
    },
)


def _deep(depth: int) -> str:
    return (
        '{"type":"subscribe","id":1,"query":"chat.paginated_messages","args":{"channel":1,"pagination":{"num_items":2,"x":'
        + "[" * depth
        + "]" * depth
        + "}}}"
    )


raw_texts = st.one_of(
    frames.map(lambda frame: json.dumps(frame, ensure_ascii=False)),
    frames.map(lambda frame: json.dumps(frame)),  # \\u escapes, lone surrogates included
    st.integers(min_value=200, max_value=1500).map(_deep),
    st.text(max_size=200),
    st.sampled_from(
        ["", "null", "[]", "{}", '{"type":"ping"', '{"type":"subscribe","id":1e400}', '"\\ud800"']
    ),
)


class Fuzz:
    """The clients of one run: a fuzzer, a watcher of one channel's count, and a writer."""

    def __init__(self, harness: Harness, loop: LoopThread) -> None:
        self.harness, self.loop = harness, loop
        self.sent_messages = 0

    async def start(self) -> None:
        (self.channel,) = await self.harness.write("make_channels", count=1, messages=0)
        self.fuzzer = InstrumentedClient(self.harness.server.ws_url)
        self.watcher = ReactiveClient(self.harness.server.ws_url)
        self.writer = ReactiveClient(self.harness.server.ws_url)
        for client in (self.fuzzer, self.watcher, self.writer):
            await client.connect()
        self.count = self.watcher.subscribe("chat.message_count", {"channel": self.channel})
        await self.count.first()

    async def example(self, texts: list[str]) -> None:
        seen: list[int] = []
        for text in texts:
            await self.fuzzer.send_raw(text)
        for index in range(2):
            await self.writer.mutation(
                "chat.send_message", {"channel": self.channel, "body": f"w{index}"}, timeout=30
            )
            self.sent_messages += 1
            # Every update reaches the watcher, whatever the fuzzer sent meanwhile.
            seen.append(await self.count.wait_for(lambda n: n >= self.sent_messages, timeout=30))
        expected = await self.harness.fresh("chat.message_count", {"channel": self.channel})
        assert await self.count.wait_for(lambda n: n == expected, timeout=30) == expected
        assert seen == sorted(seen)
        # The fuzzer's connection still serves (it was never closed on it).
        if self.fuzzer.is_connected:
            await self.fuzzer.ping(timeout=30)

    async def close(self) -> None:
        for client in (self.fuzzer, self.watcher, self.writer):
            await client.close()


@pytest.mark.timeout(900)
def test_random_frames_of_one_client_never_stop_another_clients_updates(harness_server):
    harness = Harness(*harness_server)
    loop = LoopThread()
    fuzz = Fuzz(harness, loop)
    popen = getattr(harness.server, "popen", None)
    pid = popen.pid if popen is not None else os.getpid()  # in-process: the server is this process
    try:
        loop.run(fuzz.start())
        rss_before = rss_kib(pid)

        @seed(SEED)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(texts=st.lists(raw_texts, min_size=1, max_size=25))
        def run(texts: list[str]) -> None:
            loop.run(fuzz.example(texts), timeout=120)

        try:
            run()
        except BaseException:
            print(f"\nFuzz failed ({harness.mode}); replay with FUZZ_SEED={SEED}")
            raise
        growth = rss_kib(pid) - rss_before
        assert growth < RSS_GROWTH_LIMIT_KIB, f"the server grew by {growth} KiB over the run"
    finally:
        loop.run(fuzz.close())
        loop.run(harness.close())
        loop.close()
