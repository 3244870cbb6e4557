"""Invariant 1: a write committed between a subscription's first run and the registration of
its read set is not missed. The invalidator's test hook commits that write deterministically."""

from __future__ import annotations

import asyncio
import threading

import pytest

from reactive.client.testing import InstrumentedClient
from reactive.engine.instances import SHARED, instance_base, instance_id
from reactive.engine.invalidator import hooks
from reactive.functions.registry import get_function
from tests import writes
from tests.conftest import commit_in_another_thread

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def test_write_between_first_run_and_read_set_registration_is_not_missed(inprocess_server):
    (channel,) = await asyncio.to_thread(writes.make_channels, count=1, messages=0)
    # An instance no other test uses (database ids restart after each test's flush).
    args = {"channel": channel, "limit": 137}
    canonical = get_function("chat.list_messages", "query").validate(args).canonical
    watched = instance_id(instance_base("chat.list_messages", canonical), SHARED)
    fired = threading.Event()

    def commit_a_message(batch) -> None:
        # Only in the pass that first ran this subscription (other tests' leftovers may run too).
        if any(reply.instance_id == watched for reply in batch.replies) and not fired.is_set():
            fired.set()
            commit_in_another_thread(writes.create, channel=channel)

    hooks.before_register = commit_a_message
    try:
        async with InstrumentedClient(inprocess_server.ws_url) as client:
            messages = client.subscribe("chat.list_messages", args)
            # The first run saw no message; the write landed before its read set was registered
            # and must still reach the subscriber.
            await messages.wait_for(lambda value: len(value) == 1, timeout=10)
            assert fired.is_set()
            values = [
                update["value"]
                for frame in client.frames
                if frame["type"] == "transition"
                for update in frame["updates"]
                if update["id"] == messages.id
            ]
            assert values[0] == [], values  # the first run ran before the write
            assert len(values[-1]) == 1
    finally:
        hooks.before_register = None
