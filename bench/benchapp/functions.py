"""The bench's functions. Imported only by ``reactive``'s autodiscovery (never by the plain run)."""

from __future__ import annotations

import threading
import time
from typing import Any

from django.db import OperationalError, transaction
from django.db.models import F
from rest_framework import serializers

from reactive import action, query

from .models import Counter

# SQLite refuses to upgrade a deferred transaction that has read (reactive's UPDATE patch first
# reads the old values of a watched table) once another write has committed: "database is
# locked", at once, without waiting. Mutations retry that; actions do not, so bump does, and
# counts the retries (``benchapp.stats``), which the benchmark reports.
_ATTEMPTS = 8
retries = 0
_retries_lock = threading.Lock()


@query(args={"key": serializers.IntegerField()})
def counter(ctx: Any, key: int) -> dict[str, Any]:
    row = Counter.objects.filter(key=key).values("key", "value").first()
    return {"key": key, "value": row["value"] if row else None}


@action(args={"key": serializers.IntegerField()})
def bump(ctx: Any, key: int) -> int:
    """Increment the counter; return ``time.monotonic_ns()`` taken just before COMMIT."""
    global retries
    for attempt in range(_ATTEMPTS):
        try:
            with transaction.atomic():
                Counter.objects.filter(key=key).update(value=F("value") + 1)
                t0 = time.monotonic_ns()
            return t0
        except OperationalError as exc:
            if "locked" not in str(exc) or attempt == _ATTEMPTS - 1:
                raise
            with _retries_lock:
                retries += 1
            time.sleep(0.001 * 2**attempt)
    raise AssertionError("unreachable")


@action(args={"key": serializers.IntegerField()})
def reset(ctx: Any, key: int) -> int:
    """Create the counter (or set it back to 0); returns its value."""
    Counter.objects.update_or_create(key=key, defaults={"value": 0})
    return 0


@action
def stats(ctx: Any) -> dict[str, Any]:
    """How often the invalidator ran each query (one run per commit batch, whatever N is)."""
    from reactive.backends import get_backend

    invalidator = get_backend().invalidator
    return {"runs": dict(invalidator.runs) if invalidator is not None else {}, "bump_retries": retries}
