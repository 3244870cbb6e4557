"""A developer's mistakes answered clearly: each message names the function and says what to do,
and is the same over the socket, over HTTP and in the server log.

- a name without its app label, or misspelt, suggests the registered names;
- a query that writes is told to use a mutation, and a warning naming it is logged;
- a function returning what JSON cannot hold names itself and the type, even with DEBUG off
  (the message holds no value, only a type name).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest

from reactive.client import ReactiveClientError

pytestmark = pytest.mark.asyncio

WEIRD = "tests.testapp.functions.Weird"


def post(server: Any, kind: str, name: str, args: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """POST to the HTTP API; (status, JSON body)."""
    body = json.dumps({"name": name, "args": args or {}}).encode()
    request = Request(
        f"{server.http_url}/reactive/api/{kind}", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except HTTPError as error:
        return error.code, json.loads(error.read())


async def query_error(client: Any, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    with pytest.raises(ReactiveClientError) as raised:
        await client.query(name, args or {})
    return {"code": raised.value.code, "message": raised.value.message}


class ServerLog:
    """What the server under test logged: captured in-process, read from the subprocess's log."""

    def __init__(self, harness: Any, caplog: pytest.LogCaptureFixture) -> None:
        self.harness, self.caplog = harness, caplog
        caplog.set_level(logging.WARNING, logger="reactive")
        self.start = len(self.lines())  # the subprocess's log holds earlier tests' lines

    def lines(self) -> list[str]:
        if self.harness.mode == "inprocess":
            return [f"{record.levelname} {record.getMessage()}" for record in self.caplog.records]
        return self.harness.server.output().splitlines()

    def count(self, text: str) -> int:
        """Lines holding ``text`` since this test began. The server logs before it answers, so
        an answered request's line is already there (the subprocess's stderr is line-buffered);
        the subprocess may write each line twice (its handler and Daphne's root handler)."""
        return sum(text in line for line in self.lines()[self.start :])


# -- not_found: names are <app_label>.<function> ---------------------------------------------------


async def test_a_name_without_its_app_label_suggests_the_full_name(harness):
    async with harness.client() as client:
        error = await query_error(client, "echo", {"number": 1})
    assert error["code"] == "not_found"
    assert "No query named 'echo'." in error["message"]
    assert "Did you mean 'testapp.echo'?" in error["message"], error
    assert '"<app_label>.<function>"' in error["message"], error


async def test_a_misspelt_name_suggests_the_close_matches_over_socket_and_http(harness):
    async with harness.client() as client:
        error = await query_error(client, "testapp.ehco", {"number": 1})
    status, body = await asyncio.to_thread(post, harness.server, "query", "testapp.ehco", {"number": 1})
    assert "Did you mean 'testapp.echo'?" in error["message"], error
    assert (status, body) == (404, {"ok": False, "error": error})


async def test_a_mutation_name_called_as_a_query_says_what_it_is(harness):
    async with harness.client() as client:
        error = await query_error(client, "tasks.create", {"text": "x"})
    assert error == {
        "code": "not_found",
        "message": "'tasks.create' is a mutation, not a query: call it as a mutation.",
    }


# -- a query that writes ------------------------------------------------------------------------


async def test_a_query_that_writes_is_named_told_to_use_a_mutation_and_logged(harness, caplog):
    log = ServerLog(harness, caplog)
    expected = (
        "Queries are read-only: the query testapp.fails tried to write to the database. "
        "Write in a @mutation instead (or an @action that calls one) and call it from the client."
    )
    async with harness.client() as client:
        error = await query_error(client, "testapp.fails", {"kind": "write"})
    assert error == {"code": "server_error", "message": expected}
    status, body = await asyncio.to_thread(post, harness.server, "query", "testapp.fails", {"kind": "write"})
    assert (status, body) == (500, {"ok": False, "error": error})
    assert log.count(expected) >= 2, log.lines()
    assert any("WARNING" in line for line in log.lines()[log.start :] if expected in line), log.lines()


# -- results JSON cannot hold -----------------------------------------------------------------------


def unencodable_message(name: str) -> str:
    return (
        f"{name} returned a value of type {WEIRD}, which cannot be sent as JSON: return JSON values "
        "(dict, list, str, int, float, bool, None), dates, decimals, UUIDs, model instances or querysets."
    )


async def test_an_unencodable_query_result_names_function_and_type_over_socket_http_and_log(harness, caplog):
    log = ServerLog(harness, caplog)
    expected = {"code": "server_error", "message": unencodable_message("testapp.unencodable")}
    async with harness.client() as client:
        assert await query_error(client, "testapp.unencodable") == expected
    status, body = await asyncio.to_thread(post, harness.server, "query", "testapp.unencodable")
    assert (status, body) == (500, {"ok": False, "error": expected})
    assert log.count(expected["message"]) >= 2, log.lines()
    assert "Type is not JSON serializable" not in "\n".join(log.lines())


async def test_an_unencodable_mutation_or_action_result_names_function_and_type(harness, caplog):
    log = ServerLog(harness, caplog)
    calls = (("mutation", "testapp.unencodable_mutation"), ("action", "testapp.unencodable_action"))
    async with harness.client() as client:
        for kind, name in calls:
            expected = {"code": "server_error", "message": unencodable_message(name)}
            with pytest.raises(ReactiveClientError) as raised:
                await getattr(client, kind)(name, {})
            assert {"code": raised.value.code, "message": raised.value.message} == expected
            status, body = await asyncio.to_thread(post, harness.server, kind, name)
            assert (status, body) == (500, {"ok": False, "error": expected})
            assert log.count(expected["message"]) >= 2, log.lines()
