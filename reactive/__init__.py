"""Live, reactive queries for Django.

Register functions with the decorators; clients subscribe to queries over one WebSocket and
get the new result after every commit that changes it::

    from reactive import query, mutation
    from rest_framework import serializers

    @query(args={"channel": serializers.IntegerField()})
    def list_messages(ctx, channel):
        return list(Message.objects.filter(channel_id=channel).values())
"""

from typing import Any

__all__ = ["Page", "PaginationOptions", "ReactiveError", "action", "mutation", "paginate", "query"]

# Imported on first use, so that ``reactive.client`` loads without Django.
_EXPORTS = {
    "ReactiveError": ("reactive.errors", "ReactiveError"),
    "action": ("reactive.functions.registry", "action"),
    "mutation": ("reactive.functions.registry", "mutation"),
    "query": ("reactive.functions.registry", "query"),
    "paginate": ("reactive.functions.pagination", "paginate"),
    "PaginationOptions": ("reactive.functions.pagination", "PaginationOptions"),
    "Page": ("reactive.functions.pagination", "Page"),
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'reactive' has no attribute {name!r}")
    from importlib import import_module

    module, attribute = _EXPORTS[name]
    value = getattr(import_module(module), attribute)
    globals()[name] = value
    return value
