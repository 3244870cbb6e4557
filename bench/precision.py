"""Scenario 4, precision: on a mixed chat workload, the share of query re-runs that changed a
result, and pushes per write, for row-level read sets (``reactive``) against table-level ones
(the same engine with ``REACTIVE["READ_SETS"] = "tables"``).

The demo's chat app (``project.chat``): ``chat_channels`` channels of ``chat_messages`` messages
each, created through its mutations. ``chat_sockets`` sockets, socket ``i`` watching channel ``i %
chat_channels`` with the chat page's four queries: ``list_messages(channel, limit=20)``,
``message_count(channel)``, ``channel_members(channel)`` and ``list_channels()``. The writes, open
loop through ``POST /reactive/api/mutation``, are drawn with a fixed seed (the same on both
servers): 60% ``send_message`` to a random channel, 25% ``edit_message`` of a random message, 10%
``delete_message``, 5% ``create_channel``.

Re-runs come from the invalidator's count (``benchapp.stats``); a re-run that changed its result
is one (instance, version) pair among the pushed updates (every instance has subscribers).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson

from bench import Broken
from bench.generators import LoadGenerators
from bench.plans import Plan
from bench.stats import spread
from bench.systems import Running
from bench.window import cpu_between, snapshot
from harness.ports import HOST

QUERIES = ("chat.list_messages", "chat.message_count", "chat.channel_members", "chat.list_channels")
MUTATION = "/reactive/api/mutation"


def queries_of(channel: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("chat.list_messages", {"channel": channel, "limit": 20}),
        ("chat.message_count", {"channel": channel}),
        ("chat.channel_members", {"channel": channel}),
        ("chat.list_channels", {}),
    ]


async def seed_chat(deployed: Running, plan: Plan, headers: dict[str, str]) -> dict[int, list[int]]:
    """The channels and their messages, by the signed-in user of ``headers``; returns the message
    ids per channel."""

    async def mutate(name: str, args: dict[str, Any]) -> Any:
        answer = await deployed.post(MUTATION, {"name": name, "args": args}, headers=headers)
        if not answer.get("ok"):
            raise Broken(f"{deployed.name}: {name} failed: {answer}")
        return answer["value"]

    messages: dict[int, list[int]] = {}
    for c in range(plan.chat_channels):
        channel = await mutate("chat.create_channel", {"name": f"channel {c}"})
        messages[channel] = []
        for m in range(plan.chat_messages):
            messages[channel].append(
                await mutate("chat.send_message", {"channel": channel, "body": f"hello {m}"})
            )
    return messages


def draw_writes(
    messages: dict[int, list[int]], count: int, seed: int, headers: dict[str, str]
) -> list[list[Any]]:
    """``[path, body, headers]`` of each write of the mix; ``messages`` is updated with what it does."""
    rng = random.Random(seed)
    channels = sorted(messages)
    writes: list[list[Any]] = []
    for i in range(count):
        draw = rng.random()
        channel = rng.choice(channels)
        ids = messages[channel]
        if draw < 0.6 or (draw < 0.95 and not ids):
            body = {"name": "chat.send_message", "args": {"channel": channel, "body": f"message {seed}-{i}"}}
        elif draw < 0.85:
            body = {
                "name": "chat.edit_message",
                "args": {"id": rng.choice(ids), "body": f"edited {seed}-{i}"},
            }
        elif draw < 0.95:
            body = {"name": "chat.delete_message", "args": {"id": ids.pop(rng.randrange(len(ids)))}}
        else:
            body = {"name": "chat.create_channel", "args": {"name": f"new {seed}-{i}"}}
        writes.append([MUTATION, body, headers])
    return writes


async def precision_of(
    deployed: Running, generators: LoadGenerators, plan: Plan, first_index: int
) -> dict[str, Any]:
    """The chat workload on one server: seeded, subscribed, ``repeats`` windows of writes."""
    # One signed-in user writes everything: the author of every message it edits or deletes.
    token = (await deployed.post("/bench/user"))["token"]
    headers = {"Authorization": f"Bearer {token}"}
    messages = await seed_chat(deployed, plan, headers)
    channels = sorted(messages)
    sockets = {first_index + i: channels[i % len(channels)] for i in range(plan.chat_sockets)}
    opened = await generators.open(
        [{"index": i, "kind": "reactive", "host": HOST, "port": deployed.write_port, "path": "/reactive/ws/"}
         for i in sockets], 40,
    )  # fmt: skip
    if opened.get("error_count"):
        raise Broken(f"{deployed.name}: chat sockets failed to open: {opened['errors']}")
    subscriptions = []
    instance_of: dict[tuple[int, int], bytes] = {}
    for index, channel in sockets.items():
        frames = []
        for sub_id, (name, args) in enumerate(queries_of(channel), start=1):
            frames.append(
                orjson.dumps({"type": "subscribe", "id": sub_id, "query": name, "args": args}).decode()
            )
            instance_of[index, sub_id] = orjson.dumps([name, args])
        subscriptions.append({"index": index, "frames": frames, "wait": list(range(1, len(frames) + 1))})
    ready = await generators.subscribe(subscriptions)
    if ready.get("pending") or ready.get("error_count"):
        raise Broken(f"{deployed.name}: chat subscriptions failed: {ready}")
    windows = []
    try:
        for repeat in range(plan.repeats):
            writes = draw_writes(messages, plan.chat_writes, seed=repeat, headers=headers)
            await generators.quiet(300, plan.drain_timeout_s)
            runs_before = await deployed.invalidator_runs()
            await generators.mark()
            before = snapshot(deployed, generators)
            answer = await generators.writer.ask(
                "write_open", host=HOST, port=deployed.write_port, keys=[], rate=plan.chat_rate,
                count=len(writes), requests=writes,
            )  # fmt: skip
            drained = await generators.quiet(300, plan.drain_timeout_s)
            after = snapshot(deployed, generators)
            collected = await generators.collect(updates=True)
            runs_after = await deployed.invalidator_runs()
            updates = collected["updates"]
            changed = {(instance_of[index, sub_id], version) for index, sub_id, version in updates}
            reruns = (runs_after or 0) - (runs_before or 0)
            ok = sum(1 for r in answer["records"] if r[3] == 200)
            windows.append(
                {
                    "writes": ok,
                    "write_errors": answer["error_count"],
                    "write_error_sample": answer["errors"][:3],
                    "reruns": reruns,
                    "changed_reruns": len(changed),
                    "precision": round(len(changed) / reruns, 4) if reruns else None,
                    "reruns_per_write": round(reruns / ok, 3) if ok else None,
                    "pushes": len(updates),
                    "pushes_per_write": round(len(updates) / ok, 3) if ok else None,
                    "changed_per_write": round(len(changed) / ok, 3) if ok else None,
                    "drained": drained,
                    "cpu": cpu_between(before, after),
                    "cpu_us_per_write": round(cpu_between(before, after)["serving_s"] / ok * 1e6, 1)
                    if ok
                    else None,
                }
            )
    finally:
        await generators.close(list(sockets))
        await asyncio.sleep(0.2)
    for window in windows:  # CPU shares beside the figures, as in every other table
        window["load_share"] = window["cpu"]["load_share"]
        window["other_share"] = window["cpu"]["other_share"]
    return {
        "system": deployed.system.name,
        "server": deployed.asgi_server,
        "instances": len(set(instance_of.values())),
        "subscriptions": len(instance_of),
        "windows": windows,
        "summary": {
            name: spread([w[name] for w in windows])
            for name in (
                "precision",
                "reruns_per_write",
                "pushes_per_write",
                "changed_per_write",
                "cpu_us_per_write",
                "load_share",
                "other_share",
            )
        },
    }
