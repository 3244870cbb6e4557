"""WebSocket routing: add ``websocket_urlpatterns`` to the project's ASGI application, and
``not_found_route`` last.

Channels' ``URLRouter`` answers a WebSocket to a path no route matches with an exception: the
server logs a traceback and fails the handshake with an HTTP 500. ``not_found_route`` matches
every path instead, and refuses the handshake as Django answers an unknown page: a 404 where the
ASGI server can answer a handshake with a response (uvicorn), else a 403 (Daphne), and one
``Not Found`` line in the log.
"""

import logging
from typing import Any

from django.urls import path, re_path

from .server.consumer import ReactiveConsumer
from .settings import reactive_settings

logger = logging.getLogger("reactive.routing")

websocket_urlpatterns = [path(reactive_settings.WEBSOCKET_PATH, ReactiveConsumer.as_asgi())]

# The ASGI extension that lets an application answer a WebSocket handshake with an HTTP response.
HTTP_RESPONSE_EXTENSION = "websocket.http.response"


async def websocket_not_found(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Refuse a WebSocket handshake to a path nothing serves (an ASGI application)."""
    logger.warning("Not Found: WebSocket %s", scope.get("path", ""))
    message = await receive()
    if message["type"] != "websocket.connect":  # the client went away first
        return
    if HTTP_RESPONSE_EXTENSION in (scope.get("extensions") or {}):
        body = b"Not Found: no WebSocket is served at this path.\n"
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
        await send({"type": "websocket.http.response.start", "status": 404, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close"})  # before accepting: the server answers 403


not_found_route = re_path(r"", websocket_not_found)
