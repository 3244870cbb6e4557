"""Writing frames to sockets at fan-out rates: the ASGI server's own ``send``, called at once.

One commit seen by a thousand sockets is a thousand frames. Through Channels, each frame passes
``AsyncWebsocketConsumer.send``, ``AsyncConsumer.send`` and the session middleware's ``send``
(which acts only on ``http.response.start``) on its way to the server; and with a writer task
per socket, each socket's writer is woken through the event loop once per frame. So a socket's
frames go straight to the server's ``send``, and its writer starts at once, in the caller (the
hub, socket after socket), running until it has to wait: a server's ``send`` returns without
waiting unless that client stops reading (back-pressure), and only then does the writer go on
in a task of its own, so that a slow client never holds up another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from channels.sessions import InstanceSessionWrapper

Send = Callable[[dict[str, Any]], Awaitable[None]]


def server_send(send: Send) -> Send:
    """The ASGI server's ``send`` beneath Channels' session middleware, for ``websocket.send``
    messages: the middleware passes them on unchanged (it saves the session only on the message
    types it lists, ``http.response.start``)."""
    while True:
        wrapper = getattr(send, "__self__", None)
        if not isinstance(wrapper, InstanceSessionWrapper) or "websocket.send" in wrapper.save_message_types:
            return send
        send = wrapper.real_send


def start_eagerly(coroutine: Coroutine[Any, Any, None]) -> Coroutine[Any, Any, None] | None:
    """Run ``coroutine`` now, in the caller, up to the first time it has to wait.

    Returns None if it finished without waiting, else a coroutine that goes on with it (run it
    as a task); an exception it raises before waiting propagates to the caller. This is what
    Python 3.12's eager tasks do, without a task for the common case.
    """
    try:
        waiting_on = coroutine.send(None)
    except StopIteration:
        return None
    return _go_on(coroutine, waiting_on)


async def _go_on(coroutine: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    """Drive a started coroutine as its task would: wait for what it yielded, resume it with the
    outcome (an exception, a cancellation included, is thrown into it), until it returns."""
    while True:
        try:
            if waiting_on is None:  # a bare yield: give the loop one turn
                await asyncio.sleep(0)
            else:
                # A future yielded to a task is marked so; the task that takes it over clears
                # the mark before waiting on it (asyncio.Task does the same).
                waiting_on._asyncio_future_blocking = False
                await waiting_on
        except BaseException as exc:  # handed to the coroutine, as its task would
            try:
                waiting_on = coroutine.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting_on = coroutine.send(None)
        except StopIteration:
            return
