"""One JSON encoding for every result, everywhere: the socket, HTTP and the result hash.

Model instances become ``{attname: value}`` of their concrete fields (a foreign key as
``<name>_id``, like ``.values()``), querysets become lists, datetimes ISO 8601, decimals
strings, UUIDs strings. Encoding happens inside the function's run, so a queryset returned
lazily is evaluated (and its reads tracked) there.
"""

from __future__ import annotations

import datetime
import decimal
import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from django.db import models
from django.db.models.query import QuerySet

from ..errors import UnencodableResult

logger = logging.getLogger("reactive.execution")

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS


def _default(value: Any) -> Any:
    if isinstance(value, models.Model):
        return instance_as_dict(value)
    if isinstance(value, QuerySet):
        return list(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset, tuple)) or (
        hasattr(value, "__iter__") and not isinstance(value, str)
    ):
        return list(value)
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID | datetime.date | datetime.time):
        return str(value)
    raise Unencodable(value)


class Unencodable(TypeError):
    """A value of a type JSON cannot hold (orjson raises its own error with this as the cause)."""

    def __init__(self, value: Any) -> None:
        kind = type(value)
        self.type_name = (
            kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        )
        super().__init__(f"Cannot encode {self.type_name} as JSON: return JSON values, models or querysets.")


def instance_as_dict(instance: models.Model) -> dict[str, Any]:
    return {f.attname: f.value_from_object(instance) for f in instance._meta.concrete_fields}


def dumps(value: Any) -> bytes:
    """The JSON bytes of ``value``; raises ``TypeError`` for what JSON cannot hold.

    orjson refuses integers beyond 64 bits and nesting deeper than 254 levels, both of which
    JSON can hold: those values are encoded by the standard library instead (slower, rare).
    """
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS)
    except TypeError as exc:
        if not _beyond_orjson(exc):
            raise
        return _dumps_slow(value, sort_keys=False)


def dumps_result(function_name: str, value: Any) -> bytes:
    """The JSON bytes of what ``function_name`` returned; ``UnencodableResult`` naming the function
    and the type (never the value, so any client may see it) if JSON cannot hold it."""
    try:
        return dumps(value)
    except TypeError as exc:  # orjson's JSONEncodeError, or the standard library's path
        error = exc
    cause = error if isinstance(error, Unencodable) else error.__cause__
    if cause is not None and not isinstance(cause, Unencodable):
        # Raised while evaluating a lazy queryset or the like: the function's own error.
        raise cause
    # orjson's own refusals (a surrogate in a string, nesting too deep) name no value either.
    what = (
        f"a value of type {cause.type_name}" if cause is not None else f"a value JSON cannot hold ({error})"
    )
    unencodable = UnencodableResult(
        f"{function_name} returned {what}, which cannot be sent as JSON: return JSON values "
        "(dict, list, str, int, float, bool, None), dates, decimals, UUIDs, model instances or querysets."
    )
    logger.error("%s", unencodable.message)
    raise unencodable from error


def dumps_canonical(value: Any) -> bytes:
    """JSON with sorted keys: equal values give equal bytes (used for argument keys).

    Strict: a value orjson cannot encode raises ``TypeError`` (arguments are refused, not
    encoded slowly).
    """
    return orjson.dumps(value, default=_default, option=_OPTIONS | orjson.OPT_SORT_KEYS)


def _beyond_orjson(exc: TypeError) -> bool:
    message = str(exc)
    return "64-bit" in message or "Recursion limit" in message


def _dumps_slow(value: Any, *, sort_keys: bool) -> bytes:
    try:
        text = json.dumps(
            value, default=_default, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys
        )
    except RecursionError:
        raise TypeError("Cannot encode a value nested this deep as JSON.") from None
    return text.encode()


loads = orjson.loads
