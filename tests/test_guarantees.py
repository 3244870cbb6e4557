"""PROTOCOL.md's guarantees, one test each, over real sockets (both harness modes)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

pytestmark = pytest.mark.asyncio


def transitions(client, since: int = 0) -> list[dict]:
    return [frame for frame in list(client.frames)[since:] if frame.get("type") == "transition"]


async def test_initial_value_arrives_before_any_update(harness):
    (a,) = await harness.write("make_channels", count=1, messages=3)
    async with harness.client() as client:
        count = client.subscribe("chat.message_count", {"channel": a})
        assert await count.first() == 3
        first = transitions(client)[0]
        assert first["updates"] == [{"id": count.id, "value": 3}]


async def test_rerun_with_equal_result_pushes_nothing(harness):
    (a,) = await harness.write("make_channels", count=1, messages=2)
    async with harness.client() as client:
        count = client.subscribe("chat.message_count", {"channel": a})
        await count.first()
        runs = await harness.instance_runs("chat.message_count", {"channel": a})
        # A message goes and another comes in one commit: the count re-runs but stays 2.
        await harness.write("replace_one", channel=a)
        await harness.wait_for_runs("chat.message_count", {"channel": a}, runs + 1)
        await harness.write("create", channel=a)
        await count.wait_for(lambda value: value == 3)
        assert count.updates == 2  # the initial value and 3; the equal re-run sent nothing


async def test_versions_never_decrease_on_a_connection(harness):
    channels = await harness.write("make_channels", count=3, messages=1)
    async with harness.client() as client:
        subscriptions = [client.subscribe("chat.list_messages", {"channel": c}) for c in channels]
        for subscription in subscriptions:
            await subscription.first()
        for round_ in range(5):
            for channel in channels:
                await client.mutation("chat.send_message", {"channel": channel, "body": f"r{round_}"})
            # A late subscriber to a live instance is served from the hub mid-stream.
            late = client.subscribe("chat.message_count", {"channel": channels[round_ % 3]})
            await late.first()
        for subscription, channel in zip(subscriptions, channels, strict=True):
            await subscription.wait_for(lambda value: len(value) == 6)
            assert subscription.value == await harness.fresh("chat.list_messages", {"channel": channel})
        versions = [frame["version"] for frame in transitions(client)]
        assert versions == sorted(versions)
        assert client.protocol_violations == []


async def test_one_commit_updates_all_its_subscriptions_in_one_transition(harness):
    (a,) = await harness.write("make_channels", count=1, messages=1)
    async with harness.client() as client:
        messages = client.subscribe("chat.list_messages", {"channel": a})
        count = client.subscribe("chat.message_count", {"channel": a})
        await messages.first()
        await count.first()
        mark = len(client.frames)
        await client.mutation("chat.send_message", {"channel": a, "body": "atomic"})
        changed = [frame for frame in transitions(client, mark) if frame["updates"]]
        assert len(changed) == 1
        assert {update["id"] for update in changed[0]["updates"]} == {messages.id, count.id}


async def test_mutation_result_follows_the_transitions_it_caused(harness):
    (a,) = await harness.write("make_channels", count=1, messages=0)
    async with harness.client() as client:
        count = client.subscribe("chat.message_count", {"channel": a})
        await count.first()
        for expected in range(1, 6):
            mark = len(client.frames)
            result = await client.mutation_result("chat.send_message", {"channel": a, "body": "mine"})
            assert result["ok"] is True
            # Read your own writes: by the time the result arrives, the value already shows it.
            assert count.value == expected
            frames = list(client.frames)[mark:]
            kinds = [frame["type"] for frame in frames]
            assert kinds.index("transition") < kinds.index("mutation_result")
            transition = next(frame for frame in frames if frame["type"] == "transition")
            assert transition["version"] <= result["version"]


async def test_mutation_replayed_with_same_session_and_request_id_runs_once(harness):
    session = uuid.uuid4().hex
    text = f"once-{session}"
    async with harness.client(session_id=session) as first:
        result = await first.mutation_result("testapp.add_task_counted", {"text": text})
        request_id = result["request_id"]
    async with harness.client(session_id=session) as second:
        await second.send_raw(
            {
                "type": "mutation",
                "request_id": request_id,
                "name": "testapp.add_task_counted",
                "args": {"text": text},
            }
        )
        replay = await second.next_frame(lambda f: f.get("type") == "mutation_result")
        assert replay["ok"] is True
        assert replay["value"] == result["value"]
        tasks = await second.query("tasks.list")
        assert [task["text"] for task in tasks].count(text) == 1
    # Another session with the same request id is a different mutation.
    async with harness.client() as other:
        other_value = await other.mutation("testapp.add_task_counted", {"text": text})
        assert other_value != result["value"]


async def test_mutations_of_a_connection_run_in_order(harness):
    (a,) = await harness.write("make_channels", count=1, messages=0)
    async with harness.client() as client:
        bodies = [f"m{i}" for i in range(20)]
        await asyncio.gather(
            *(client.mutation("chat.send_message", {"channel": a, "body": b}) for b in bodies)
        )
        messages = await client.query("chat.list_messages", {"channel": a})
        assert [m["body"] for m in messages] == bodies


async def test_query_error_is_a_value_and_the_subscription_stays_live(harness):
    text = f"task-{uuid.uuid4().hex}"
    async with harness.client() as client:
        subscription = client.subscribe("testapp.task_or_error", {"text": text})
        with pytest.raises(Exception) as raised:
            await subscription.first()
        assert raised.value.code == "user_error"
        assert subscription.error["data"] == {"text": text}
        task_id = await client.mutation("tasks.create", {"text": text})
        await subscription.wait_for(lambda value: value == task_id)
        assert subscription.error is None


async def test_fifty_sockets_on_one_instance_cost_one_run_per_commit(harness):
    (a,) = await harness.write("make_channels", count=1, messages=1)
    clients = [harness.client() for _ in range(50)]
    connected = [await c.__aenter__() for c in clients]
    try:
        subscriptions = [client.subscribe("chat.list_messages", {"channel": a}) for client in connected]
        await asyncio.gather(*(s.first() for s in subscriptions))
        runs = await harness.instance_runs("chat.list_messages", {"channel": a})
        for index in range(3):
            await connected[0].mutation("chat.send_message", {"channel": a, "body": f"fan-out {index}"})
            await asyncio.gather(*(s.wait_for(lambda v, n=index: len(v) == n + 2) for s in subscriptions))
        assert await harness.instance_runs("chat.list_messages", {"channel": a}) == runs + 3
    finally:
        for c in clients:
            await c.__aexit__(None, None, None)


async def test_sockets_sharing_an_instance_get_one_transition_each_with_their_own_ids(harness):
    (a,) = await harness.write("make_channels", count=1, messages=1)
    async with harness.client() as twice, harness.client() as other, harness.client() as plain:
        # The same instance under ids 1 and 2; under id 2 beside another query; under id 1.
        first, second = (twice.subscribe("chat.list_messages", {"channel": a}) for _ in range(2))
        count = other.subscribe("chat.message_count", {"channel": a})
        messages = other.subscribe("chat.list_messages", {"channel": a})
        alone = plain.subscribe("chat.list_messages", {"channel": a})
        for subscription in (first, second, count, messages, alone):
            await subscription.first()
        marks = {client: len(client.frames) for client in (twice, other, plain)}
        await plain.mutation("chat.send_message", {"channel": a, "body": "shared"})
        for subscription in (first, second, messages, alone):
            await subscription.wait_for(lambda value: len(value) == 2)
        await count.wait_for(lambda value: value == 2)
        listed = await harness.fresh("chat.list_messages", {"channel": a})
        expected = {
            twice: {first.id: listed, second.id: listed},
            other: {count.id: 2, messages.id: listed},
            plain: {alone.id: listed},
        }
        for client, values in expected.items():
            (changed,) = [frame for frame in transitions(client, marks[client]) if frame["updates"]]
            assert len(changed["updates"]) == len(values)
            assert {update["id"]: update["value"] for update in changed["updates"]} == values
            assert client.protocol_violations == []


async def test_only_queries_that_read_the_identity_rerun_on_authenticate(harness):
    username = f"user-{uuid.uuid4().hex[:8]}"
    async with harness.client() as control:
        token = await control.action("testapp.token_for", {"username": username})
    async with harness.client() as client:
        whoami = client.subscribe("testapp.whoami")
        channels = client.subscribe("chat.list_channels")
        assert await whoami.first() is None
        await channels.first()
        await client.authenticate(token)
        await whoami.wait_for(lambda value: value == username)
        assert channels.updates == 1
        await client.authenticate(None)
        await whoami.wait_for(lambda value: value is None)
        assert channels.updates == 1
