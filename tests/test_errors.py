"""Every error code of PROTOCOL.md, provoked by a real bad frame over a real WebSocket.

Each test sends the offending frame, checks the exact ``error`` frame (code, a helpful message,
the ``id``/``request_id`` echoed when the frame carried a valid one), and then proves that the
connection still serves: a ``ping`` is answered and a fresh subscription gets its value.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest

from reactive.client import ReactiveClient, ReactiveClientError
from reactive.client.testing import InstrumentedClient

pytestmark = pytest.mark.asyncio

MAX_ID = 2**53 - 1
# Ids the client never allocates itself (it counts from 1), for raw subscribe frames.
RAW_ID = 900_000


# -- helpers -------------------------------------------------------------------------------


def is_error(frame: dict[str, Any]) -> bool:
    return frame.get("type") == "error"


async def send_expecting_error(client: InstrumentedClient, raw: Any, timeout: float = 10.0) -> dict[str, Any]:
    """Send ``raw`` as is; return the first ``error`` frame received after it."""
    mark = client.frames_received
    await client.send_raw(raw)
    return await client.next_frame(is_error, timeout=timeout, since=mark)


def assert_error_frame(
    frame: dict[str, Any],
    code: str,
    *,
    id: int | None = None,
    request_id: int | None = None,
    contains: str | None = None,
) -> dict[str, Any]:
    """The frame is exactly ``{"type": "error", "error": {...}}`` plus the expected reference."""
    expected_keys = {"type", "error"}
    if id is not None:
        expected_keys.add("id")
    if request_id is not None:
        expected_keys.add("request_id")
    assert frame["type"] == "error", frame
    assert set(frame) == expected_keys, frame
    if id is not None:
        assert frame["id"] == id, frame
    if request_id is not None:
        assert frame["request_id"] == request_id, frame
    error = frame["error"]
    assert_error_object(error, code, contains=contains)
    return error


def assert_error_object(error: Any, code: str, *, contains: str | None = None) -> None:
    assert isinstance(error, dict), error
    assert error["code"] == code, error
    assert set(error) <= {"code", "message", "data"}, error
    message = error["message"]
    assert isinstance(message, str), error
    assert len(message) >= 8, f"message is not helpful: {error!r}"
    if contains is not None:
        assert contains.lower() in message.lower(), error


async def assert_still_serves(client: ReactiveClient, number: int = 7) -> None:
    """The connection answers a ping and a fresh subscription gets its value."""
    await client.ping(timeout=10)
    subscription = client.subscribe("testapp.echo", {"number": number})
    assert await subscription.first(timeout=10) == number
    await subscription.unsubscribe()


async def transition_update(client: InstrumentedClient, sub_id: int, since: int) -> dict[str, Any]:
    """The first update for ``sub_id`` in a transition received after ``since``."""

    def carries(frame: dict[str, Any]) -> bool:
        return frame.get("type") == "transition" and any(
            update.get("id") == sub_id for update in frame.get("updates", [])
        )

    frame = await client.next_frame(carries, timeout=10, since=since)
    return next(update for update in frame["updates"] if update.get("id") == sub_id)


async def transition_error(client: InstrumentedClient, sub_id: int, since: int) -> dict[str, Any]:
    update = await transition_update(client, sub_id, since)
    assert set(update) == {"id", "error"}, update
    return update["error"]


async def token_for(client: ReactiveClient, prefix: str) -> str:
    token = await client.action("testapp.token_for", {"username": f"{prefix}-{uuid.uuid4().hex[:10]}"})
    assert isinstance(token, str) and token
    return token


def expose_errors(harness: Any) -> bool:
    """Whether the server under test includes exception text in ``server_error`` messages."""
    if harness.mode == "inprocess":
        from reactive.settings import reactive_settings

        return bool(reactive_settings.EXPOSE_ERRORS)
    # The Daphne subprocess runs tests.settings with this process's environment: REACTIVE sets
    # no EXPOSE_ERRORS, so it follows DEBUG, which follows DJANGO_DEBUG (default "0").
    return os.environ.get("DJANGO_DEBUG", "0") == "1"


def assert_no_traceback(message: str) -> None:
    assert "Traceback" not in message
    assert 'File "' not in message
    assert ".py" not in message
    assert "/work/" not in message and os.sep + "reactive" + os.sep not in message
    assert "line " not in message


# -- not JSON, not an object, unknown type ---------------------------------------------------


async def test_frame_that_is_not_json_gets_bad_message_and_connection_stays_open(harness):
    async with harness.client() as client:
        frame = await send_expecting_error(client, '{"type": "ping"')
        assert_error_frame(frame, "bad_message", contains="JSON")
        frame = await send_expecting_error(client, "hello there")
        assert_error_frame(frame, "bad_message", contains="JSON")
        await assert_still_serves(client)


@pytest.mark.parametrize(
    "raw",
    ['[{"type": "ping"}]', '"ping"', "42", "null", "true"],
    ids=["array", "string", "number", "null", "bool"],
)
async def test_json_that_is_not_an_object_gets_bad_message_and_connection_stays_open(harness, raw):
    async with harness.client() as client:
        frame = await send_expecting_error(client, raw)
        assert_error_frame(frame, "bad_message", contains="object")
        await assert_still_serves(client)


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "explode", "id": 3},
        {"type": "PING"},
        {"type": 5},
        {"no_type": True},
        {"type": None},
    ],
    ids=["unknown", "wrong-case", "number", "missing", "null"],
)
async def test_unknown_frame_type_gets_bad_message_and_connection_stays_open(harness, raw):
    async with harness.client() as client:
        frame = await send_expecting_error(client, raw)
        # The type is unknown, so no field of the frame is trusted; the message names the type.
        assert frame["type"] == "error"
        assert_error_object(frame["error"], "bad_message", contains="type")
        await assert_still_serves(client)


async def test_unknown_frame_type_is_named_in_the_message(harness):
    async with harness.client() as client:
        frame = await send_expecting_error(client, {"type": "explode"})
        assert_error_frame(frame, "bad_message", contains="explode")
        await assert_still_serves(client)


# -- missing and wrong-typed fields ----------------------------------------------------------


async def test_subscribe_without_id_gets_bad_message_naming_the_field(harness):
    async with harness.client() as client:
        frame = await send_expecting_error(
            client, {"type": "subscribe", "query": "testapp.echo", "args": {"number": 1}}
        )
        assert_error_frame(frame, "bad_message", contains="'id'")
        await assert_still_serves(client)


async def test_subscribe_without_query_gets_bad_message_with_its_id(harness):
    async with harness.client() as client:
        frame = await send_expecting_error(client, {"type": "subscribe", "id": RAW_ID, "args": {}})
        assert_error_frame(frame, "bad_message", id=RAW_ID, contains="'query'")
        await assert_still_serves(client)


async def test_mutation_without_name_gets_bad_message_with_its_request_id(harness):
    async with harness.client() as client:
        frame = await send_expecting_error(
            client, {"type": "mutation", "request_id": 4242, "args": {"text": "x"}}
        )
        assert_error_frame(frame, "bad_message", request_id=4242, contains="'name'")
        await assert_still_serves(client)


async def test_action_without_request_id_gets_bad_message(harness):
    async with harness.client() as client:
        frame = await send_expecting_error(client, {"type": "action", "name": "testapp.stats", "args": {}})
        assert_error_frame(frame, "bad_message", contains="'request_id'")
        await assert_still_serves(client)


@pytest.mark.parametrize(
    "bad_id",
    ["5", True, False, -1, 2**53, 2**60, 1.5, [1], {"id": 1}],
    ids=["string", "true", "false", "negative", "2**53", "2**60", "float", "list", "object"],
)
async def test_subscribe_with_wrong_typed_id_gets_bad_message_without_echoing_it(harness, bad_id):
    async with harness.client() as client:
        frame = await send_expecting_error(
            client, {"type": "subscribe", "id": bad_id, "query": "testapp.echo", "args": {"number": 1}}
        )
        # The id is not a valid id, so it is not echoed.
        assert_error_frame(frame, "bad_message", contains="'id'")
        await assert_still_serves(client)


async def test_subscribe_with_largest_valid_id_is_served(harness):
    async with harness.client() as client:
        mark = client.frames_received
        await client.send_raw(
            {"type": "subscribe", "id": MAX_ID, "query": "testapp.echo", "args": {"number": 3}}
        )
        update = await transition_update(client, MAX_ID, mark)
        assert update == {"id": MAX_ID, "value": 3}
        await assert_still_serves(client)


@pytest.mark.parametrize(
    "bad_request_id",
    ["1", True, -3, 2**53],
    ids=["string", "bool", "negative", "2**53"],
)
async def test_mutation_with_wrong_typed_request_id_gets_bad_message(harness, bad_request_id):
    async with harness.client() as client:
        frame = await send_expecting_error(
            client, {"type": "mutation", "request_id": bad_request_id, "name": "tasks.create", "args": {}}
        )
        assert_error_frame(frame, "bad_message", contains="'request_id'")
        await assert_still_serves(client)


@pytest.mark.parametrize("bad_args", [[1, 2], "number=1", 3], ids=["list", "string", "number"])
async def test_subscribe_with_args_not_an_object_gets_bad_message_with_its_id(harness, bad_args):
    async with harness.client() as client:
        frame = await send_expecting_error(
            client, {"type": "subscribe", "id": RAW_ID, "query": "testapp.echo", "args": bad_args}
        )
        assert_error_frame(frame, "bad_message", id=RAW_ID, contains="'args'")
        await assert_still_serves(client)


async def test_mutation_with_args_as_list_gets_bad_message_with_its_request_id(harness):
    async with harness.client() as client:
        frame = await send_expecting_error(
            client, {"type": "mutation", "request_id": 77, "name": "tasks.create", "args": ["x"]}
        )
        assert_error_frame(frame, "bad_message", request_id=77, contains="'args'")
        await assert_still_serves(client)


async def test_query_name_of_wrong_type_gets_bad_message_with_its_id(harness):
    async with harness.client() as client:
        frame = await send_expecting_error(
            client, {"type": "subscribe", "id": RAW_ID, "query": ["testapp.echo"], "args": {}}
        )
        assert_error_frame(frame, "bad_message", id=RAW_ID, contains="'query'")
        await assert_still_serves(client)


async def test_authenticate_with_token_of_wrong_type_gets_bad_message(harness):
    async with harness.client() as client:
        frame = await send_expecting_error(client, {"type": "authenticate", "token": 12345})
        assert_error_frame(frame, "bad_message", contains="'token'")
        await assert_still_serves(client)


async def test_duplicate_live_subscription_id_gets_bad_message_and_first_stays_live(harness):
    async with harness.client() as client:
        mark = client.frames_received
        await client.send_raw(
            {"type": "subscribe", "id": RAW_ID, "query": "testapp.echo", "args": {"number": 1}}
        )
        assert await transition_update(client, RAW_ID, mark) == {"id": RAW_ID, "value": 1}

        frame = await send_expecting_error(
            client, {"type": "subscribe", "id": RAW_ID, "query": "testapp.echo", "args": {"number": 2}}
        )
        assert_error_frame(frame, "bad_message", id=RAW_ID, contains="already")
        await assert_still_serves(client)

        # After unsubscribing, the id may be used again.
        await client.send_raw({"type": "unsubscribe", "id": RAW_ID})
        mark = client.frames_received
        await client.send_raw(
            {"type": "subscribe", "id": RAW_ID, "query": "testapp.echo", "args": {"number": 4}}
        )
        assert await transition_update(client, RAW_ID, mark) == {"id": RAW_ID, "value": 4}


async def test_unsubscribe_of_unknown_id_is_ignored(harness):
    async with harness.client() as client:
        mark = client.frames_received
        await client.send_raw({"type": "unsubscribe", "id": RAW_ID + 1})
        await assert_still_serves(client)
        received = list(client.frames)[mark:]
        assert not [frame for frame in received if frame["type"] == "error"], received


# -- connect -----------------------------------------------------------------------------------


async def test_connect_with_protocol_2_gets_bad_message_naming_the_supported_protocol(harness):
    async with harness.client() as client:
        frame = await send_expecting_error(
            client, {"type": "connect", "protocol": 2, "session_id": "a-good-session-id"}
        )
        error = assert_error_frame(frame, "bad_message", contains="protocol")
        assert "1" in error["message"]
        await assert_still_serves(client)


async def test_connect_as_first_frame_with_protocol_2_gets_bad_message(harness):
    client = InstrumentedClient(harness.server.ws_url, send_connect=False, reconnect=False)
    await client.connect()
    try:
        frame = await send_expecting_error(
            client, {"type": "connect", "protocol": 2, "session_id": "a-good-session-id"}
        )
        assert_error_frame(frame, "bad_message", contains="protocol")
        await assert_still_serves(client)
    finally:
        await client.close()


@pytest.mark.parametrize("session_id", ["abc", "", "x" * 65], ids=["3-chars", "empty", "65-chars"])
async def test_connect_with_session_id_of_wrong_length_gets_bad_message(harness, session_id):
    async with harness.client() as client:
        frame = await send_expecting_error(
            client, {"type": "connect", "protocol": 1, "session_id": session_id}
        )
        assert_error_frame(frame, "bad_message", contains="session_id")
        await assert_still_serves(client)


async def test_connect_without_session_id_gets_bad_message(harness):
    async with harness.client() as client:
        frame = await send_expecting_error(client, {"type": "connect", "protocol": 1})
        assert_error_frame(frame, "bad_message", contains="session_id")
        await assert_still_serves(client)


# -- binary frames -----------------------------------------------------------------------------


async def test_binary_frame_gets_bad_message_and_connection_stays_open(harness):
    async with harness.client() as client:
        frame = await send_expecting_error(client, b'{"type": "ping"}')
        assert_error_frame(frame, "bad_message", contains="binary")
        frame = await send_expecting_error(client, b"\x00\xff\xfe garbage")
        assert_error_frame(frame, "bad_message", contains="binary")
        await assert_still_serves(client)


# -- not_found ---------------------------------------------------------------------------------


async def test_subscribe_to_unknown_query_gets_not_found_with_its_id(harness):
    async with harness.client() as client:
        frame = await send_expecting_error(
            client, {"type": "subscribe", "id": RAW_ID, "query": "testapp.no_such_query", "args": {}}
        )
        assert_error_frame(frame, "not_found", id=RAW_ID, contains="testapp.no_such_query")
        await assert_still_serves(client)


async def test_subscribe_to_a_mutation_name_gets_not_found(harness):
    async with harness.client() as client:
        frame = await send_expecting_error(
            client,
            {
                "type": "subscribe",
                "id": RAW_ID,
                "query": "chat.send_message",
                "args": {"channel": 1, "body": "x"},
            },
        )
        assert_error_frame(frame, "not_found", id=RAW_ID, contains="chat.send_message")
        await assert_still_serves(client)


async def test_subscribe_through_client_api_to_unknown_query_raises_not_found(harness):
    async with harness.client() as client:
        subscription = client.subscribe("testapp.nope")
        with pytest.raises(ReactiveClientError) as excinfo:
            await subscription.first(timeout=10)
        assert excinfo.value.code == "not_found"
        await assert_still_serves(client)


async def test_query_name_used_as_a_mutation_gets_not_found_result(harness):
    async with harness.client() as client:
        result = await client.mutation_result("chat.list_channels", {})
        assert result["type"] == "mutation_result"
        assert result["ok"] is False
        assert set(result) == {"type", "request_id", "ok", "error"}, result
        assert_error_object(result["error"], "not_found", contains="chat.list_channels")
        await assert_still_serves(client)


async def test_unknown_mutation_gets_not_found_result(harness):
    async with harness.client() as client:
        result = await client.mutation_result("tasks.no_such_mutation", {})
        assert result["ok"] is False
        assert_error_object(result["error"], "not_found", contains="tasks.no_such_mutation")
        await assert_still_serves(client)


async def test_unknown_action_gets_not_found_result(harness):
    async with harness.client() as client:
        with pytest.raises(ReactiveClientError) as excinfo:
            await client.action("testapp.no_such_action", {})
        error = excinfo.value
        assert error.code == "not_found"
        assert error.frame["type"] == "action_result"
        assert error.frame["ok"] is False
        assert set(error.frame) == {"type", "request_id", "ok", "error"}, error.frame
        assert_error_object(error.frame["error"], "not_found", contains="testapp.no_such_action")
        await assert_still_serves(client)


async def test_query_name_used_as_an_action_gets_not_found_result(harness):
    async with harness.client() as client:
        with pytest.raises(ReactiveClientError) as excinfo:
            await client.action("tasks.list", {})
        assert excinfo.value.code == "not_found"
        await assert_still_serves(client)


# -- invalid_args ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"number": "x"}, "number"),
        ({"number": 11}, "number"),
        ({"number": -1}, "number"),
        ({}, "number"),
        ({"number": 1, "colour": "red"}, "colour"),
    ],
    ids=["wrong-type", "above-range", "below-range", "missing", "unknown-argument"],
)
async def test_subscribe_with_invalid_args_gets_invalid_args_with_field_errors(harness, args, field):
    async with harness.client() as client:
        frame = await send_expecting_error(
            client, {"type": "subscribe", "id": RAW_ID, "query": "testapp.echo", "args": args}
        )
        error = assert_error_frame(frame, "invalid_args", id=RAW_ID)
        data = error["data"]
        # DRF-shaped: field -> list of messages.
        assert isinstance(data, dict), error
        assert field in data, error
        for messages in data.values():
            assert isinstance(messages, list) and messages, error
            assert all(isinstance(message, str) and message for message in messages), error
        await assert_still_serves(client)


async def test_invalid_args_messages_say_what_is_wrong(harness):
    async with harness.client() as client:
        frame = await send_expecting_error(
            client, {"type": "subscribe", "id": RAW_ID, "query": "testapp.echo", "args": {"number": "x"}}
        )
        assert frame["error"]["data"] == {"number": ["A valid integer is required."]}

        frame = await send_expecting_error(
            client, {"type": "subscribe", "id": RAW_ID + 1, "query": "testapp.echo", "args": {"number": 11}}
        )
        assert frame["error"]["data"] == {"number": ["Ensure this value is less than or equal to 10."]}

        frame = await send_expecting_error(
            client,
            {
                "type": "subscribe",
                "id": RAW_ID + 2,
                "query": "testapp.echo",
                "args": {"number": 1, "colour": 1},
            },
        )
        assert frame["error"]["data"] == {"colour": ["Unknown argument."]}
        assert "colour" in frame["error"]["message"]
        await assert_still_serves(client)


async def test_mutation_with_invalid_args_gets_failed_result_with_field_errors(harness):
    async with harness.client() as client:
        result = await client.mutation_result("tasks.create", {"text": "x" * 501})
        assert result["ok"] is False
        assert_error_object(result["error"], "invalid_args")
        assert list(result["error"]["data"]) == ["text"]
        result = await client.mutation_result("tasks.create", {})
        assert result["ok"] is False
        assert result["error"]["data"] == {"text": ["This field is required."]}
        await assert_still_serves(client)


async def test_action_with_invalid_args_gets_failed_result_with_field_errors(harness):
    async with harness.client() as client:
        with pytest.raises(ReactiveClientError) as excinfo:
            await client.action("testapp.slow_action", {"seconds": 99})
        assert excinfo.value.code == "invalid_args"
        assert list(excinfo.value.data) == ["seconds"]
        await assert_still_serves(client)


# -- unauthenticated and forbidden ---------------------------------------------------------------


async def test_members_only_query_signed_out_is_an_unauthenticated_value_that_stays_live(harness):
    async with harness.client() as client:
        mark = client.frames_received
        subscription = client.subscribe("testapp.members_only")
        # Errors are values: the subscription's transition carries the error for its id.
        error = await transition_error(client, subscription.id, mark)
        assert_error_object(error, "unauthenticated")
        with pytest.raises(ReactiveClientError) as excinfo:
            await subscription.first()
        assert excinfo.value.code == "unauthenticated"
        await assert_still_serves(client)

        # The subscription stays live: signing in re-runs it and the value arrives.
        token = await token_for(client, "member")
        await client.authenticate(token)
        assert await subscription.wait_for(lambda value: value == "secret") == "secret"


async def test_authenticate_with_bad_token_gets_unauthenticated_error(harness):
    async with harness.client() as client:
        whoami = client.subscribe("testapp.whoami")
        assert await whoami.first() is None
        frame = await send_expecting_error(client, {"type": "authenticate", "token": "not-a-valid-token"})
        assert_error_frame(frame, "unauthenticated", contains="token")
        await assert_still_serves(client)
        # Still signed out.
        assert whoami.value is None
        members = client.subscribe("testapp.members_only")
        with pytest.raises(ReactiveClientError) as excinfo:
            await members.first()
        assert excinfo.value.code == "unauthenticated"


async def test_staff_only_query_is_forbidden_for_a_non_staff_user_and_reruns_on_identity_change(harness):
    async with harness.client() as client:
        token = await token_for(client, "plain")

        mark = client.frames_received
        subscription = client.subscribe("testapp.staff_only")
        assert_error_object(await transition_error(client, subscription.id, mark), "unauthenticated")

        mark = client.frames_received
        await client.authenticate(token)
        assert_error_object(await transition_error(client, subscription.id, mark), "forbidden")
        assert subscription.error["code"] == "forbidden"
        await assert_still_serves(client)

        mark = client.frames_received
        await client.authenticate(None)
        assert_error_object(await transition_error(client, subscription.id, mark), "unauthenticated")
        await assert_still_serves(client)


async def test_staff_only_query_subscribed_while_signed_in_as_non_staff_is_forbidden(harness):
    async with harness.client() as client:
        await client.authenticate(await token_for(client, "plain"))
        await client.ping()  # the authenticate frame is processed before later frames
        mark = client.frames_received
        subscription = client.subscribe("testapp.staff_only")
        assert_error_object(await transition_error(client, subscription.id, mark), "forbidden")
        await assert_still_serves(client)


# -- user_error --------------------------------------------------------------------------------


async def test_query_raising_reactive_error_sends_user_error_with_message_and_data(harness):
    async with harness.client() as client:
        mark = client.frames_received
        subscription = client.subscribe("testapp.fails", {"kind": "user_error"})
        error = await transition_error(client, subscription.id, mark)
        assert error == {
            "code": "user_error",
            "message": "Failed on purpose.",
            "data": {"kind": "user_error"},
        }
        await assert_still_serves(client)


async def test_mutation_raising_reactive_error_fails_and_rolls_back_its_write(harness):
    text = f"rolled back {uuid.uuid4().hex}"
    marker = f"committed {uuid.uuid4().hex}"
    async with harness.client() as client:
        tasks = client.subscribe("tasks.list")
        await tasks.first()

        result = await client.mutation_result("testapp.add_task_then_fail", {"text": text})
        assert result["type"] == "mutation_result"
        assert result["ok"] is False
        assert set(result) == {"type", "request_id", "ok", "error"}, result
        assert result["error"] == {"code": "user_error", "message": "Rolled back on purpose."}

        # A later commit is seen by the subscription; the failed mutation's task never is.
        await client.mutation("tasks.create", {"text": marker})
        value = await tasks.wait_for(lambda rows: any(row["text"] == marker for row in rows))
        assert not any(row["text"] == text for row in value)
        assert not any(row["text"] == text for row in await harness.fresh("tasks.list"))
        await assert_still_serves(client)


# -- server_error ------------------------------------------------------------------------------


async def test_crashing_query_sends_server_error_without_traceback(harness):
    async with harness.client() as client:
        mark = client.frames_received
        subscription = client.subscribe("testapp.fails", {"kind": "crash"})
        error = await transition_error(client, subscription.id, mark)
        assert error["code"] == "server_error"
        assert set(error) == {"code", "message"}, error
        message = error["message"]
        if expose_errors(harness):
            assert "RuntimeError" in message and "a bug in a query" in message, error
        else:
            assert message == "A server error occurred.", error
            assert "a bug in a query" not in message
        assert_no_traceback(message)
        await assert_still_serves(client)


async def test_query_that_writes_gets_server_error_and_writes_nothing(harness):
    async with harness.client() as client:
        mark = client.frames_received
        subscription = client.subscribe("testapp.fails", {"kind": "write"})
        error = await transition_error(client, subscription.id, mark)
        assert error["code"] == "server_error"
        assert "read-only" in error["message"], error
        assert_no_traceback(error["message"])
        await assert_still_serves(client)

        tasks = await client.query("tasks.list")
        assert not any(row["text"] == "written by a query" for row in tasks)
        assert not any(row["text"] == "written by a query" for row in await harness.fresh("tasks.list"))


# -- too_large ---------------------------------------------------------------------------------


def padded_ping(size: int) -> str:
    """A ``ping`` frame of exactly ``size`` bytes (ASCII)."""
    head, tail = '{"type":"ping","pad":"', '"}'
    text = head + "x" * (size - len(head) - len(tail)) + tail
    assert len(text.encode()) == size
    return text


async def test_frame_just_over_max_message_bytes_gets_too_large_and_connection_stays_open(harness):
    async with harness.client() as client:
        limit = client.connected["limits"]["max_message_bytes"]
        assert isinstance(limit, int) and limit > 0

        frame = await send_expecting_error(client, padded_ping(limit + 1), timeout=20)
        assert_error_frame(frame, "too_large", contains=str(limit))
        await assert_still_serves(client)


async def test_frame_of_exactly_max_message_bytes_is_accepted(harness):
    async with harness.client() as client:
        limit = client.connected["limits"]["max_message_bytes"]
        mark = client.frames_received
        await client.send_raw(padded_ping(limit))
        frame = await client.next_frame(lambda f: f["type"] in ("pong", "error"), since=mark, timeout=20)
        assert frame == {"type": "pong"}
        await assert_still_serves(client)


async def test_multibyte_frame_over_the_limit_in_bytes_gets_too_large(harness):
    async with harness.client() as client:
        limit = client.connected["limits"]["max_message_bytes"]
        # Fewer characters than the limit, more bytes: the limit is in bytes.
        head, tail = '{"type":"ping","pad":"', '"}'
        text = head + "\u00e9" * ((limit - len(head) - len(tail)) // 2 + 1) + tail
        assert len(text) <= limit < len(text.encode())
        frame = await send_expecting_error(client, text, timeout=20)
        assert_error_frame(frame, "too_large")
        await assert_still_serves(client)


# -- limit_exceeded ----------------------------------------------------------------------------


async def test_too_many_live_subscriptions_gets_limit_exceeded_with_its_id(harness):
    async with harness.client() as client:
        limit = client.connected["limits"]["max_subscriptions"]
        assert isinstance(limit, int) and limit > 0
        subscriptions = [client.subscribe("testapp.echo", {"number": i % 11}) for i in range(limit)]
        for i, subscription in enumerate(subscriptions):
            assert await subscription.first() == i % 11

        mark = client.frames_received
        extra = client.subscribe("testapp.echo", {"number": 1})
        frame = await client.next_frame(is_error, since=mark)
        assert_error_frame(frame, "limit_exceeded", id=extra.id, contains=str(limit))
        assert extra.error is not None and extra.error["code"] == "limit_exceeded"
        await extra.unsubscribe()
        await client.ping()

        # Unsubscribing one frees a slot: the connection serves a fresh subscription again.
        await subscriptions[0].unsubscribe()
        await assert_still_serves(client)


async def test_too_many_inflight_actions_get_limit_exceeded_and_the_rest_succeed(harness):
    count = 25
    gate = f"inflight-{uuid.uuid4().hex[:8]}"
    async with harness.client() as client:
        # Every admitted action waits at the gate: all 25 are in flight until the refused ones
        # are answered, however slowly the machine sends them.
        calls = [
            asyncio.ensure_future(client.action("testapp.wait_for_gate", {"key": gate}, timeout=60))
            for _ in range(count)
        ]
        pending = set(calls)
        while len(pending) > 20:  # until the 5 beyond the limit are refused
            done, pending = await asyncio.wait(pending, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            assert done, f"only {count - len(pending)} of {count} actions refused, 20 allowed in flight"
        await (await harness.control()).action("testapp.open_gate", {"key": gate}, timeout=30)
        outcomes = await asyncio.gather(*calls, return_exceptions=True)

        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        successes = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
        assert failures, "no request was refused although 25 were in flight against a limit of 20"
        for failure in failures:
            assert isinstance(failure, ReactiveClientError), repr(failure)
            assert failure.code == "limit_exceeded", repr(failure)
            assert failure.frame is not None
            assert failure.frame["type"] == "error"
            assert isinstance(failure.frame.get("request_id"), int)
            assert_error_frame(failure.frame, "limit_exceeded", request_id=failure.frame["request_id"])
        assert successes == [gate] * len(successes)
        assert len(successes) + len(failures) == count
        assert len(successes) >= 20 - 1  # the limit is 20 in flight; all admitted ones finish
        assert len(successes) <= 20

        # The refused request_ids are distinct requests of this client.
        refused = {failure.frame["request_id"] for failure in failures}
        assert len(refused) == len(failures)

        # With the slots free again, requests are admitted.
        assert await client.action("testapp.slow_action", {"seconds": 0}) == "done"
        await assert_still_serves(client)


# -- rate_limited ------------------------------------------------------------------------------


async def test_ping_flood_beyond_burst_gets_rate_limited_then_pings_work_again(harness, frozen_clock):
    # The bucket's clock stands still during the flood: exactly the burst is served, whatever
    # the machine's speed.
    flood = 6000
    async with harness.client() as client:
        answers = {"pong": 0, "rate_limited": 0, "other": 0}
        done = asyncio.Event()
        rate_limited_frames: list[dict[str, Any]] = []

        def count(frame: dict[str, Any]) -> None:
            if frame["type"] == "pong":
                answers["pong"] += 1
            elif frame["type"] == "error" and frame["error"].get("code") == "rate_limited":
                answers["rate_limited"] += 1
                if len(rate_limited_frames) < 5:
                    rate_limited_frames.append(frame)
            else:
                answers["other"] += 1
            if answers["pong"] + answers["rate_limited"] >= flood:
                done.set()

        client.on_frame(count)
        ping = '{"type":"ping"}'
        await asyncio.gather(*(client.send_raw(ping) for _ in range(flood)))
        # Every flooded frame gets exactly one answer: a pong or a rate_limited error.
        await asyncio.wait_for(done.wait(), timeout=60)
        # Exactly the burst is served (less the client's `connect` frame), the rest refused.
        assert answers["pong"] == 3000 - 1, answers
        assert answers["rate_limited"] == flood - answers["pong"], answers
        for frame in rate_limited_frames:
            assert_error_frame(frame, "rate_limited")

        await harness.clock(advance=1.0)  # a second's worth of tokens
        await assert_still_serves(client)
        assert answers["pong"] + answers["rate_limited"] == flood + 1, answers


async def test_rate_limited_frames_with_a_request_id_are_refused_with_that_request_id(harness, frozen_clock):
    # Each frame names a request and is answered once: bad_message (no "name") while the
    # bucket has tokens, rate_limited once it is empty. Either way the answer must name the
    # request, or a client waiting for that request never learns it was refused.
    flood = 6000
    first = 10_000
    async with harness.client() as client:
        answers: list[dict[str, Any]] = []
        done = asyncio.Event()

        def collect(frame: dict[str, Any]) -> None:
            if frame["type"] == "error":
                answers.append(frame)
                if len(answers) >= flood:
                    done.set()

        client.on_frame(collect)
        frames = [f'{{"type":"mutation","request_id":{first + i}}}' for i in range(flood)]
        await asyncio.gather(*(client.send_raw(frame) for frame in frames))
        await asyncio.wait_for(done.wait(), timeout=60)

        codes = [frame["error"]["code"] for frame in answers]
        assert set(codes) <= {"bad_message", "rate_limited"}, set(codes)
        assert "rate_limited" in codes, "the flood never hit the rate limit"
        unanswered = [frame for frame in answers if "request_id" not in frame]
        assert not unanswered, (
            f"{len(unanswered)} of {len(answers)} error frames name no request_id, e.g. {unanswered[0]!r}"
        )
        assert sorted(frame["request_id"] for frame in answers) == list(range(first, first + flood))
        for frame in answers:
            assert_error_frame(frame, frame["error"]["code"], request_id=frame["request_id"])

        await harness.clock(advance=1.0)
        await assert_still_serves(client)


# -- other clients are unaffected ----------------------------------------------------------------


async def _send_all(client: InstrumentedClient, frames: list[Any]) -> list[BaseException]:
    """Send every frame as is; return the failures (a dropped connection fails the rest)."""
    failures: list[BaseException] = []
    for frame in frames:
        try:
            await client.send_raw(frame)
        except ReactiveClientError as exc:
            failures.append(exc)
    return failures


async def test_abuse_on_one_connection_never_disturbs_another_client(harness):
    marker = f"after the abuse {uuid.uuid4().hex}"
    async with harness.client() as bystander, harness.client(reconnect=False) as abuser:
        tasks = bystander.subscribe("tasks.list")
        await tasks.first()
        limit = abuser.connected["limits"]["max_message_bytes"]

        frames: list[Any] = [
            "not json at all",
            b"\x00binary\xff",
            "[]",
            {"type": "subscribe", "id": -1, "query": "x"},
            {"type": "connect", "protocol": 2, "session_id": "abc"},
            {"type": "explode"},
            padded_ping(limit + 1),
            padded_ping(limit * 2),
            *(['{"type":"ping"}'] * 4000),
        ]
        abuse = asyncio.ensure_future(_send_all(abuser, frames))

        # The bystander still gets live updates while the abuse goes on, and its requests run.
        await bystander.ping()
        await bystander.mutation("tasks.create", {"text": marker})
        await tasks.wait_for(lambda rows: any(row["text"] == marker for row in rows))
        send_failures = await asyncio.wait_for(abuse, timeout=30)
        await assert_still_serves(bystander)
        assert bystander.reconnects == 0

        # The abuser was answered, never disconnected.
        assert send_failures == [], f"{len(send_failures)} frames not sent: {send_failures[:1]!r}"
        await asyncio.sleep(1.0)
        await assert_still_serves(abuser)
        codes = [frame["error"]["code"] for frame in abuser.frames if frame["type"] == "error"]
        assert codes.count("too_large") == 2, codes
        assert codes.count("bad_message") == 6, codes


async def test_oversized_frames_from_one_client_leave_a_concurrent_subscriber_live(harness):
    marker = f"oversized neighbour {uuid.uuid4().hex}"
    async with harness.client() as bystander, harness.client(reconnect=False) as abuser:
        tasks = bystander.subscribe("tasks.list")
        await tasks.first()
        limit = abuser.connected["limits"]["max_message_bytes"]
        abuse = asyncio.ensure_future(_send_all(abuser, [padded_ping(limit + 1)] * 5))

        await bystander.mutation("tasks.create", {"text": marker})
        await tasks.wait_for(lambda rows: any(row["text"] == marker for row in rows))
        send_failures = await asyncio.wait_for(abuse, timeout=30)
        await assert_still_serves(bystander)

        assert send_failures == [], f"{len(send_failures)} frames not sent: {send_failures[:1]!r}"
        await assert_still_serves(abuser)
        codes = [frame["error"]["code"] for frame in abuser.frames if frame["type"] == "error"]
        assert codes == ["too_large"] * 5, codes
