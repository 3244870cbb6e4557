"""A socket's writer runs at once, in its caller, and takes a task only when it has to wait; its
frames go to the ASGI server's ``send`` beneath Channels' session middleware."""

from __future__ import annotations

import asyncio

import pytest
from channels.sessions import InstanceSessionWrapper

from reactive.server.sending import server_send, start_eagerly

pytestmark = pytest.mark.asyncio


async def test_a_writer_that_never_waits_finishes_inside_the_call():
    sent: list[int] = []
    open_ = asyncio.Event()
    open_.set()

    async def write() -> None:
        for frame in (1, 2, 3):
            await open_.wait()
            sent.append(frame)

    assert start_eagerly(write()) is None
    assert sent == [1, 2, 3]


async def test_a_writer_that_must_wait_goes_on_in_a_task_in_order():
    sent: list[int] = []
    readable = asyncio.Event()

    async def write() -> None:
        sent.append(1)
        await readable.wait()  # the client stopped reading
        sent.append(2)
        await asyncio.sleep(0)
        sent.append(3)

    rest = start_eagerly(write())
    assert rest is not None and sent == [1]
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0.01)
    assert sent == [1] and not task.done()
    readable.set()
    await task
    assert sent == [1, 2, 3]


async def test_what_the_writer_waited_for_fails_inside_the_writer():
    outcome: list[str] = []
    waited = asyncio.get_running_loop().create_future()

    async def write() -> None:
        try:
            await waited
        except ConnectionResetError as exc:
            outcome.append(str(exc))

    task = asyncio.ensure_future(start_eagerly(write()))
    waited.set_exception(ConnectionResetError("gone"))
    await task
    assert outcome == ["gone"]


async def test_cancelling_the_task_cancels_the_waiting_writer():
    cleaned: list[bool] = []
    never = asyncio.Event()

    async def write() -> None:
        try:
            await never.wait()
        finally:
            cleaned.append(True)

    task = asyncio.ensure_future(start_eagerly(write()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]


async def test_an_error_before_the_first_wait_reaches_the_caller():
    async def write() -> None:
        raise ValueError("broken frame")

    with pytest.raises(ValueError, match="broken frame"):
        start_eagerly(write())


async def test_frames_skip_the_session_middleware_but_not_the_server():
    received: list[dict] = []

    async def server(message: dict) -> None:
        received.append(message)

    wrapper = InstanceSessionWrapper({"cookies": {}}, server)
    send = server_send(wrapper.send)
    assert send is server
    await send({"type": "websocket.send", "text": "{}"})
    assert received == [{"type": "websocket.send", "text": "{}"}]
    assert server_send(server) is server
