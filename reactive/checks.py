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
