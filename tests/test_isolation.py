"""One client's input or load never harms another client, and never the connection itself.

Each test runs against the in-process server and a Daphne subprocess (the ``harness``), on
both backends. What a client sends is answered on the request it concerns; the connection, its
mutation runner and every other client go on.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from websockets.asyncio.client import connect as ws_connect

from reactive.client import ReactiveClient, ReactiveClientError
from reactive.client.testing import InstrumentedClient
from reactive.server import consumer as consumer_module

pytestmark = pytest.mark.asyncio

HUGE = "9999999999999999999999999"  # 10**25 - 1 as text: DRF's IntegerField accepts it


async def raw_answer(client: InstrumentedClient, frame: str, **reference: int) -> dict[str, Any]:
    """Send a raw frame; the first frame that answers it (names its id or request_id)."""
    ((key, value),) = reference.items()

    def answers(frame: dict[str, Any]) -> bool:
        if frame.get(key) == value:
            return True
        updates = frame.get("updates") if frame.get("type") == "transition" else None
        return key == "id" and any(update.get("id") == value for update in updates or ())

    since = client.frames_received
    await client.send_raw(frame)
    return await client.next_frame(answers, since=since, timeout=20)


async def refused_connection(url: str, headers: dict[str, str] | None = None) -> tuple[dict[str, Any], int]:
    """Open a raw socket that the server is expected to refuse: its error frame and close code."""
    origin = "http://" + url.split("//", 1)[1].split("/", 1)[0]
    async with ws_connect(url, origin=origin, additional_headers=headers) as ws:
        frame = orjson.loads(await ws.recv())
        await ws.wait_closed()
        return frame, ws.close_code


async def channel_with_counter(harness) -> tuple[int, ReactiveClient, Any]:
    """A fresh channel, and a watcher client subscribed to its message count."""
    (channel,) = await harness.write("make_channels", count=1, messages=0)
    watcher = ReactiveClient(harness.server.ws_url)
    await watcher.connect()
    count = watcher.subscribe("chat.message_count", {"channel": channel})
    assert await count.first() == 0
    return channel, watcher, count


async def test_integers_beyond_64_bits_get_invalid_args_and_the_connection_goes_on(harness):
    (channel,) = await harness.write("make_channels", count=1, messages=0)
    async with harness.client() as client:
        for _ in range(2):  # the mutation runner survives: the second gets its answer too
            with pytest.raises(ReactiveClientError) as refused:
                await client.mutation("chat.send_message", {"channel": HUGE, "body": "x"}, timeout=20)
            assert refused.value.code == "invalid_args"
        huge_number = await raw_answer(
            client,
            '{"type":"mutation","request_id":901,"name":"chat.send_message",'
            f'"args":{{"channel":{HUGE}{HUGE},"body":"x"}}}}',
            request_id=901,
        )
        assert huge_number["type"] == "mutation_result" and huge_number["ok"] is False
        assert huge_number["error"]["code"] == "invalid_args"

        subscription = client.subscribe("chat.list_messages", {"channel": HUGE})
        with pytest.raises(ReactiveClientError) as refused:
            await subscription.first(timeout=20)
        assert refused.value.code == "invalid_args"

        assert await client.mutation("chat.send_message", {"channel": channel, "body": "fine"}, timeout=20)
        assert await client.subscribe("chat.message_count", {"channel": channel}).first() == 1


async def test_results_and_error_data_beyond_64_bits_are_delivered(harness):
    # (The client decodes JSON numbers beyond 64 bits as floats, as JavaScript does.)
    async with harness.client() as client:
        assert await client.subscribe("testapp.big_number", {"kind": "value"}).first() == float(10**30)
        with pytest.raises(ReactiveClientError) as failed:
            await client.subscribe("testapp.big_number", {"kind": "error"}).first()
        assert failed.value.code == "user_error" and failed.value.data == {"n": float(10**30)}


async def test_a_deep_unknown_key_in_nested_arguments_harms_no_one(harness):
    channel, watcher, count = await channel_with_counter(harness)
    try:
        async with harness.client() as client:
            deep = "[" * 300 + "]" * 300
            answer = await raw_answer(
                client,
                '{"type":"subscribe","id":5,"query":"chat.paginated_messages","args":'
                f'{{"channel":{channel},"pagination":{{"num_items":5,"junk":{deep}}}}}}}',
                id=5,
            )
            # The unknown key is not part of the validated arguments: a page, like any other.
            (update,) = [u for u in answer["updates"] if u["id"] == 5]
            assert update["value"]["page"] == []
            mark = client.frames_received
            await client.mutation("chat.send_message", {"channel": channel, "body": "after"}, timeout=20)
            assert await count.wait_for(lambda n: n == 1, timeout=20) == 1
            page = await client.next_frame(
                lambda f: f.get("type") == "transition" and any(u["id"] == 5 for u in f["updates"]),
                since=mark,
                timeout=20,
            )
            assert [m["body"] for m in page["updates"][0]["value"]["page"]] == ["after"]
    finally:
        await watcher.close()


async def test_slow_actions_of_one_client_leave_threads_for_everyone_else(harness):
    channel, watcher, count = await channel_with_counter(harness)
    gate = f"gate-{uuid.uuid4().hex[:8]}"
    flooders = [InstrumentedClient(harness.server.ws_url) for _ in range(3)]
    actions: list[asyncio.Task] = []
    try:
        for flooder in flooders:
            await flooder.connect()
        limit = settings.REACTIVE["MAX_INFLIGHT_REQUESTS"]
        for flooder in flooders:
            actions += [
                asyncio.create_task(flooder.action("testapp.wait_for_gate", {"key": gate}, timeout=60))
                for _ in range(limit)
            ]
        # Every one of those waits; another client's mutation and its update go through.
        async with harness.client() as other:
            await other.mutation("chat.send_message", {"channel": channel, "body": "meanwhile"}, timeout=30)
        assert await count.wait_for(lambda n: n == 1, timeout=30) == 1
        assert not any(action.done() for action in actions)
        control = await harness.control()
        await control.action("testapp.open_gate", {"key": gate}, timeout=30)
        assert await asyncio.gather(*actions) == [gate] * len(actions)
    finally:
        for action in actions:
            action.cancel()
        await asyncio.gather(*(flooder.close() for flooder in flooders), watcher.close())


async def test_arguments_are_bounded_per_subscription_and_per_connection(harness):
    limits = settings.REACTIVE
    per_subscription = limits.get("MAX_ARGS_BYTES", 64 * 1024)
    async with harness.client() as client:
        too_big = await raw_answer(
            client,
            orjson.dumps(
                {
                    "type": "subscribe",
                    "id": 1,
                    "query": "testapp.task_or_error",
                    "args": {"text": "x" * per_subscription},
                }
            ).decode(),
            id=1,
        )
        assert too_big["type"] == "error" and too_big["error"]["code"] == "too_large"

        text = "y" * (per_subscription - 100)
        answers = []
        for sub_id in range(10, 40):
            frame = {
                "type": "subscribe",
                "id": sub_id,
                "query": "testapp.task_or_error",
                "args": {"text": text + str(sub_id)},
            }
            answers.append(await raw_answer(client, orjson.dumps(frame).decode(), id=sub_id))
            if answers[-1]["type"] == "error":
                break
        refused = answers[-1]
        assert refused["type"] == "error" and refused["error"]["code"] == "limit_exceeded", refused
        accepted = len(answers) - 1
        assert accepted * (per_subscription - 100) <= limits.get("MAX_CONNECTION_ARGS_BYTES", 1024 * 1024)

        # Unsubscribing gives the room back.
        await client.send_raw('{"type":"unsubscribe","id":10}')
        again = {
            "type": "subscribe",
            "id": 99,
            "query": "testapp.task_or_error",
            "args": {"text": text + "again"},
        }
        answer = await raw_answer(client, orjson.dumps(again).decode(), id=99)
        assert answer["type"] == "transition", answer


def answer_since(client: InstrumentedClient, since: int, request_id: int) -> dict[str, Any] | None:
    """The frame naming ``request_id`` among those received after the mark ``since``, if any."""
    received = client.frames_received - since
    recent = list(client.frames)[-received:] if received else []
    return next((frame for frame in recent if frame.get("request_id") == request_id), None)


async def test_requests_in_flight_are_bounded_in_bytes(harness):
    gate = f"gate-{uuid.uuid4().hex[:8]}"
    padding = "p" * (900 * 1024)
    async with harness.client() as client:
        waiting = []
        refused = None
        for request_id in range(1, 20):
            frame = {
                "type": "action",
                "request_id": request_id,
                "name": "testapp.wait_for_gate",
                "args": {"key": gate, "padding": padding},
            }
            since = client.frames_received
            await client.send_raw(orjson.dumps(frame).decode())
            # The server admits or refuses a request as it reads it, frames in order: once a
            # later ping is answered, a refusal would have come before the pong.
            await client.ping(timeout=30)
            refused = answer_since(client, since, request_id)
            if refused is not None:
                break
            waiting.append(request_id)
        assert refused is not None and refused["error"]["code"] == "limit_exceeded", refused
        assert len(waiting) * len(padding) <= 8 * 1024 * 1024
        control = await harness.control()
        await control.action("testapp.open_gate", {"key": gate}, timeout=30)
        await client.ping(timeout=30)


# Connection caps count this process's connections: only the in-process server lets the test
# read the count and lower the cap.


@pytest.mark.django_db(transaction=True)
async def test_connections_per_client_address_are_capped(inprocess_server):
    open_now = consumer_module._per_address.count(("address", "127.0.0.1"))
    cap = open_now + 2
    with override_settings(REACTIVE={**settings.REACTIVE, "MAX_CONNECTIONS_PER_ADDRESS": cap}):
        allowed = [InstrumentedClient(inprocess_server.ws_url, reconnect=False) for _ in range(2)]
        try:
            for client in allowed:
                await client.connect()
            frame, code = await refused_connection(inprocess_server.ws_url)
            assert frame["error"]["code"] == "limit_exceeded"
            assert "address" in frame["error"]["message"]
            assert code == consumer_module.CLOSE_TOO_MANY_CONNECTIONS
            await allowed[0].close()
            again = InstrumentedClient(inprocess_server.ws_url, reconnect=False)
            await again.connect()
            await again.ping(timeout=10)
            await again.close()
        finally:
            await asyncio.gather(*(c.close() for c in allowed), return_exceptions=True)


@pytest.mark.django_db(transaction=True)
async def test_connections_per_user_are_capped(inprocess_server):
    def session_cookie() -> str:
        user = get_user_model().objects.create_user(username=f"capped-{uuid.uuid4().hex[:6]}")
        browser = Client()
        browser.force_login(user)
        return browser.cookies[settings.SESSION_COOKIE_NAME].value

    cookie = await asyncio.to_thread(session_cookie)
    headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}
    with override_settings(REACTIVE={**settings.REACTIVE, "MAX_CONNECTIONS_PER_USER": 2}):
        clients = [
            InstrumentedClient(inprocess_server.ws_url, headers=headers, reconnect=False) for _ in range(2)
        ]
        try:
            for client in clients:
                await client.connect()
            assert await clients[1].subscribe("testapp.whoami").first() is not None
            frame, code = await refused_connection(inprocess_server.ws_url, headers)
            assert frame["error"]["code"] == "limit_exceeded"
            assert "user" in frame["error"]["message"]
            assert code == consumer_module.CLOSE_TOO_MANY_CONNECTIONS
            anonymous = InstrumentedClient(inprocess_server.ws_url, reconnect=False)
            await anonymous.connect()
            await anonymous.ping(timeout=10)
            await anonymous.close()
        finally:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
