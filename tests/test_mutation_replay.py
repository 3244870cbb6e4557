"""Mutation replay belongs to one caller and one mutation (PROTOCOL.md guarantee 7).

A replay is answered from the stored result only when the same identity re-sends the same
function and arguments under the same ``session_id`` and ``request_id``. Knowing another
caller's ``session_id`` gives neither their results nor a way to answer their mutations.
Over real sockets, both harness modes.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from reactive.client import ReactiveClient

pytestmark = pytest.mark.asyncio

COUNTED = "testapp.add_task_counted"


async def token_for(harness: Any) -> str:
    username = f"replay-{uuid.uuid4().hex[:10]}"
    return await (await harness.control()).action("testapp.token_for", {"username": username})


async def send_mutation(client: ReactiveClient, request_id: int, name: str, args: dict[str, Any]) -> dict:
    """Send a raw ``mutation`` frame and return its ``mutation_result``."""
    mark = client.frames_received
    await client.send_raw({"type": "mutation", "request_id": request_id, "name": name, "args": args})
    return await client.next_frame(
        lambda frame: frame.get("type") == "mutation_result" and frame.get("request_id") == request_id,
        since=mark,
    )


async def tasks_with(client: ReactiveClient, text: str) -> list[int]:
    return [task["id"] for task in await client.query("tasks.list") if task["text"] == text]


@pytest.mark.parametrize("intruder", ["anonymous", "another-user"])
async def test_another_identity_with_a_known_session_id_runs_its_own_mutation(harness, intruder):
    session = uuid.uuid4().hex
    text = f"mine-{session}"
    async with harness.client(session_id=session) as owner:
        await owner.authenticate(await token_for(harness))
        first = await owner.mutation_result(COUNTED, {"text": text})
        assert first["ok"] is True, first

    async with harness.client(session_id=session) as other:
        if intruder == "another-user":
            await other.authenticate(await token_for(harness))
        result = await send_mutation(other, first["request_id"], COUNTED, {"text": text})
        # Not the owner's stored result: the intruder's own mutation ran.
        assert result["ok"] is True, result
        assert result["value"] != first["value"]
        assert sorted(await tasks_with(other, text)) == sorted([first["value"], result["value"]])


@pytest.mark.parametrize("planted_args", ["same-args", "other-args"])
async def test_a_result_stored_in_advance_never_answers_another_identitys_mutation(harness, planted_args):
    session = uuid.uuid4().hex
    text = f"victim-{session}"
    planted = {"text": text if planted_args == "same-args" else f"planted-{session}"}
    # The intruder guesses the session id and the request id the victim's client will use next.
    async with harness.client(session_id=session) as intruder:
        stored = await send_mutation(intruder, 1, COUNTED, planted)
        assert stored["ok"] is True, stored

    async with harness.client(session_id=session) as victim:
        await victim.authenticate(await token_for(harness))
        result = await victim.mutation_result(COUNTED, {"text": text})
        assert result["request_id"] == 1
        assert result["ok"] is True, result
        assert result["value"] != stored["value"]
        # The victim's mutation really ran: its task exists, with the id it was answered with.
        assert result["value"] in await tasks_with(victim, text)


@pytest.mark.parametrize("reuse", ["other-args", "other-function"])
async def test_same_identity_reusing_a_request_id_for_another_mutation_is_refused(harness, reuse):
    session = uuid.uuid4().hex
    text, other_text = f"first-{session}", f"other-{session}"
    token = await token_for(harness)
    async with harness.client(session_id=session) as first:
        await first.authenticate(token)
        original = await first.mutation_result(COUNTED, {"text": text})
        assert original["ok"] is True, original
    request_id = original["request_id"]

    async with harness.client(session_id=session) as second:
        await second.authenticate(token)
        # The legit replay: same identity, function and arguments, answered from the record.
        replay = await send_mutation(second, request_id, COUNTED, {"text": text})
        assert (replay["ok"], replay["value"]) == (True, original["value"])

        if reuse == "other-args":
            refused = await send_mutation(second, request_id, COUNTED, {"text": other_text})
        else:
            refused = await send_mutation(second, request_id, "tasks.create", {"text": text})
        assert refused["ok"] is False, refused
        assert refused["error"]["code"] == "bad_message"
        assert "request_id" in refused["error"]["message"]
        assert "value" not in refused
        # Nothing ran: no task of the refused mutation, and the first one only once.
        assert await tasks_with(second, text) == [original["value"]]
        assert await tasks_with(second, other_text) == []


async def test_arguments_too_deep_to_store_for_replay_are_invalid_args(harness):
    # Frames may nest 1024 levels; the stored fingerprint's encoder stops at 255 (so does the
    # client's, hence the frame written by hand).
    deep = "[" * 300 + '"bottom"' + "]" * 300
    frame = f'{{"type": "mutation", "request_id": 1, "name": "{COUNTED}", "args": {{"text": {deep}}}}}'
    async with harness.client() as client:
        mark = client.frames_received
        await client.send_raw(frame)
        result = await client.next_frame(lambda f: f.get("type") == "mutation_result", since=mark)
        assert result["ok"] is False, result
        assert result["error"]["code"] == "invalid_args"
        assert "replay" in result["error"]["message"]
        # The connection and its mutations go on.
        assert (await client.mutation_result(COUNTED, {"text": f"after-{uuid.uuid4().hex}"}))["ok"] is True
