"""A server process's statistics, for the admin's live dashboard: its sockets and subscribers.

The consumer keeps plain counters (frames and bytes sent); the hub's task here reads them about
once a second, on the event loop (where they change, so no lock), and publishes one snapshot
through the backend: in memory on the embedded backend, in Redis on the Redis backend, so the
dashboard on any process shows every process. It publishes only while a dashboard watches (some
live instance reads ``STATS_TABLE``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from ..capture import origin
from ..engine.stats import STATS_TABLE, TICK_SECONDS

logger = logging.getLogger("reactive.hub")

CONNECTIONS_KEPT = 500  # per process and snapshot; the total is counted


def process_snapshot(hub: Any) -> dict[str, Any]:
    """This process's sockets and how many of them follow each instance (on the event loop)."""
    consumers = list(hub.consumers)
    connections = []
    for consumer in consumers[:CONNECTIONS_KEPT]:
        client = consumer.scope.get("client") or ("", 0)
        connections.append(
            {
                "user_id": consumer.user_id,
                "address": f"{client[0]}:{client[1]}" if client[0] else "",
                "connected_at": getattr(consumer, "connected_at", None),
                "subscriptions": len(consumer.subscriptions),
                "frames": getattr(consumer, "frames_sent", 0),
                "bytes": getattr(consumer, "bytes_sent", 0),
                "lagging": consumer.lagging,
            }
        )
    subscribers = {
        instance_id: sum(len(sub_ids) for sub_ids in instance.subscribers.values())
        for instance_id, instance in hub.instances.items()
    }
    return {
        "kind": "server",
        "source": f"server:{hub.hub_id}",
        "process": origin.process_name(),
        "time": time.time(),
        "connections": connections,
        "connections_total": len(consumers),
        "subscribers": subscribers,
        "processed": hub.processed_version,
    }


async def publish_forever(hub: Any) -> None:
    """The hub's statistics task: publish its snapshot about once a second while watched."""
    backend = hub.backend
    while not hub.closed:
        try:
            # A thread: on Redis, asking costs a round trip (cached a second by the index).
            if await asyncio.to_thread(backend.index.watched_columns, STATS_TABLE) is not None:
                snapshot = orjson.dumps(process_snapshot(hub))
                await asyncio.to_thread(backend.publish_stats, f"server:{hub.hub_id}", snapshot)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the dashboard shows this process's older numbers meanwhile
            logger.warning("Could not publish this process's statistics: %s", exc)
        await asyncio.sleep(TICK_SECONDS)
