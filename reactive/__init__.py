"""Live, reactive queries for Django.

Register functions with the decorators; clients subscribe to queries over one WebSocket and
get the new result after every commit that changes it::

    from reactive import query, mutation
    from rest_framework import serializers

    @query(args={"channel": serializers.IntegerField()})
    def list_messages(ctx, channel):
        return list(Message.objects.filter(channel_id=channel).values())
"""

from .errors import ReactiveError
from .registry import action, mutation, query


def paginate(queryset, pagination):
    """One page of ``queryset`` per PROTOCOL.md's pagination (see ``reactive.pagination``)."""
    from .pagination import paginate as _paginate

    return _paginate(queryset, pagination)


__all__ = ["ReactiveError", "action", "mutation", "paginate", "query"]
