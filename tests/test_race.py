"""Invariant 1: a write committed between a subscription's first run and the registration of
its read set is not missed. The invalidator's test hook commits that write deterministically."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import close_old_connections

from reactive.client import ReactiveClient
from reactive.invalidation import hooks
from tests import writes

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


def _commit_in_another_thread(func, **kwargs) -> None:
    def run() -> None:
        try:
            func(**kwargs)
        finally:
            close_old_connections()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()


async def test_write_between_first_run_and_read_set_registration_is_not_missed(inprocess_server):
    (channel,) = await asyncio.to_thread(writes.make_channels, count=1, messages=0)
    fired = threading.Event()

    def commit_a_message(batch) -> None:
        if batch.replies and not fired.is_set():
            fired.set()
            _commit_in_another_thread(writes.create, channel=channel)

    hooks.before_register = commit_a_message
    try:
        async with ReactiveClient(inprocess_server.ws_url) as client:
            count = client.subscribe("chat.message_count", {"channel": channel})
            # The first run saw no message; the write landed before its read set was registered.
            assert await count.first() == 0
            assert fired.is_set()
            await count.wait_for(lambda value: value == 1, timeout=10)
    finally:
        hooks.before_register = None
