"""An asyncio client for the reactive wire protocol (``PROTOCOL.md``, version 1).

Used by the project's tests and benchmarks, and usable from scripts. It depends only on
``websockets`` and ``orjson``; it never imports Django, so it works in processes without
settings::

    async with ReactiveClient("ws://localhost:8000/reactive/ws/") as client:
        sub = client.subscribe("chat.list_messages", {"channel": 1})
        print(await sub.first())
        await client.mutation("chat.send", {"channel": 1, "body": "hi"})
        print(await sub.next())

One background reader task and one writer task run per connection. When the socket drops and
``reconnect`` is true, the client reconnects with exponential backoff and full jitter, sends
``connect`` with the same ``session_id``, re-sends ``authenticate`` (if it was ever called),
``subscribe`` for every live subscription (same ids) and every unanswered mutation (same
``request_id``, so the server returns the stored result instead of running it again), and fails
every in-flight action with ``connection_lost``.

The modules, from the wire up:

- ``frames``: encoding and decoding frames.
- ``connection``: one WebSocket and its reader and writer tasks.
- ``lifecycle``: the connection's states (drawn there): connect, reconnect with backoff, close.
- ``subscription``: ``Subscription`` and the set of live subscriptions.
- ``requests``: mutations, actions and pings waiting for their answer.
- ``client``: ``ReactiveClient``, the session and its API, built on the above.
- ``errors``: ``ReactiveClientError``.
- ``testing``: ``InstrumentedClient`` for tests and benchmarks (frame log, raw frames,
  protocol-violation records); not imported here.
"""

from .client import ReactiveClient, run_mutation, run_query
from .errors import ReactiveClientError
from .subscription import Subscription

__all__ = ["ReactiveClient", "ReactiveClientError", "Subscription", "run_mutation", "run_query"]
