"""The app's settings: one ``REACTIVE`` dict, every default in ``DEFAULTS``.

After Django REST framework's ``api_settings``: ``reactive_settings.MAX_SUBSCRIPTIONS`` reads
the project's value or the default, and the object reloads when a test changes ``REACTIVE``.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

DEFAULTS: dict[str, Any] = {
    # "embedded" (each server process tails the change log and keeps its own index) or "redis".
    "BACKEND": "embedded",
    "REDIS_URL": None,
    # WebSocket path and the per-connection limits announced in `connected`.
    "WEBSOCKET_PATH": "reactive/ws/",
    "MAX_MESSAGE_BYTES": 1024 * 1024,
    "MAX_SUBSCRIPTIONS": 1000,
    "MAX_INFLIGHT_REQUESTS": 100,
    # Bytes of frames waiting for a slow client before its transitions are coalesced into one.
    "MAX_QUEUED_BYTES": 1024 * 1024,
    # Canonical JSON bytes of one subscription's arguments, and of all of a connection's live
    # subscriptions together (what the server keeps for as long as they live).
    "MAX_ARGS_BYTES": 64 * 1024,
    "MAX_CONNECTION_ARGS_BYTES": 1024 * 1024,
    # Bytes of a connection's mutation and action frames waiting to run or running.
    "MAX_INFLIGHT_BYTES": 8 * 1024 * 1024,
    # Open connections per signed-in user and per client address, per server process (None: no
    # cap). Behind a proxy every client has the proxy's address: raise or disable the second.
    "MAX_CONNECTIONS_PER_USER": 100,
    "MAX_CONNECTIONS_PER_ADDRESS": 1000,
    # Threads per server process running user code (queries, mutations, actions, token checks),
    # and how many of one connection's calls may run at once.
    "USER_CODE_THREADS": 32,
    "MAX_CONCURRENT_CALLS": 4,
    # Token bucket per connection: sustained frames per second and burst size.
    "RATE_LIMIT_PER_SECOND": 200,
    "RATE_LIMIT_BURST": 1000,
    # The clock of the rate limit (a callable returning seconds); tests replace it to control time.
    "CLOCK": "time.monotonic",
    # Most rows in one page of paginate(): the largest num_items, and where a page fixed by its
    # end_cursor is cut when rows inserted into it grew it past this.
    "PAGINATION_MAX_ITEMS": 1000,
    # How long stored mutation results are kept for replay after a reconnect.
    "MUTATION_RESULT_TTL_HOURS": 24,
    # Callable(token: str) -> user or None, for the `authenticate` message and HTTP bearer tokens;
    # called again before every mutation and action of a socket that signed in with a token.
    "TOKEN_AUTHENTICATOR": "reactive.auth.authenticate_signed_token",
    # Lifetime of a reactive.auth.make_token token; a password change or deactivation ends it sooner.
    "TOKEN_MAX_AGE_SECONDS": 7 * 24 * 3600,
    # What a query's read set records: "rows" (the conditions that bound the rows read) or
    # "tables" (every row of each table read). "tables" is for benchmarks and diagnosis only: it
    # re-runs a query on any write to a table it read.
    "READ_SETS": "rows",
    # Tables whose writes never invalidate anything (the app's own bookkeeping, the change log
    # itself, and sessions): a transaction that writes only these appends no change record,
    # except that a deleted session still ends the sockets signed in with it (docs/security.md).
    "IGNORED_TABLES": [
        "reactive_mutationrecord",
        "reactive_changelog",
        "django_session",
        "django_migrations",
    ],
    # The change log table (reactive_changelog) keeps at most this many records that every
    # reader could read, and none older than CHANGE_LOG_RETENTION_SECONDS; a reader that falls
    # further behind re-runs every live query once instead of missing a change.
    "CHANGE_LOG_LENGTH": 10000,
    "CHANGE_LOG_RETENTION_SECONDS": 3600,
    # SQLite: how often a tailing process asks whether another process committed (PRAGMA
    # data_version: about 1.5% of a core at 4 ms). Postgres needs no polling (LISTEN/NOTIFY).
    "CHANGE_LOG_POLL_SECONDS": 0.004,
    # Redis backend: run the worker (invalidator) inside each server process too, for small
    # deployments; one of them holds the lease at a time.
    "RUN_WORKER_IN_SERVER": False,
    # Module name discovered in every installed app.
    "FUNCTIONS_MODULE": "functions",
    # Include exception text in `server_error` messages (defaults to settings.DEBUG).
    "EXPOSE_ERRORS": None,
}

IMPORT_STRINGS = {"TOKEN_AUTHENTICATOR", "CLOCK"}


class ReactiveSettings:
    """``reactive_settings.NAME``: the project's ``REACTIVE[NAME]`` or its default.

    A value is resolved once and kept as an instance attribute, so reading it again (on every
    captured write, for some) is a plain attribute read; ``reload()`` forgets them all.
    """

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Invalid REACTIVE setting: {name!r}")
        user = getattr(settings, "REACTIVE", {}) or {}
        value = user.get(name, DEFAULTS[name])
        if name == "REDIS_URL" and value is None:
            value = os.environ.get("REDIS_URL")
        if name == "BACKEND" and "BACKEND" not in user and self.REDIS_URL:
            value = "redis"
        if name == "EXPOSE_ERRORS" and value is None:
            value = settings.DEBUG
        if name in IMPORT_STRINGS and isinstance(value, str):
            value = import_string(value)
        if name == "IGNORED_TABLES":  # asked for every captured write: a set, not a list to scan
            value = frozenset(value)
        self.__dict__[name] = value
        return value

    def reload(self) -> None:
        self.__dict__.clear()


reactive_settings = ReactiveSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting in ("REACTIVE", "DEBUG"):
        reactive_settings.reload()


setting_changed.connect(_reload)
