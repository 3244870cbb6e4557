"""WebSocket routing: add ``websocket_urlpatterns`` to the project's ASGI application, and
``not_found_route`` last.

Channels' ``URLRouter`` answers a WebSocket to a path no route matches with an exception: the
server logs a traceback and fails the handshake with an HTTP 500. ``not_found_route`` matches
every path instead: it refuses the handshake (the server answers 403, as Channels' own
``WebsocketDenier`` does) and logs one ``Not Found`` line, as Django does for an unknown page.

It does not answer 404 through the ASGI ``websocket.http.response`` extension: uvicorn's default
WebSocket implementation sends that response but then logs an error for the handshake, every time.
It is a plain ASGI function, not ``WebsocketDenier``: a consumer first takes a channel of the
channel layer (with Redis, a round trip) for every socket it refuses.
"""

import logging
from typing import Any

from django.urls import path, re_path

from .server.consumer import ReactiveConsumer
from .settings import reactive_settings

logger = logging.getLogger("reactive.routing")

websocket_urlpatterns = [path(reactive_settings.WEBSOCKET_PATH, ReactiveConsumer.as_asgi())]


async def websocket_not_found(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Refuse a WebSocket handshake to a path nothing serves (an ASGI application)."""
    # Escaped as Django escapes a path it logs: a decoded "%0A" must not start a forged line.
    logger.warning("Not Found: WebSocket %s", scope.get("path", "").encode("unicode_escape").decode("ascii"))
    message = await receive()
    if message["type"] == "websocket.connect":  # else the client went away first
        await send({"type": "websocket.close"})  # before accepting: the server answers 403


not_found_route = re_path(r"", websocket_not_found)
