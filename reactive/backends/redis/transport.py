"""What crosses Redis between server processes and the worker: requests from hubs (a stream),
and batches to hubs (one channel-layer message per process per pass, numbered)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import orjson
from channels.layers import get_channel_layer

from ..base import Batch, DropHub, Ensure, InstanceUpdate, Release, Request, Subscribed

logger = logging.getLogger("reactive.redis")


def request_payload(request: Request) -> bytes:
    if isinstance(request, Ensure):
        return orjson.dumps(
            {
                "k": "ensure",
                "r": request.request_id,
                "h": request.hub_id,
                "n": request.name,
                "a": request.args,
                "u": request.user_id,
            }
        )
    if isinstance(request, Release):
        return orjson.dumps({"k": "release", "h": request.hub_id, "i": request.instance_id})
    return orjson.dumps({"k": "drop", "h": request.hub_id})


def request_of(payload: bytes) -> Request:
    data = orjson.loads(payload)
    if data["k"] == "ensure":
        return Ensure(data["r"], data["h"], data["n"], data["a"], data["u"])
    if data["k"] == "release":
        return Release(data["h"], data["i"])
    return DropHub(data["h"])


def batch_of(message: dict[str, Any], hub_id: str) -> Batch:
    batch = Batch(version=message["version"])
    batch.updates = [InstanceUpdate(i, payload, err) for i, payload, err in message["updates"]]
    batch.replies = [
        Subscribed(request_id, hub_id, instance_id, payload, err, bound)
        for request_id, instance_id, payload, err, bound in message["replies"]
    ]
    batch.resubscribe = list(message["resubscribe"])
    if message.get("released"):
        batch.released_hubs = frozenset({hub_id})
    batch.revoked = frozenset(message.get("revoked", ()))
    return batch


class LayerSender:
    """Sends the worker's messages through the channel layer from an event loop of its own,
    in order (one task, one queue)."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.loop = asyncio.new_event_loop()
        self.queue: asyncio.Queue[dict[str, Any] | None] | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="reactive-sender", daemon=True)
        self.thread.start()
        self.ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.queue = asyncio.Queue()
        self.ready.set()
        self.loop.run_until_complete(self._send_forever())

    async def _send_forever(self) -> None:
        assert self.queue is not None
        while True:
            messages = await self.queue.get()
            if messages is None:
                return
            for hub_id, message in messages.items():
                try:
                    await self.layer.send(hub_id, message)
                except Exception as exc:  # the hub resyncs when it sees the gap
                    logger.warning("Sending a batch to %s failed: %s", hub_id, exc)

    def send_all(self, messages: dict[str, dict[str, Any]]) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, messages)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)
        self.thread.join(timeout=5)
