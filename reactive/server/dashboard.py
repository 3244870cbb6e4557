"""The system's own queries behind the admin's live dashboard (``/admin/reactive/live/``).

Ordinary reactive queries, named ``reactive.live.*`` (the ``reactive`` app's label: no other
app's function can take these names), for staff users only: anyone else gets ``forbidden`` (or
``unauthenticated``). They merge the statistics snapshots every process publishes through the
backend (``engine/stats.py`` for the worker, ``server/stats.py`` for server processes) and read
``STATS_TABLE``, so the invalidator re-runs them about once a second while they are live.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.contrib.auth import get_user_model
from rest_framework import serializers

from ..backends import get_backend
from ..engine.stats import depend_on_stats
from ..functions.registry import query
from ..settings import reactive_settings

PREFIX = "reactive.live."
RECENT_WRITES = 20


def is_staff(ctx: Any) -> bool:
    return ctx.is_authenticated and bool(ctx.user.is_staff)


class Snapshots:
    """Every live process's latest snapshot, read once per query run."""

    def __init__(self) -> None:
        depend_on_stats()
        snapshots = [orjson.loads(raw) for raw in get_backend().stats_snapshots()]
        self.servers = sorted((s for s in snapshots if s["kind"] == "server"), key=lambda s: s["source"])
        self.workers = sorted((s for s in snapshots if s["kind"] == "worker"), key=lambda s: s["source"])
        leaders = [s for s in self.workers if s.get("role") == "leader"]
        self.leader: dict[str, Any] = max(leaders, key=lambda s: s["time"]) if leaders else {}

    def subscribers(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for server in self.servers:
            for instance_id, count in server["subscribers"].items():
                counts[instance_id] = counts.get(instance_id, 0) + count
        return counts

    def instances(self, name: str | None = None) -> list[dict[str, Any]]:
        """The costliest instances (of one function), with their subscribers on every process."""
        subscribers = self.subscribers()
        return [
            {**instance, "subscribers": subscribers.get(instance["id"], 0)}
            for instance in self.leader.get("instances", [])
            if name is None or instance["name"] == name
        ]


def _usernames(user_ids: set[Any]) -> dict[str, str]:
    """Display names of signed-in users (a read of the user table: it re-runs when one changes)."""
    if not user_ids:
        return {}
    User = get_user_model()
    rows = User.objects.filter(pk__in=user_ids).values_list("pk", User.USERNAME_FIELD)
    return {str(pk): str(name) for pk, name in rows}


@query(name=PREFIX + "connections", permission=is_staff)
def connections(ctx: Any) -> dict[str, Any]:
    """Every live WebSocket of every process: who, where, since when, how much it was sent."""
    snapshots = Snapshots()
    found = [
        {**connection, "process": server["process"]}
        for server in snapshots.servers
        for connection in server["connections"]
    ]
    names = _usernames({c["user_id"] for c in found if c["user_id"] is not None})
    for connection in found:
        user_id = connection.pop("user_id")
        connection["user"] = names.get(str(user_id), f"user {user_id}") if user_id is not None else None
    found.sort(key=lambda c: c["connected_at"] or 0)
    return {
        "connections": found,
        "total": sum(server["connections_total"] for server in snapshots.servers),
        "max_queued_bytes": reactive_settings.MAX_QUEUED_BYTES,
    }


@query(name=PREFIX + "instances", permission=is_staff)
def instances(ctx: Any) -> dict[str, Any]:
    """The live query instances, costliest first, with why each last re-ran."""
    snapshots = Snapshots()
    return {
        "instances": snapshots.instances(),
        "total": snapshots.leader.get("instances_total", 0),
    }


@query(
    name=PREFIX + "function",
    args={"name": serializers.CharField(max_length=255)},
    permission=is_staff,
)
def function_detail(ctx: Any, name: str) -> dict[str, Any]:
    """One function: its instances, and its runs and run time per second over the last minutes."""
    snapshots = Snapshots()
    series = snapshots.leader.get("functions", {}).get(name, [])
    return {
        "name": name,
        "instances": snapshots.instances(name),
        # [unix second, runs, milliseconds of run time]
        "series": [[second, runs, seconds * 1000] for second, runs, seconds in series],
        "time": snapshots.leader.get("time"),
    }


@query(name=PREFIX + "invalidator", permission=is_staff)
def invalidator(ctx: Any) -> dict[str, Any]:
    """The invalidator's position in the log and its pace; the workers and server processes."""
    snapshots = Snapshots()
    return {
        "backend": reactive_settings.BACKEND,
        "invalidator": snapshots.leader.get("invalidator"),
        "time": snapshots.leader.get("time"),
        "workers": [
            {"process": worker["process"], "role": worker["role"], "source": worker["source"]}
            for worker in snapshots.workers
        ],
        "servers": [
            {
                "process": server["process"],
                "source": server["source"],
                "connections": server["connections_total"],
                "instances": len(server["subscribers"]),
                "processed": server["processed"],
            }
            for server in snapshots.servers
        ],
    }


@query(name=PREFIX + "writes", permission=is_staff)
def writes(ctx: Any) -> dict[str, Any]:
    """Recent change records, and per table how many records, rows and instances they touched."""
    recent = Snapshots().leader.get("writes", [])
    tables: dict[str, dict[str, Any]] = {}
    for write in recent:
        for table, rows in write["tables"].items():
            entry = tables.setdefault(table, {"table": table, "records": 0, "rows": 0, "touched": 0})
            entry["records"] += 1
            entry["rows"] += rows
            entry["touched"] += write["touched"]
    return {
        "tables": sorted(tables.values(), key=lambda t: (-t["touched"], t["table"])),
        "recent": recent[:RECENT_WRITES],
        "kept": len(recent),
    }
