"""System checks: misconfiguration is reported by ``manage.py check`` with stable ids.

Each message says what is wrong and its hint says exactly what to do. A project that leaves
"reactive" out of INSTALLED_APPS never loads this module; the consumer and the HTTP views answer
that case themselves (``server/installation.py``).
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import Error, Warning, register
from django.utils.module_loading import import_string

from .backends import backend_class
from .functions.registry import registered_functions
from .settings import DEFAULTS, reactive_settings

ROUTING_HINT = (
    "In the module ASGI_APPLICATION names (asgi.py), set application = ProtocolTypeRouter({"
    '"http": django_application, "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack('
    "URLRouter([*reactive.routing.websocket_urlpatterns, reactive.routing.not_found_route])))}), "
    "as in step 2 of the README."
)


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
                hint='Set ASGI_APPLICATION = "<your project>.asgi.application" in the settings. '
                + ROUTING_HINT,
                id="reactive.W001",
            )
        )
    database = settings.DATABASES.get("default", {})
    messages += _check_change_log(database)
    others = sorted(alias for alias in settings.DATABASES if alias != "default")
    if others:
        messages.append(
            Warning(
                f"Writes to the database{'s' if len(others) > 1 else ''} {', '.join(map(repr, others))} "
                "reach no subscriber: reactive reads the change log of 'default' only.",
                hint="Keep the tables live queries read in the default database, or silence this "
                "with SILENCED_SYSTEM_CHECKS if no live query reads the others "
                "(docs/read-tracking.md, Blind spots).",
                id="reactive.W011",
            )
        )
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


@register()
def check_asgi_server(app_configs: Any = None, **kwargs: Any) -> list:
    """The ASGI application routes WebSockets to the consumer, and runserver speaks ASGI.

    (Daphne itself checks that it comes before staticfiles: daphne.E001.)
    """
    messages = []
    path = getattr(settings, "ASGI_APPLICATION", None)
    if path:
        problem = _routing_problem(path)
        if problem:
            messages.append(Warning(problem, hint=ROUTING_HINT, id="reactive.W004"))
    names = [config.name for config in apps.get_app_configs()]
    if "daphne" not in names:
        messages.append(
            Warning(
                '"daphne" is not in INSTALLED_APPS: `manage.py runserver` then serves WSGI, which has no '
                "WebSockets, and /reactive/ws/ answers 404.",
                hint='Add "daphne" as the first entry of INSTALLED_APPS (it is installed with '
                "django-reactive-queries). If you never use runserver (you serve with uvicorn or "
                'another ASGI server), add "reactive.W005" to SILENCED_SYSTEM_CHECKS instead.',
                id="reactive.W005",
            )
        )
    return messages


# Where ASGI applications keep the application they wrap: Channels' middleware (.inner), its
# origin validator (.application), and the common ``.app`` of other ASGI middleware.
_WRAPPED = ("inner", "application", "app")


def _routing_problem(path: str) -> str | None:
    """Why the ASGI application at ``path`` does not route WebSockets to the consumer, or None."""
    try:
        application = import_string(path)
    except Exception as exc:
        return f"ASGI_APPLICATION {path!r} cannot be imported ({type(exc).__name__}: {exc})."
    router = _find(application, lambda app: isinstance(getattr(app, "application_mapping", None), dict))
    if router is None:
        return (
            f"ASGI_APPLICATION {path!r} ({type(application).__name__}) does not route WebSocket "
            "connections: every WebSocket is refused (Django's own ASGI handler serves only HTTP)."
        )
    websocket = router.application_mapping.get("websocket")
    if websocket is None:
        return f'ASGI_APPLICATION {path!r} is a ProtocolTypeRouter without a "websocket" entry.'
    consumer = _find(websocket, lambda app: _is_reactive_consumer(getattr(app, "consumer_class", None)))
    if consumer is None:
        return (
            f"ASGI_APPLICATION {path!r} routes WebSockets, but not to "
            f"reactive.routing.websocket_urlpatterns: /{reactive_settings.WEBSOCKET_PATH} is not served."
        )
    return None


# By name: this module loads with the app config, before the consumer's imports (models) can.
_CONSUMER = "reactive.server.consumer.ReactiveConsumer"


def _is_reactive_consumer(consumer_class: Any) -> bool:
    return isinstance(consumer_class, type) and any(
        f"{cls.__module__}.{cls.__qualname__}" == _CONSUMER for cls in consumer_class.__mro__
    )


def _find(application: Any, found: Any, depth: int = 0) -> Any:
    """The first application, ``application`` or one it wraps or routes to, for which ``found``."""
    if found(application):
        return application
    if depth > 20:
        return None
    inner = [_attribute(application, name) for name in _WRAPPED]
    routes = _attribute(application, "routes")
    if isinstance(routes, list | tuple):
        inner += [_attribute(route, "callback") for route in routes]
    mapping = _attribute(application, "application_mapping")
    if isinstance(mapping, dict):
        inner += mapping.values()
    for candidate in inner:
        if candidate is not None and candidate is not application:
            result = _find(candidate, found, depth + 1)
            if result is not None:
                return result
    return None


def _attribute(value: Any, name: str) -> Any:
    try:
        return getattr(value, name, None)
    except Exception:  # a property of some unknown wrapper that fails: look no further there
        return None


@register()
def check_function_signatures(app_configs: Any = None, **kwargs: Any) -> list:
    """Each registered function can be called as ``f(ctx, **args)`` with its ``args=``."""
    messages = []
    for function in registered_functions():
        if function.problems:
            code = getattr(function.func, "__code__", None)
            where = f" ({code.co_filename}, line {code.co_firstlineno})" if code else ""
            messages.append(
                Error(
                    f"The {function.kind} {function.name}{where} cannot be called with its args=. "
                    + " ".join(function.problems),
                    hint=f"A {function.kind} is called as f(ctx, **args): ctx first, then one keyword "
                    "argument per name in args=.",
                    obj=function.name,
                    id="reactive.E005",
                )
            )
    return messages
