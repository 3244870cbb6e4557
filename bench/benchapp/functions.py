"""The bench's functions. Imported only by ``reactive``'s autodiscovery (never by the plain run)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from reactive import action, mutation, query

from .writes import bump_counter, counter_json, reset_counters

_key = serializers.IntegerField()
_intended = serializers.IntegerField(default=0)


@query(args={"key": _key})
def counter(ctx: Any, key: int) -> dict[str, Any]:
    """The counter with its stamps: ``{"key", "value", "stamp", "intended"}``."""
    return counter_json(key)


@mutation(args={"key": _key, "intended": _intended})
def increment(ctx: Any, key: int, intended: int) -> dict[str, Any]:
    """The plain view's write (``bench/bump``) as a mutation."""
    return bump_counter(key, intended)


@action(args={"key": _key})
def bump(ctx: Any, key: int) -> int:
    """The same write as an action; returns its stamp (taken just before the UPDATE)."""
    return bump_counter(key, 0)["stamp"]


@action(args={"key": _key})
def reset(ctx: Any, key: int) -> int:
    """Create the counter (or set it back to 0); returns its value."""
    reset_counters(key, 1)
    return 0


@action
def stats(ctx: Any) -> dict[str, Any]:
    """How often the invalidator ran each query, and how many instances are live."""
    from reactive.backends import get_backend

    invalidator = get_backend().invalidator
    if invalidator is None:
        return {"runs": {}, "instances": None}
    return {"runs": dict(invalidator.runs), "instances": len(invalidator.instances)}
