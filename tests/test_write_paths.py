"""Every ORM write path reaches subscribers, and a write elsewhere re-runs nothing.

Each path runs outside any mutation (autocommit or its own transaction), the way an admin view,
a management command or a shell writes.
"""

from __future__ import annotations

import pytest

from tests.writes import M2M_PATHS, PATHS

pytestmark = pytest.mark.asyncio

TABLE_WIDE_PATHS = {"raw_sql"}


async def _settled(harness, subscription, name: str, args: dict) -> None:
    expected = await harness.fresh(name, args)
    await subscription.wait_for(lambda value: value == expected, timeout=10)


@pytest.mark.parametrize("path", sorted(PATHS))
async def test_write_path_reaches_subscriber_and_spares_other_channels(harness, path):
    a, b = await harness.write("make_channels", count=2, messages=2)
    async with harness.client() as client:
        messages_a = client.subscribe("chat.list_messages", {"channel": a})
        count_a = client.subscribe("chat.message_count", {"channel": a})
        messages_b = client.subscribe("chat.list_messages", {"channel": b})
        before_a = await messages_a.first()
        await count_a.first()
        await messages_b.first()
        runs_b = await harness.instance_runs("chat.list_messages", {"channel": b})

        await harness.write(path, channel=a)

        await _settled(harness, messages_a, "chat.list_messages", {"channel": a})
        await _settled(harness, count_a, "chat.message_count", {"channel": a})
        assert messages_a.value != before_a
        runs_b_after = await harness.instance_runs("chat.list_messages", {"channel": b})
        if path in TABLE_WIDE_PATHS:
            # Raw SQL is a write to the whole table: B re-runs once, and pushes nothing.
            assert runs_b_after == runs_b + 1
            assert messages_b.updates == 1
        else:
            assert runs_b_after == runs_b


async def test_row_moving_between_channels_updates_both(harness):
    a, b = await harness.write("make_channels", count=2, messages=2)
    async with harness.client() as client:
        count_a = client.subscribe("chat.message_count", {"channel": a})
        count_b = client.subscribe("chat.message_count", {"channel": b})
        assert await count_a.first() == 2
        assert await count_b.first() == 2
        await harness.write("move_out", channel=a, to=b)
        await count_a.wait_for(lambda value: value == 1)
        await count_b.wait_for(lambda value: value == 3)


@pytest.mark.parametrize("path", M2M_PATHS)
async def test_many_to_many_path_reaches_subscriber_and_spares_other_channels(harness, path):
    a, b = await harness.write("make_channels", count=2, messages=0)
    await harness.write("m2m_set", channel=a)  # some members to remove or clear
    async with harness.client() as client:
        members_a = client.subscribe("chat.channel_members", {"channel": a})
        members_b = client.subscribe("chat.channel_members", {"channel": b})
        before = await members_a.first()
        await members_b.first()
        runs_b = await harness.instance_runs("chat.channel_members", {"channel": b})

        await harness.write(path, channel=a)

        await _settled(harness, members_a, "chat.channel_members", {"channel": a})
        assert members_a.value != before
        assert await harness.instance_runs("chat.channel_members", {"channel": b}) == runs_b


async def test_inner_savepoint_rollback_pushes_only_the_outer_write(harness):
    (a,) = await harness.write("make_channels", count=1, messages=0)
    async with harness.client() as client:
        messages = client.subscribe("chat.list_messages", {"channel": a})
        assert await messages.first() == []
        await harness.write("inner_rollback", channel=a)
        await messages.wait_for(lambda value: len(value) == 1)
        assert [m["body"] for m in messages.value] == ["outer"]
        assert await harness.fresh("chat.list_messages", {"channel": a}) == messages.value


async def test_outer_rollback_pushes_nothing(harness):
    (a,) = await harness.write("make_channels", count=1, messages=1)
    async with harness.client() as client:
        messages = client.subscribe("chat.list_messages", {"channel": a})
        await messages.first()
        runs = await harness.instance_runs("chat.list_messages", {"channel": a})
        await harness.write("outer_rollback", channel=a)
        # A later committed write proves the pipeline moved past the rolled-back one.
        await harness.write("create", channel=a)
        await messages.wait_for(lambda value: len(value) == 2)
        assert [m["body"] for m in messages.value] == ["seed 0", "created"]
        assert messages.updates == 2  # the first value and the one commit, nothing else
        assert await harness.instance_runs("chat.list_messages", {"channel": a}) == runs + 1
