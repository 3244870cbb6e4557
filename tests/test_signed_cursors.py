"""Pagination cursors cannot be forged, and no page exceeds the largest page, over real sockets.

A cursor is a position signed by the server: a hand-made one, one of the unsigned format of
earlier versions, a signed one with a character changed, or a value signed for another purpose
(another salt, a sign-in token) is ``invalid_args``. A page fixed by its ``end_cursor`` that
rows inserted into it grew past ``PAGINATION_MAX_ITEMS`` is cut there.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from django.core import signing

from reactive.client import ReactiveClient
from reactive.settings import DEFAULTS

pytestmark = pytest.mark.asyncio

QUERY = "chat.paginated_messages"
LARGEST_PAGE = DEFAULTS["PAGINATION_MAX_ITEMS"]
INVALID_CURSOR = "Invalid cursor: pass back a cursor that this query returned."
SUB_ID = 700_000


def unsigned(values: Any) -> str:
    """A cursor as earlier versions made them: base64 of the JSON values, no signature."""
    return base64.urlsafe_b64encode(orjson.dumps(values)).rstrip(b"=").decode()


def flip(cursor: str, index: int) -> str:
    return cursor[:index] + ("A" if cursor[index] != "A" else "B") + cursor[index + 1 :]


async def real_cursor(client: ReactiveClient, channel: int) -> str:
    page = await client.query(QUERY, {"channel": channel, "pagination": {"num_items": 1}})
    return page["continue_cursor"]


async def forged_cursor(harness: Any, client: ReactiveClient, channel: int, kind: str) -> str:
    if kind == "hand-made":
        # The oldest possible position: as an end_cursor it would ask for every row at once.
        return unsigned(["1970-01-01T00:00:00+00:00", 0])
    if kind == "sign-in-token":
        return await (await harness.control()).action("testapp.token_for", {"username": "cursor-forger"})
    cursor = await real_cursor(client, channel)
    # The test process signs with the servers' SECRET_KEY (the same settings).
    values = signing.Signer(salt="reactive.pagination.cursor").unsign_object(cursor)
    if kind == "old-format":
        return unsigned(values)
    if kind == "another-salt":
        return signing.Signer(salt="another.purpose").sign_object(values)
    payload_end = cursor.index(":")
    return flip(cursor, payload_end // 2 if kind == "flipped-payload" else len(cursor) - 2)


def paged(channel: int, num_items: int, cursor: str | None = None, end_cursor: str | None = None) -> dict:
    """The arguments of one page of the channel's messages."""
    pagination = {"num_items": num_items, "cursor": cursor, "end_cursor": end_cursor}
    return {"channel": channel, "pagination": pagination}


FORGERIES = [
    "hand-made",
    "old-format",
    "flipped-payload",
    "flipped-signature",
    "another-salt",
    "sign-in-token",
]


@pytest.mark.parametrize("kind", FORGERIES)
@pytest.mark.parametrize("field", ["cursor", "end_cursor"])
async def test_cursor_the_server_did_not_make_is_invalid_args(harness, kind, field):
    (channel,) = await harness.write("make_channels", count=1, messages=3)
    async with harness.client() as client:
        cursor = await forged_cursor(harness, client, channel, kind)
        mark = client.frames_received
        args = paged(channel, 2, **{field: cursor})
        await client.send_raw({"type": "subscribe", "id": SUB_ID, "query": QUERY, "args": args})
        frame = await client.next_frame(lambda f: f.get("id") == SUB_ID or SUB_ID in _ids(f), since=mark)
        assert frame["type"] == "error", frame
        assert frame["id"] == SUB_ID
        error = frame["error"]
        assert error["code"] == "invalid_args", error
        assert error["data"] == {"pagination": {field: [INVALID_CURSOR]}}
        # The connection stays usable, and a real cursor still works.
        page = await client.query(QUERY, paged(channel, 2, await real_cursor(client, channel)))
        assert len(page["page"]) == 2


def _ids(frame: dict[str, Any]) -> set[int]:
    """The subscription ids a transition updates."""
    return {update["id"] for update in frame.get("updates", ())}


async def test_page_fixed_by_end_cursor_is_cut_at_the_largest_page(harness):
    (channel,) = await harness.write("make_channels", count=1, messages=0)
    await harness.write("bulk_messages", channel=channel, count=LARGEST_PAGE)
    async with harness.client() as client:
        first = await client.query(QUERY, paged(channel, LARGEST_PAGE))
        assert len(first["page"]) == LARGEST_PAGE
        end = first["continue_cursor"]
        fixed = client.subscribe(QUERY, paged(channel, 1, None, end))
        assert (await fixed.first())["page"] == first["page"]

        # A new message is the newest: it lands inside the fixed page, which now covers one row
        # more than the largest page.
        await client.mutation("chat.send_message", {"channel": channel, "body": "one too many"})
        cut = await fixed.wait_for(lambda value: value["page"][0]["body"] == "one too many")
        assert len(cut["page"]) == LARGEST_PAGE
        assert cut["page"][1:] == first["page"][:-1]
        assert cut["is_done"] is False
        assert cut["continue_cursor"] != end
        # The row that no longer fits is the page from the cut to end_cursor.
        rest = await client.query(QUERY, paged(channel, 1, cut["continue_cursor"], end))
        assert rest["page"] == first["page"][-1:]
        assert rest["continue_cursor"] == end
