"""The benchmark's one write, shared by the plain view, the reactive mutation and the baselines.

No ``reactive`` import: the plain and DCRF servers run it without ``reactive`` installed.
"""

from __future__ import annotations

import time
from typing import Any

from django.db import transaction

from .models import Counter


def bump_counter(key: int, intended: int) -> dict[str, Any]:
    """Increment counter ``key`` with ``Model.save()`` (what signal-based observers see), stamping
    the row with ``time.monotonic_ns()`` taken just before the UPDATE, in the same transaction,
    and with ``intended``, the load generator's scheduled send time."""
    with transaction.atomic():
        counter = Counter.objects.select_for_update().get(key=key)
        counter.value += 1
        counter.intended = intended
        counter.stamp = time.monotonic_ns()
        counter.save(update_fields=["value", "stamp", "intended"])
    return {"key": key, "value": counter.value, "stamp": counter.stamp}


def reset_counters(first: int, count: int) -> int:
    """Counters ``first`` .. ``first + count - 1`` exist, at 0; returns how many were created."""
    keys = range(first, first + count)
    with transaction.atomic():
        Counter.objects.filter(key__in=keys).update(value=0, stamp=0, intended=0)
        existing = set(Counter.objects.filter(key__in=keys).values_list("key", flat=True))
        missing = [Counter(key=key) for key in keys if key not in existing]
        Counter.objects.bulk_create(missing, batch_size=500)
    return len(missing)


def counter_json(key: int) -> dict[str, Any]:
    row = Counter.objects.filter(key=key).values("value", "stamp", "intended").first()
    if row is None:
        return {"key": key, "value": None, "stamp": 0, "intended": 0}
    return {"key": key, **row}
