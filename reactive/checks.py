"""System checks: misconfiguration is reported by ``manage.py check`` with stable ids."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register

from .backends import backend_class
from .settings import DEFAULTS, reactive_settings


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list:
    messages = []
    user = getattr(settings, "REACTIVE", {}) or {}
    if not isinstance(user, dict):
        return [Error("REACTIVE must be a dict.", id="reactive.E001")]
    for key in user:
        if key not in DEFAULTS:
            messages.append(
                Error(
                    f"Unknown REACTIVE setting {key!r}.",
                    hint=f"Known settings: {', '.join(sorted(DEFAULTS))}.",
                    id="reactive.E002",
                )
            )
    try:
        backend_class(reactive_settings.BACKEND)
    except ImportError as exc:
        messages.append(Error(str(exc), id="reactive.E003"))
    if reactive_settings.BACKEND == "redis" and not reactive_settings.REDIS_URL:
        messages.append(
            Error("The redis backend needs REACTIVE['REDIS_URL'] (or REDIS_URL).", id="reactive.E004")
        )
    if not getattr(settings, "ASGI_APPLICATION", None):
        messages.append(
            Warning(
                "ASGI_APPLICATION is not set: the WebSocket endpoint needs an ASGI server (Daphne).",
                hint="Set ASGI_APPLICATION and route reactive.routing.websocket_urlpatterns.",
                id="reactive.W001",
            )
        )
    database = settings.DATABASES.get("default", {})
    messages += _check_change_log(database)
    if database.get("ENGINE", "").endswith("sqlite3"):
        options = database.get("OPTIONS", {})
        if "journal_mode=wal" not in str(options.get("init_command", "")).lower().replace(" ", ""):
            messages.append(
                Warning(
                    "SQLite without WAL: the invalidator's reads block writers.",
                    hint='Add "init_command": "PRAGMA journal_mode=WAL;" to the database OPTIONS.',
                    id="reactive.W002",
                )
            )
        if str(options.get("transaction_mode", "")).upper() != "IMMEDIATE":
            messages.append(
                Warning(
                    "SQLite transactions are not IMMEDIATE: a write transaction that read first fails "
                    'with "database is locked" when another one commits meanwhile.',
                    hint='Add "transaction_mode": "IMMEDIATE" to the database OPTIONS.',
                    id="reactive.W003",
                )
            )
    return messages


# What the change log needs of the database: commit order readable from the log table.
SUPPORTED_ENGINES = ("sqlite3", "postgresql", "postgis")
LOG_TABLE = "reactive_changelog"


def _check_change_log(database: dict) -> list:
    messages = []
    engine = database.get("ENGINE", "")
    if engine and not engine.endswith(SUPPORTED_ENGINES):
        messages.append(
            Error(
                f"The change log cannot be read in commit order on {engine}.",
                hint="reactive supports SQLite and PostgreSQL for the default database "
                "(docs/architecture.md, The change log).",
                id="reactive.E010",
            )
        )
    if LOG_TABLE not in reactive_settings.IGNORED_TABLES:
        messages.append(
            Error(
                f"REACTIVE['IGNORED_TABLES'] must include {LOG_TABLE!r}.",
                hint="Pruning the log is a write to it; were it watched, every prune would log a change.",
                id="reactive.E011",
            )
        )
    layer = str(getattr(settings, "CHANNEL_LAYERS", {}).get("default", {}).get("BACKEND", ""))
    if reactive_settings.BACKEND == "embedded" and "channels_redis" in layer:
        messages.append(
            Warning(
                "The embedded backend runs while Redis is at hand (CHANNEL_LAYERS): each server "
                "process re-runs every query its own sockets watch, and an update or delete made "
                "in a process that watches nothing of its table matches every reader of it.",
                hint="With several server processes watching the same queries, the Redis backend "
                "(REACTIVE['BACKEND'] = 'redis') re-runs each query once for all of them. "
                "Silence this with SILENCED_SYSTEM_CHECKS if one process serves your sockets.",
                id="reactive.W010",
            )
        )
    return messages
