"""Every ORM write path reaches subscribers, and a write elsewhere re-runs nothing.

Each path runs outside any mutation (autocommit or its own transaction), the way an admin view,
a management command or a shell writes.
"""

from __future__ import annotations

import pytest

from tests.writes import COLUMN_PATHS, M2M_PATHS, PATHS

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


# Updates assigning some columns only: the queries that read one of them converge, the others
# do not re-run. (What each query reads of chat_message: tests/testapp/functions.py.)
SHAPE_QUERIES = [
    "testapp.ids_by_body",  # channel_id, id; body in ORDER BY only
    "testapp.body_lengths",  # channel_id, id; body in an annotation only
    "testapp.newest_with_channel_name",  # channel_id, id, created; chat_channel.name via a join
    "testapp.edited_count",  # channel_id, edited
    "chat.message_count",  # channel_id
    "chat.list_messages",  # every column
]
RERUN = {
    "save_update_fields": {"testapp.ids_by_body", "testapp.body_lengths", "chat.list_messages"},
    # save() assigns every column; channel_id and edited, watched, are seen to keep their value.
    "save_unchanged": {
        "testapp.ids_by_body",
        "testapp.body_lengths",
        "testapp.newest_with_channel_name",
        "chat.list_messages",
    },
    "flag_one": {"testapp.edited_count", "chat.list_messages"},
    "shift_created": {"testapp.newest_with_channel_name", "chat.list_messages"},
    "rename_channel": {"testapp.newest_with_channel_name"},
}


@pytest.mark.parametrize("path", COLUMN_PATHS)
async def test_an_update_re_runs_the_queries_reading_a_column_it_assigned(harness, path):
    assert set(RERUN) == set(COLUMN_PATHS)
    channel, other = await harness.write("make_channels", count=2, messages=3)
    args = {"channel": channel}
    async with harness.client() as client:
        subscriptions = {name: client.subscribe(name, args) for name in SHAPE_QUERIES}
        for subscription in subscriptions.values():
            await subscription.first()
        marker = client.subscribe("chat.message_count", {"channel": other})
        assert await marker.first() == 3
        runs = {name: await harness.instance_runs(name, args) for name in SHAPE_QUERIES}

        await harness.write(path, channel=channel)
        # Records are matched in commit order: once a later write's update arrives, the path's
        # record has been matched and its re-runs made.
        await harness.write("create", channel=other)
        await marker.wait_for(lambda value: value == 4, timeout=10)

        for name, subscription in subscriptions.items():
            await _settled(harness, subscription, name, args)
        re_run = {name for name in SHAPE_QUERIES if await harness.instance_runs(name, args) > runs[name]}
        assert re_run == RERUN[path]
