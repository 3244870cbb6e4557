"""The DCRF consumer: a model observer on ``Counter``, one group per key.

Its post_save signal handler serialises the saved row once and, after the commit,
``group_send``s it to the key's group; Channels dispatches it to each subscribed consumer, which
sends it as one JSON frame. Clients send ``{"action": "subscribe_to_counter", "request_id": N,
"key": K}``.
"""

from __future__ import annotations

from typing import Any

from djangochannelsrestframework.consumers import AsyncAPIConsumer
from djangochannelsrestframework.decorators import action
from djangochannelsrestframework.observer import model_observer

from bench.benchapp.models import Counter


class CounterConsumer(AsyncAPIConsumer):
    @model_observer(Counter)
    async def counter_activity(self, message: dict[str, Any], observer=None, **kwargs: Any) -> None:
        await self.send_json(message)

    @counter_activity.serializer
    def counter_activity(self, instance: Counter, action: Any, **kwargs: Any) -> dict[str, Any]:
        return {
            "key": instance.key,
            "value": instance.value,
            "stamp": instance.stamp,
            "intended": instance.intended,
        }

    @counter_activity.groups_for_signal
    def counter_activity(self, instance: Counter, **kwargs: Any):
        yield f"counter-{instance.key}"

    @counter_activity.groups_for_consumer
    def counter_activity(self, key: int | None = None, **kwargs: Any):
        if key is not None:
            yield f"counter-{key}"

    @action()
    async def subscribe_to_counter(self, key: int, request_id: int, **kwargs: Any) -> tuple[dict, int]:
        await self.counter_activity.subscribe(key=key, request_id=request_id)
        return {}, 201
