"""PROTOCOL.md's HTTP endpoints (``POST /reactive/api/query|mutation|action``) over real HTTP.

Requests go through ``urllib.request`` in a worker thread, against both servers of the harness.
No request carries a session cookie or a CSRF token: token and anonymous API calls must not
need one.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from reactive.client.testing import InstrumentedClient

pytestmark = pytest.mark.asyncio


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]
    raw: bytes


def _post(url: str, data: bytes, headers: dict[str, str]) -> Reply:
    request = urllib.request.Request(url, data=data, method="POST")
    for key, value in headers.items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw, response_headers = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        status, raw, response_headers = error.code, error.read(), dict(error.headers)
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    return Reply(status, body, response_headers, raw)


async def post(
    harness: Any,
    kind: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """POST to ``/reactive/api/<kind>``: ``body`` as JSON, or ``raw`` bytes as they are."""
    url = f"{harness.server.http_url}/reactive/api/{kind}"
    data = raw if raw is not None else json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    all_headers.update(headers or {})
    return await asyncio.to_thread(_post, url, data, all_headers)


def assert_ok(reply: Reply, value: Any = ..., *, mutation: bool = False) -> Any:
    assert reply.status == 200, (reply.status, reply.raw[:500])
    body = reply.body
    assert isinstance(body, dict), reply.raw[:500]
    assert body["ok"] is True, body
    expected_keys = {"ok", "value", "version"} if mutation else {"ok", "value"}
    assert set(body) == expected_keys, body
    if mutation:
        version = body["version"]
        assert isinstance(version, int) and not isinstance(version, bool), body
        assert 0 <= version < 2**53, body
    if value is not ...:
        assert body["value"] == value, body
    return body["value"]


def assert_failed(reply: Reply, status: int, code: str, *, contains: str | None = None) -> dict[str, Any]:
    """``{"ok": false, "error": {"code", "message", "data"?}}`` with the matching status."""
    assert reply.status == status, (reply.status, reply.raw[:500])
    body = reply.body
    assert isinstance(body, dict), (reply.status, reply.raw[:500])
    assert set(body) == {"ok", "error"}, body
    assert body["ok"] is False, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert error.get("code") == code, body
    assert set(error) <= {"code", "message", "data"}, body
    assert isinstance(error.get("message"), str) and len(error["message"]) >= 8, body
    assert reply.headers.get("Content-Type", "").startswith("application/json"), reply.headers
    if contains is not None:
        assert contains.lower() in error["message"].lower(), body
    return error


async def token_for(harness: Any, prefix: str = "http-user") -> tuple[str, str]:
    """A username and a bearer token for a new non-staff user, made over the WebSocket."""
    username = f"{prefix}-{uuid.uuid4().hex[:10]}"
    async with harness.client() as client:
        token = await client.action("testapp.token_for", {"username": username})
    assert isinstance(token, str) and token
    return username, token


# -- success shapes ----------------------------------------------------------------------------


async def test_query_over_http_returns_ok_and_value(harness):
    assert_ok(await post(harness, "query", {"name": "testapp.echo", "args": {"number": 4}}), 4)


async def test_query_over_http_without_args_uses_empty_args(harness):
    value = assert_ok(await post(harness, "query", {"name": "tasks.list"}))
    assert isinstance(value, list)
    assert_ok(await post(harness, "query", {"name": "tasks.list", "args": None}))


async def test_mutation_over_http_returns_value_and_integer_version(harness):
    text = f"http task {uuid.uuid4().hex}"
    reply = await post(harness, "mutation", {"name": "tasks.create", "args": {"text": text}})
    task_id = assert_ok(reply, mutation=True)
    assert isinstance(task_id, int)
    first_version = reply.body["version"]

    tasks = assert_ok(await post(harness, "query", {"name": "tasks.list", "args": {}}))
    assert {"id": task_id, "text": text, "completed": False} in tasks

    # A later commit has a larger version.
    reply = await post(harness, "mutation", {"name": "tasks.toggle", "args": {"id": task_id}})
    assert assert_ok(reply, mutation=True) is True
    assert reply.body["version"] > first_version


async def test_action_over_http_returns_ok_and_value(harness):
    assert_ok(await post(harness, "action", {"name": "testapp.slow_action", "args": {"seconds": 0}}), "done")


async def test_mutation_over_http_reaches_a_websocket_subscriber(harness):
    text = f"pushed from http {uuid.uuid4().hex}"
    async with harness.client() as client:
        tasks = client.subscribe("tasks.list")
        await tasks.first()
        reply = await post(harness, "mutation", {"name": "tasks.create", "args": {"text": text}})
        task_id = assert_ok(reply, mutation=True)
        value = await tasks.wait_for(lambda rows: any(row["text"] == text for row in rows), timeout=10)
        assert {"id": task_id, "text": text, "completed": False} in value
        assert tasks.version is not None and tasks.version >= reply.body["version"]
        assert client.protocol_violations == []


# -- bad_message -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["query", "mutation", "action"])
async def test_body_that_is_not_json_is_bad_message(harness, kind):
    assert_failed(
        await post(harness, kind, raw=b'{"name": "tasks.list"'), 400, "bad_message", contains="JSON"
    )


@pytest.mark.parametrize(
    "body",
    [["tasks.list"], "tasks.list", 42, None],
    ids=["array", "string", "number", "null"],
)
async def test_body_that_is_not_an_object_is_bad_message(harness, body):
    assert_failed(await post(harness, "query", body), 400, "bad_message", contains="object")


@pytest.mark.parametrize(
    "body",
    [{"args": {}}, {"name": None, "args": {}}, {"name": 5, "args": {}}, {}],
    ids=["missing", "null", "number", "empty"],
)
async def test_body_without_a_string_name_is_bad_message(harness, body):
    assert_failed(await post(harness, "mutation", body), 400, "bad_message", contains="name")


@pytest.mark.parametrize("args", [[1], "number=1", 7], ids=["list", "string", "number"])
async def test_args_that_are_not_an_object_are_bad_message(harness, args):
    reply = await post(harness, "query", {"name": "testapp.echo", "args": args})
    assert_failed(reply, 400, "bad_message", contains="args")


async def test_empty_body_is_bad_message(harness):
    assert_failed(await post(harness, "query", raw=b""), 400, "bad_message")


# -- not_found ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("query", "testapp.no_such_query"),
        ("mutation", "tasks.no_such_mutation"),
        ("action", "testapp.no_such_action"),
        ("query", "chat.send_message"),
        ("mutation", "chat.list_channels"),
        ("action", "tasks.create"),
        ("mutation", "testapp.slow_action"),
    ],
    ids=[
        "unknown-query",
        "unknown-mutation",
        "unknown-action",
        "mutation-as-query",
        "query-as-mutation",
        "mutation-as-action",
        "action-as-mutation",
    ],
)
async def test_unknown_name_or_wrong_kind_is_not_found(harness, kind, name):
    assert_failed(await post(harness, kind, {"name": name, "args": {}}), 404, "not_found", contains=name)


# -- invalid_args ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"number": "x"}, {"number": ["A valid integer is required."]}),
        ({"number": 11}, {"number": ["Ensure this value is less than or equal to 10."]}),
        ({}, {"number": ["This field is required."]}),
        ({"number": 1, "colour": "red"}, {"colour": ["Unknown argument."]}),
    ],
    ids=["wrong-type", "out-of-range", "missing", "unknown-argument"],
)
async def test_invalid_args_is_400_with_drf_shaped_field_errors(harness, args, expected):
    reply = await post(harness, "query", {"name": "testapp.echo", "args": args})
    error = assert_failed(reply, 400, "invalid_args")
    assert error["data"] == expected


async def test_mutation_with_invalid_args_is_400_and_writes_nothing(harness):
    reply = await post(harness, "mutation", {"name": "tasks.create", "args": {"text": "x" * 501}})
    error = assert_failed(reply, 400, "invalid_args")
    assert list(error["data"]) == ["text"]
    assert all(isinstance(message, str) for message in error["data"]["text"])


# -- authentication ----------------------------------------------------------------------------


async def test_members_only_signed_out_is_401_unauthenticated(harness):
    reply = await post(harness, "query", {"name": "testapp.members_only", "args": {}})
    assert_failed(reply, 401, "unauthenticated")


async def test_bad_bearer_token_is_401_unauthenticated(harness):
    reply = await post(harness, "query", {"name": "testapp.whoami", "args": {}}, token="not-a-valid-token")
    assert_failed(reply, 401, "unauthenticated", contains="token")


async def test_malformed_authorization_header_is_401_unauthenticated(harness):
    reply = await post(
        harness, "query", {"name": "testapp.whoami", "args": {}}, headers={"Authorization": "Bearer a b"}
    )
    assert_failed(reply, 401, "unauthenticated")


async def test_bearer_token_identifies_the_caller(harness):
    username, token = await token_for(harness, "bearer")
    assert_ok(await post(harness, "query", {"name": "testapp.whoami", "args": {}}, token=token), username)
    assert_ok(
        await post(harness, "query", {"name": "testapp.members_only", "args": {}}, token=token), "secret"
    )
    # Without the header the same query sees nobody.
    assert_ok(await post(harness, "query", {"name": "testapp.whoami", "args": {}}), None)


async def test_staff_only_with_a_non_staff_bearer_token_is_403_forbidden(harness):
    _, token = await token_for(harness, "not-staff")
    reply = await post(harness, "query", {"name": "testapp.staff_only", "args": {}}, token=token)
    assert_failed(reply, 403, "forbidden")


async def test_staff_only_signed_out_is_401_unauthenticated(harness):
    reply = await post(harness, "query", {"name": "testapp.staff_only", "args": {}})
    assert_failed(reply, 401, "unauthenticated")


async def test_mutation_needing_a_user_is_401_when_signed_out(harness):
    reply = await post(harness, "mutation", {"name": "chat.join_channel", "args": {"channel": 1}})
    assert_failed(reply, 401, "unauthenticated")


# -- user_error and server_error -----------------------------------------------------------------


async def test_query_raising_reactive_error_is_400_user_error_with_message_and_data(harness):
    reply = await post(harness, "query", {"name": "testapp.fails", "args": {"kind": "user_error"}})
    error = assert_failed(reply, 400, "user_error")
    assert error == {"code": "user_error", "message": "Failed on purpose.", "data": {"kind": "user_error"}}


async def test_mutation_raising_reactive_error_is_400_user_error_and_rolls_back(harness):
    text = f"http rolled back {uuid.uuid4().hex}"
    reply = await post(harness, "mutation", {"name": "testapp.add_task_then_fail", "args": {"text": text}})
    error = assert_failed(reply, 400, "user_error")
    assert error == {"code": "user_error", "message": "Rolled back on purpose."}
    tasks = assert_ok(await post(harness, "query", {"name": "tasks.list", "args": {}}))
    assert not any(row["text"] == text for row in tasks)


async def test_crashing_query_is_500_server_error_without_traceback(harness):
    reply = await post(harness, "query", {"name": "testapp.fails", "args": {"kind": "crash"}})
    error = assert_failed(reply, 500, "server_error")
    message = error["message"]
    assert "Traceback" not in message
    assert 'File "' not in message
    assert ".py" not in message
    assert b"Traceback" not in reply.raw


async def test_query_that_writes_is_500_server_error_and_writes_nothing(harness):
    reply = await post(harness, "query", {"name": "testapp.fails", "args": {"kind": "write"}})
    assert_failed(reply, 500, "server_error")
    tasks = assert_ok(await post(harness, "query", {"name": "tasks.list", "args": {}}))
    assert not any(row["text"] == "written by a query" for row in tasks)


# -- too_large ---------------------------------------------------------------------------------


async def test_body_over_max_message_bytes_is_413_too_large(harness):
    async with harness.client() as client:
        limit = client.connected["limits"]["max_message_bytes"]
    head = b'{"name": "testapp.echo", "args": {"number": 1}, "pad": "'
    raw = head + b"x" * (limit + 1 - len(head) - 2) + b'"}'
    assert len(raw) == limit + 1
    assert_failed(await post(harness, "query", raw=raw), 413, "too_large")


async def test_body_of_two_mebibytes_is_413_too_large(harness):
    raw = b'{"name": "tasks.create", "args": {"text": "' + b"x" * (2 * 1024 * 1024) + b'"}}'
    assert_failed(await post(harness, "mutation", raw=raw), 413, "too_large")


# -- CSRF ----------------------------------------------------------------------------------------


async def test_api_calls_without_session_cookie_need_no_csrf_token(harness):
    # A browser-like Origin and Referer on a cross-site POST without a session are still fine:
    # there is no session to ride on.
    reply = await post(
        harness,
        "mutation",
        {"name": "tasks.create", "args": {"text": f"no csrf {uuid.uuid4().hex}"}},
        headers={"Origin": harness.server.http_url},
    )
    assert_ok(reply, mutation=True)
    _, token = await token_for(harness, "csrf")
    reply = await post(
        harness, "mutation", {"name": "tasks.create", "args": {"text": "with token"}}, token=token
    )
    assert_ok(reply, mutation=True)


async def test_websocket_and_http_agree_on_a_query_value(harness):
    assert_ok(await post(harness, "query", {"name": "testapp.echo", "args": {"number": 9}}), 9)
    client = InstrumentedClient(harness.server.ws_url)
    async with client:
        assert await client.query("testapp.echo", {"number": 9}) == 9
