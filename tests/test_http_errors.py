"""Every answer of the HTTP API has the protocol's JSON shape, whatever the request.

Malformed bodies (deep nesting, invalid UTF-8, lone surrogates, numbers out of range), other
content types and methods, a refused CSRF check, an unexpected exception: each is answered
``{"ok": false, "error": {"code", "message", "data"?}}`` with its status, never an HTML page or
DRF's ``{"detail": ...}``. Requests go over real HTTP (``http.client``, for full control of
the method, headers and bytes) to both servers of the harness.
"""

from __future__ import annotations

import asyncio
import http.client
import http.cookiejar
import json
import urllib.error
import urllib.request
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Harness
from tests.test_admin import AdminBrowser
from tests.test_http_api import Reply, assert_failed, assert_ok

ERROR_CODES = {
    "bad_message",
    "not_found",
    "invalid_args",
    "unauthenticated",
    "forbidden",
    "user_error",
    "server_error",
    "too_large",
    "limit_exceeded",
    "rate_limited",
}


def send(
    base_url: str,
    path: str = "/reactive/api/query",
    body: bytes | None = b"",
    *,
    method: str = "POST",
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> Reply:
    """One HTTP request exactly as given; the answer with its headers (case-insensitive)."""
    parts = urlsplit(base_url)
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        raw = response.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        return Reply(response.status, parsed, response.msg, raw)  # type: ignore[arg-type]
    finally:
        connection.close()


async def asend(harness: Harness, *args: Any, **kwargs: Any) -> Reply:
    return await asyncio.to_thread(send, harness.server.http_url, *args, **kwargs)


def envelope(args_json: str, name: str = "testapp.echo") -> bytes:
    return f'{{"name": "{name}", "args": {args_json}}}'.encode()


# -- bodies that are not JSON a client may send ------------------------------------------------


DEEP = 5000

MALFORMED = {
    "nested-5000-deep-args": envelope('{"number": ' + "[" * DEEP + "]" * DEEP + "}"),
    "nested-5000-deep-body": b"[" * DEEP + b"]" * DEEP,
    "nested-5000-deep-objects": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "lone-surrogate-argument-name": b'{"name":"chat.list_messages","args":{"\\ud800":1}}',
    "lone-surrogate-function-name": b'{"name":"chat.\\udfff","args":{}}',
    "surrogate-as-utf-8-bytes": b'{"name":"chat.list_messages","args":{"\xed\xa0\x80":1}}',
    "invalid-utf-8": b'{"name":"\xff\xfe","args":{}}',
    "number-1e400": envelope('{"number": 1e400}'),
    "nan": envelope('{"number": NaN}'),
    "truncated": b'{"name": "testapp.echo", "args": {"number": 1',
    "trailing-garbage": envelope('{"number": 1}') + b" }",
    "bom-and-json": b"\xef\xbb\xbf" + envelope('{"number": 1}'),
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
async def test_body_that_is_not_valid_json_is_bad_message(harness, body):
    reply = await asend(harness, body=body)
    assert_failed(reply, 400, "bad_message", contains="JSON")


async def test_integer_beyond_64_bits_is_invalid_args_not_a_crash(harness):
    reply = await asend(harness, body=envelope('{"number": 99999999999999999999999}'))
    error = assert_failed(reply, 400, "invalid_args")
    assert list(error["data"]) == ["number"]


async def test_unicode_arguments_that_are_valid_json_reach_validation(harness):
    reply = await asend(harness, body='{"name": "testapp.echo", "args": {"nümber😀": 1}}'.encode())
    error = assert_failed(reply, 400, "invalid_args", contains="nümber😀")
    assert error["data"] == {"nümber😀": ["Unknown argument."]}


# -- content types and methods -----------------------------------------------------------------


FORM = b'--x\r\nContent-Disposition: form-data; name="name"\r\n\r\ntestapp.echo\r\n--x--\r\n'
OTHER_TYPES = {
    "text/plain": envelope('{"number": 1}'),
    "text/html": envelope('{"number": 1}'),
    "application/x-www-form-urlencoded": b"name=testapp.echo&number=1",
    # Well formed: Daphne (Twisted) itself answers a malformed multipart body with a bare 400.
    "multipart/form-data; boundary=x": FORM,
}


@pytest.mark.parametrize(("content_type", "body"), OTHER_TYPES.items(), ids=OTHER_TYPES.keys())
async def test_body_of_another_content_type_is_415_bad_message(harness, content_type, body):
    reply = await asend(harness, body=body, content_type=content_type)
    assert_failed(reply, 415, "bad_message", contains="Content-Type: application/json")


async def test_body_without_a_content_type_is_bad_message(harness):
    reply = await asend(harness, body=envelope('{"number": 1}'), content_type=None)
    assert_failed(reply, 415, "bad_message", contains="Content-Type")


async def test_json_content_type_with_charset_is_accepted(harness):
    reply = await asend(
        harness, body=envelope('{"number": 3}'), content_type="application/json; charset=utf-8"
    )
    assert_ok(reply, 3)


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("kind", ["query", "mutation", "action"])
async def test_methods_other_than_post_are_405_bad_message(harness, method, kind):
    reply = await asend(harness, f"/reactive/api/{kind}", body=None, method=method, content_type=None)
    assert_failed(reply, 405, "bad_message", contains="POST")
    assert reply.headers.get("Allow") == "POST"


async def test_head_is_405_without_a_body(harness):
    reply = await asend(harness, body=None, method="HEAD", content_type=None)
    assert reply.status == 405
    assert reply.headers.get("Content-Type", "").startswith("application/json")


@pytest.mark.parametrize("accept", ["text/html", "application/xml", "text/html;q=1, */*;q=0"])
async def test_answers_are_json_whatever_the_accept_header(harness, accept):
    headers = {"Accept": accept}
    assert_ok(await asend(harness, body=envelope('{"number": 5}'), headers=headers), 5)
    assert_failed(
        await asend(harness, body=envelope('{"number": "x"}'), headers=headers), 400, "invalid_args"
    )


# -- CSRF --------------------------------------------------------------------------------------


def signed_in_browser(harness_url: str, username: str, password: str) -> tuple[AdminBrowser, str]:
    """A cookie-keeping client signed in through the admin's login form; its CSRF token."""
    browser = AdminBrowser(harness_url)
    browser.post_form("/admin/login/", {"username": username, "password": password, "next": "/admin/"})
    jar: http.cookiejar.CookieJar = next(
        handler.cookiejar
        for handler in browser.opener.handlers
        if isinstance(handler, urllib.request.HTTPCookieProcessor)
    )
    cookies = {cookie.name: cookie.value for cookie in jar}
    assert "sessionid" in cookies, cookies
    return browser, cookies["csrftoken"]


def post_with_cookies(browser: AdminBrowser, body: bytes, headers: dict[str, str]) -> Reply:
    request = urllib.request.Request(
        browser.base_url + "/reactive/api/query",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with browser.opener.open(request, timeout=30) as response:
            status, raw, reply_headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, raw, reply_headers = error.code, error.read(), error.headers
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    return Reply(status, parsed, reply_headers, raw)  # type: ignore[arg-type]


async def test_session_request_without_csrf_token_is_403_forbidden_naming_the_header(harness):
    username, password = f"csrf-{uuid.uuid4().hex[:8]}", "a-password"
    await (await harness.control()).action("testapp.make_admin", {"username": username, "password": password})
    browser, token = await asyncio.to_thread(signed_in_browser, harness.server.http_url, username, password)
    whoami = b'{"name": "testapp.whoami", "args": {}}'

    refused = await asyncio.to_thread(post_with_cookies, browser, whoami, {})
    assert_failed(refused, 403, "forbidden", contains="X-CSRFToken")

    wrong_origin = {"X-CSRFToken": token, "Origin": "http://attacker.example"}
    refused = await asyncio.to_thread(post_with_cookies, browser, whoami, wrong_origin)
    assert_failed(refused, 403, "forbidden", contains="origin")

    accepted = await asyncio.to_thread(post_with_cookies, browser, whoami, {"X-CSRFToken": token})
    assert_ok(accepted, username)


# -- an unexpected exception -------------------------------------------------------------------


def crashing_authenticator(token: str) -> Any:
    raise RuntimeError("the token service is down")


@pytest.mark.django_db(transaction=True)
async def test_unexpected_exception_is_500_server_error_without_details(inprocess_server, settings):
    settings.REACTIVE = {**settings.REACTIVE, "TOKEN_AUTHENTICATOR": f"{__name__}.crashing_authenticator"}
    harness = Harness("inprocess", inprocess_server)
    reply = await asend(harness, body=envelope('{"number": 1}'), headers={"Authorization": "Bearer abc"})
    error = assert_failed(reply, 500, "server_error")
    assert "token service" not in error["message"]
    assert b"Traceback" not in reply.raw


# -- anything at all ---------------------------------------------------------------------------

NAMES = ["testapp.echo", "chat.list_messages", "chat.paginated_messages", "tasks.create", "chat.send_message"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.text(st.characters(categories=["Cs", "Co", "Cn", "So", "Mn"]), max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def as_json(value: Any) -> bytes:
    """JSON text as a careless client writes it: NaN, Infinity and lone surrogates included."""
    return json.dumps(value, ensure_ascii=True).encode()


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["envelope", "json", "nested", "bytes", "spliced"]))
    if kind == "envelope":
        name = draw(st.sampled_from(NAMES) | st.text(max_size=20))
        args = draw(
            json_values | st.dictionaries(st.sampled_from(["number", "channel", "text", "body"]), json_values)
        )
        return as_json({"name": name, "args": args})
    if kind == "json":
        return as_json(draw(json_values))
    if kind == "nested":
        depth = draw(st.integers(min_value=1, max_value=3000))
        opener, innermost, closer = draw(st.sampled_from([(b"[", b"", b"]"), (b'{"a":', b"1", b"}")]))
        inner = opener * depth + innermost + closer * depth
        return b'{"name": "testapp.echo", "args": {"number": ' + inner + b"}}"
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    # Valid JSON with random bytes spliced in somewhere.
    text = as_json({"name": draw(st.sampled_from(NAMES)), "args": draw(json_values)})
    at = draw(st.integers(min_value=0, max_value=len(text)))
    return text[:at] + draw(st.binary(min_size=1, max_size=8)) + text[at:]


def assert_protocol_shaped(reply: Reply) -> None:
    assert reply.headers.get("Content-Type", "").startswith("application/json"), (
        reply.status,
        reply.raw[:300],
    )
    body = reply.body
    assert isinstance(body, dict), (reply.status, reply.raw[:300])
    if reply.status == 200:
        assert body["ok"] is True and "value" in body, body
        return
    assert set(body) == {"ok", "error"} and body["ok"] is False, body
    assert body["error"]["code"] in ERROR_CODES, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    # Nothing a client sends is a bug of the server.
    assert 400 <= reply.status < 500, (reply.status, body)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=bodies(),
    kind=st.sampled_from(["query", "mutation", "action"]),
    content_type=st.sampled_from(["application/json", "application/json", "text/plain", None]),
)
def test_any_body_gets_a_protocol_shaped_answer_and_the_server_keeps_answering(
    harness_server, body, kind, content_type
):
    _, server = harness_server
    reply = send(server.http_url, f"/reactive/api/{kind}", body, content_type=content_type)
    assert_protocol_shaped(reply)
    assert_ok(send(server.http_url, body=envelope('{"number": 7}')), 7)
