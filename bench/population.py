"""Subscribers placed on a running system: which socket (or poller) follows which counters.

Index ``i`` is one client: a WebSocket (ours or DCRF's) with one subscription per counter key it
follows, or an HTTP poller of one key. Sockets are opened first (idle: connected, nothing sent),
then subscribed, so the server's memory can be read between the two steps.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench import Broken
from bench.generators import LoadGenerators
from bench.systems import Running
from harness.ports import HOST

# Daphne (Twisted) listens with a backlog of 50: fewer connects than that in flight at once.
CONNECT_CONCURRENCY = {"daphne": 40, "uvicorn": 200}


def subscribe_frames(kind: str, keys: list[int]) -> tuple[list[str], list[int]]:
    """The frames that subscribe a socket to ``keys`` and the ids whose first answer to wait for."""
    ids = list(range(1, len(keys) + 1))
    if kind == "reactive":
        frames = [
            orjson.dumps(
                {"type": "subscribe", "id": i, "query": "benchapp.counter", "args": {"key": k}}
            ).decode()
            for i, k in zip(ids, keys, strict=True)
        ]
    else:
        frames = [
            orjson.dumps({"action": "subscribe_to_counter", "request_id": i, "key": k}).decode()
            for i, k in zip(ids, keys, strict=True)
        ]
    return frames, ids


@dataclass
class Population:
    """The clients of one scenario on one system, and the counter keys each follows."""

    deployed: Running
    generators: LoadGenerators
    follows: dict[int, list[int]] = field(default_factory=dict)  # index -> keys
    opened: set[int] = field(default_factory=set)
    strict: bool = True  # a client that cannot connect or subscribe is Broken (ours); else noted

    @property
    def kind(self) -> str:
        return self.deployed.system.kind

    def subscribers_of(self) -> Counter[int]:
        """How many clients follow each key."""
        return Counter(key for keys in self.follows.values() for key in keys)

    async def open_idle(self, indices: list[int]) -> dict[str, Any]:
        """Connect WebSockets ``indices`` without subscribing (pollers: nothing to do)."""
        if self.kind == "poll":
            return {"opened": 0, "seconds": 0.0}
        sockets = [
            {
                "index": i,
                "kind": self.kind,
                "host": HOST,
                "port": self.deployed.endpoint(i),
                "path": self.deployed.ws_path,
            }
            for i in indices
            if i not in self.opened
        ]
        answer = await self.generators.open(sockets, CONNECT_CONCURRENCY[self.deployed.asgi_server])
        self.opened.update(s["index"] for s in sockets)
        self._check("connect", answer, len(sockets))
        return answer

    async def subscribe(self, plan: dict[int, list[int]]) -> dict[str, Any]:
        """Subscribe client ``i`` to ``plan[i]`` (opening its socket if needed); waits for every
        first value (ours), acknowledgement (DCRF) or first poll answer."""
        await self.open_idle(list(plan))
        if self.kind == "poll":
            pollers = [
                {"index": i, "body": {"name": "benchapp.counter", "args": {"key": keys[0]}}}
                for i, keys in plan.items()
            ]
            await self.generators.poll(
                pollers, HOST, self.deployed.write_port, self.deployed.system.poll_ms or 1000
            )
            self.follows.update(plan)
            return {"ready": len(plan)}
        subscriptions = []
        for index, keys in plan.items():
            frames, ids = subscribe_frames(self.kind, keys)
            subscriptions.append({"index": index, "frames": frames, "wait": ids, "keys": keys})
        answer = await self.generators.subscribe(subscriptions)
        self.follows.update(plan)
        self._check("subscribe", answer, len(plan), "ready")
        return answer

    def _check(self, what: str, answer: dict[str, Any], expected: int, field_name: str = "opened") -> None:
        got = answer.get(field_name, 0)
        if got < expected or answer.get("error_count"):
            message = (
                f"{self.deployed.name}: {expected - got} of {expected} clients failed to {what}"
                f" ({answer.get('error_count', 0)} errors): {answer.get('errors', [])[:3]}"
            )
            if self.strict:
                raise Broken(message)
            answer["problem"] = message

    async def close(self) -> None:
        await self.generators.close(sorted(self.opened | set(self.follows)) if self.kind != "poll" else None)
        self.follows.clear()
        self.opened.clear()
