"""Keyset pagination of querysets, as PROTOCOL.md's "Pagination" describes.

A page is the rows strictly after ``cursor`` in the queryset's ordering: up to ``num_items`` of
them, or, once the client has fixed the page's ``end_cursor``, exactly the rows up to and
including ``end_cursor`` however many that is now, up to ``PAGINATION_MAX_ITEMS``. A cursor
names a position in the ordering, not a row: it holds the ordering values of a row (plus its
primary key, which makes the order total), so a page boundary stays put when the row it came
from is edited or deleted, and the pages of one client never overlap or leave a gap.

Cursors are signed (Django's ``signing``, with a salt of their own): a client can hand back
only positions the server gave it, so a made-up ``end_cursor`` cannot ask for a page of any
size, and a cursor is ``invalid_args`` unless this server made it.

The keyset conditions are plain ORM filters (``Q(created__lt=x) | Q(created=x, pk__lt=y)``):
no raw SQL, so the engine sees the reads like any other query's.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import orjson
from django.core import signing
from django.core.exceptions import FieldError, ValidationError
from django.db import connections
from django.db.models import F, Field, Model, OrderBy, Q, QuerySet
from django.db.models.constants import LOOKUP_SEP
from django.db.models.query import (
    FlatValuesListIterable,
    NamedValuesListIterable,
    ValuesListIterable,
)
from django.db.models.utils import create_namedtuple_class
from django.utils.duration import duration_iso_string
from rest_framework import serializers

from ..errors import InvalidArgs, plain_errors
from ..settings import reactive_settings
from . import encoding

# The continue_cursor of an empty first page: the position before every row. As a `cursor` it
# means "from the start"; as an `end_cursor` it makes the page empty. It names no row, so it
# needs no signature; signed cursors hold a ":" and never equal it.
START_CURSOR = "start"

# Cursors are signed with SECRET_KEY under this salt, so no other signed value (a sign-in
# token, a session) passes for one.
_CURSOR_SALT = "reactive.pagination.cursor"
_INVALID_CURSOR = "Invalid cursor: pass back a cursor that this query returned."

# Names of the annotations that fetch each row's ordering values along with the row.
_ALIAS_PREFIX = "_reactive_cursor_"


class _CursorField(serializers.CharField):
    """A cursor: a string as given (DRF's CharField would turn a number into one), signed by
    this server. Only the signature is checked here; ``paginate`` reads the position."""

    default_error_messages = {"forged": _INVALID_CURSOR}

    def __init__(self) -> None:
        super().__init__(allow_null=True, required=False, default=None, trim_whitespace=False)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        if data != START_CURSOR:
            try:
                _signer().unsign(data)
            except signing.BadSignature:
                self.fail("forged")
        return super().to_internal_value(data)


class PaginationOptions(serializers.Serializer):
    """Validates a paginated query's ``pagination`` argument.

    Declare it as ``args={..., "pagination": PaginationOptions()}``.
    """

    num_items = serializers.IntegerField(min_value=1)
    cursor = _CursorField()
    end_cursor = _CursorField()

    def validate_num_items(self, value: int) -> int:
        # The largest page is a setting, so it is read when validating, not when declaring.
        limit = reactive_settings.PAGINATION_MAX_ITEMS
        if value > limit:
            raise serializers.ValidationError(f"Ensure this value is less than or equal to {limit}.")
        return value


class Page(TypedDict):
    page: list[Any]
    is_done: bool
    continue_cursor: str


class UnsupportedQueryset(ValueError):
    """``paginate()`` cannot page through this queryset: a programming error, not a user error."""


@dataclass(frozen=True)
class _Key:
    """One column of the total order: a field path (or annotation name) and its direction."""

    path: str
    descending: bool
    nulls_first: bool
    nulls_last: bool
    # Whether NULLs sit after every value in this key's order (explicit, or the database's
    # default: NULL is the largest value on PostgreSQL and Oracle, the smallest elsewhere).
    nulls_after: bool
    # Whether the value can be NULL (a null=True field, a nullable join, an annotation):
    # conditions on a NOT NULL column leave out the IS NULL branches, which would only
    # keep the database from using an index.
    nullable: bool

    def order_by(self) -> OrderBy:
        return OrderBy(
            F(self.path),
            descending=self.descending,
            nulls_first=self.nulls_first or None,
            nulls_last=self.nulls_last or None,
        )

    def beyond(self, value: Any, *, after: bool) -> Q | None:
        """Rows strictly after (or before) ``value`` on this key alone; None if there can be none."""
        nulls_beyond = self.nullable and after == self.nulls_after
        if value is None:
            return Q(**{f"{self.path}__isnull": False}) if not nulls_beyond else None
        lookup = "gt" if after != self.descending else "lt"
        condition = Q(**{f"{self.path}__{lookup}": value})
        if nulls_beyond:
            condition |= Q(**{f"{self.path}__isnull": True})
        return condition

    def equal(self, value: Any) -> Q:
        if value is None:
            return Q(**{f"{self.path}__isnull": True})
        return Q(**{self.path: value})


def paginate(queryset: QuerySet, pagination: Mapping[str, Any]) -> Page:
    """One page of ``queryset``: ``{"page": [...], "is_done": bool, "continue_cursor": str}``.

    ``pagination`` is the (validated) ``{"num_items", "cursor", "end_cursor"}`` argument. The
    queryset's ordering (its ``order_by()``, else the model's ``Meta.ordering``) may use fields,
    fields across foreign keys (``"author__username"``), annotations, ``F()`` and
    ``F().asc()/.desc()`` with ``nulls_first``/``nulls_last``; the primary key is added as the
    last tie-break. Page items are what the queryset yields (instances, dicts or tuples).
    A page never holds more than ``PAGINATION_MAX_ITEMS`` rows: a page fixed by ``end_cursor``
    that has grown past it is cut there, with ``is_done`` false and a ``continue_cursor`` at its
    last row. Raises ``InvalidArgs`` for a cursor this queryset did not make, and
    ``UnsupportedQueryset`` for an ordering that cannot be paged (random, raw SQL, expressions,
    across a to-many relation) or a sliced, combined or aggregated queryset.
    """
    options = _validated(pagination)
    _check_shape(queryset)
    keys, queryset = _total_order(queryset)
    aliases = _aliases(queryset, len(keys))
    ordered = queryset.order_by(*(key.order_by() for key in keys))
    fetch = ordered.annotate(**{alias: F(key.path) for alias, key in zip(aliases, keys, strict=True)})
    fields = [fetch.query.annotations[alias].output_field for alias in aliases]

    cursor, end_cursor = options["cursor"], options["end_cursor"]
    if cursor is not None:
        start = _decode(cursor, "cursor", keys, fields)
        if start is not None:
            fetch = fetch.filter(_beyond(keys, start, after=True))

    if end_cursor is not None:
        end = _decode(end_cursor, "end_cursor", keys, fields)
        if end is None:
            # Up to the start: nothing, and done if there is no row at all.
            return {"page": [], "is_done": not ordered.exists(), "continue_cursor": end_cursor}
        limit = reactive_settings.PAGINATION_MAX_ITEMS
        rows = _fetch(queryset, fetch.filter(_up_to(keys, end))[: limit + 1], aliases)
        if len(rows) > limit:
            # Rows inserted into a fixed page grew it past the largest page: it ends at its last
            # row instead, and the rows after it up to end_cursor are a page of their own.
            rows = rows[:limit]
            cut = _encode(rows[-1][1])
            return {"page": [row for row, _ in rows], "is_done": False, "continue_cursor": cut}
        is_done = not ordered.filter(_beyond(keys, end, after=True)).exists()
        return {"page": [row for row, _ in rows], "is_done": is_done, "continue_cursor": end_cursor}

    num_items = options["num_items"]
    rows = _fetch(queryset, fetch[: num_items + 1], aliases)
    is_done = len(rows) <= num_items
    rows = rows[:num_items]
    # An empty page continues where it started: from its cursor, or from the start.
    empty_continue = START_CURSOR if cursor is None else cursor
    continue_cursor = _encode(rows[-1][1]) if rows else empty_continue
    return {"page": [row for row, _ in rows], "is_done": is_done, "continue_cursor": continue_cursor}


def _validated(pagination: Mapping[str, Any]) -> dict[str, Any]:
    """The options with defaults filled in; a dict that skipped ``PaginationOptions`` is checked."""
    serializer = PaginationOptions(data=dict(pagination) if isinstance(pagination, Mapping) else pagination)
    if not serializer.is_valid():
        raise InvalidArgs("Invalid pagination options.", {"pagination": plain_errors(serializer.errors)})
    return dict(serializer.validated_data)


def _check_shape(queryset: QuerySet) -> None:
    if not isinstance(queryset, QuerySet):
        raise UnsupportedQueryset(f"paginate() takes a QuerySet, got {type(queryset).__name__}.")
    query = queryset.query
    if query.is_sliced:
        raise UnsupportedQueryset("paginate() cannot page a sliced queryset; it slices it itself.")
    if query.combinator:
        raise UnsupportedQueryset(f"paginate() cannot page a {query.combinator}() of querysets.")
    if query.group_by is not None:
        # Grouped rows have no primary key to break ties with.
        raise UnsupportedQueryset("paginate() cannot page an aggregated (grouped) queryset.")
    if query.distinct and queryset._fields is not None:
        # The ordering values and primary key added to each row would change what is distinct.
        raise UnsupportedQueryset("paginate() cannot page a .distinct() .values()/.values_list() queryset.")
    if query.extra_order_by:
        raise UnsupportedQueryset("paginate() cannot page an ordering given with extra(order_by=...).")


def _total_order(queryset: QuerySet) -> tuple[list[_Key], QuerySet]:
    """The queryset's ordering as keys ending with the primary key, and the queryset to order.

    A ``.reverse()``d queryset is turned back to standard ordering with its keys flipped, so
    the ``order_by()`` built from the keys means what it says.
    """
    query = queryset.query
    model = queryset.model
    if query.order_by or not query.default_ordering:
        items: Sequence[Any] = query.order_by
    else:
        items = model._meta.ordering
    standard = query.standard_ordering
    if not standard:
        queryset = queryset.reverse()
    largest = connections[queryset.db].features.nulls_order_largest

    keys: list[_Key] = []
    for item in items:
        path, descending, nulls_first, nulls_last = _parse_ordering_item(item)
        if not standard:
            descending = not descending
            nulls_first, nulls_last = nulls_last, nulls_first
        is_pk, nullable = _check_path(queryset, path)
        if nulls_first:
            nulls_after = False
        elif nulls_last:
            nulls_after = True
        else:
            nulls_after = largest != descending
        keys.append(_Key(path, descending, nulls_first, nulls_last, nulls_after, nullable))
        if is_pk:
            # The primary key orders every row; later keys can never break a tie.
            return keys, queryset
    # Ascending in the order as written, so descending once a .reverse() is applied.
    keys.append(_Key("pk", not standard, False, False, largest == standard, nullable=False))
    return keys, queryset


def _parse_ordering_item(item: Any) -> tuple[str, bool, bool, bool]:
    """(path, descending, nulls_first, nulls_last) of one ``order_by()`` item."""
    if isinstance(item, str):
        if item == "?":
            raise UnsupportedQueryset("paginate() cannot page a random ordering (order_by('?')).")
        descending = item.startswith("-")
        name = item.removeprefix("-")
        if not name or "." in name:
            raise UnsupportedQueryset(f"paginate() cannot page the raw SQL ordering {item!r}.")
        return name, descending, False, False
    if isinstance(item, F):
        return item.name, False, False, False
    if isinstance(item, OrderBy) and isinstance(item.expression, F):
        return item.expression.name, item.descending, bool(item.nulls_first), bool(item.nulls_last)
    raise UnsupportedQueryset(
        f"paginate() cannot page the ordering {item!r}: order by field names (e.g. '-created', "
        "'author__username'), F() or F().desc(), or annotate() the expression and order by its name."
    )


def _check_path(queryset: QuerySet, path: str) -> tuple[bool, bool]:
    """Check an ordering path can be paged on; return (is the model's primary key, can be NULL)."""
    query = queryset.query
    if path in query.annotations:
        annotation = query.annotations[path]
        if getattr(annotation, "contains_aggregate", False) or getattr(
            annotation, "contains_over_clause", False
        ):
            raise UnsupportedQueryset(
                f"paginate() cannot page on the aggregate or window annotation {path!r}."
            )
        return False, True
    if path in (query.extra or {}):
        raise UnsupportedQueryset(f"paginate() cannot page on the extra() select {path!r}.")
    opts = queryset.model._meta
    pieces = path.split(LOOKUP_SEP)
    try:
        joins, final_field, _targets, rest = query.names_to_path(pieces, opts)
    except FieldError as error:
        raise UnsupportedQueryset(f"paginate() cannot page on {path!r}: {error}") from error
    if rest:
        raise UnsupportedQueryset(
            f"paginate() cannot page on {path!r}: annotate() the transform and order by its name."
        )
    if any(join.m2m for join in joins):
        raise UnsupportedQueryset(
            f"paginate() cannot page on {path!r}: it crosses a to-many relation, which repeats rows."
        )
    related = final_field.related_model if final_field.is_relation else None
    if (
        related is not None
        and related._meta.ordering
        and pieces[-1] != getattr(final_field, "attname", None)
        and path != "pk"
    ):
        # Django orders by the related model's Meta.ordering here, which a cursor cannot follow.
        raise UnsupportedQueryset(
            f"paginate() cannot page on the relation {path!r} (ordered by {related.__name__}.Meta.ordering): "
            f"order by '{path}_id' or by a field of {related.__name__} such as '{path}__pk'."
        )
    # A reverse one-to-one or a nullable foreign key on the way is an outer join: NULL.
    nullable = final_field.null or any(not join.direct or join.join_field.null for join in joins)
    return not joins and final_field == opts.pk, nullable


def _aliases(queryset: QuerySet, count: int) -> list[str]:
    taken = set(queryset.query.annotations) | {f.attname for f in queryset.model._meta.concrete_fields}
    prefix = _ALIAS_PREFIX
    while any(name.startswith(prefix) for name in taken):
        prefix = "_" + prefix
    return [f"{prefix}{index}" for index in range(count)]


def _beyond(keys: Sequence[_Key], values: Sequence[Any], *, after: bool) -> Q:
    """Rows strictly after (or before) the position ``values`` in the total order.

    ``(k1 > v1) OR (k1 = v1 AND k2 > v2) OR ...``, with NULL placed as the order places it.
    The last key is the primary key, never NULL, so the result is never empty.
    """
    condition: Q | None = None
    equal = Q()
    for key, value in zip(keys, values, strict=True):
        step = key.beyond(value, after=after)
        if step is not None:
            branch = equal & step
            condition = branch if condition is None else condition | branch
        equal &= key.equal(value)
    assert condition is not None  # the primary key key always has a step
    return condition


def _up_to(keys: Sequence[_Key], values: Sequence[Any]) -> Q:
    """Rows before or at the position ``values``: written positively, since negating
    conditions on NULLable columns is where SQL and intuition part ways."""
    at = Q()
    for key, value in zip(keys, values, strict=True):
        at &= key.equal(value)
    return _beyond(keys, values, after=False) | at


def _fetch(queryset: QuerySet, fetch: QuerySet, aliases: Sequence[str]) -> list[tuple[Any, list[Any]]]:
    """Evaluate ``fetch``: each row as ``queryset`` yields it, with its ordering values."""
    iterable = queryset._iterable_class
    if iterable in (FlatValuesListIterable, NamedValuesListIterable):
        # These drop or rename the extra columns; read plain tuples and rebuild their rows.
        fetch = fetch._chain()
        fetch._iterable_class = ValuesListIterable
    count = len(aliases)
    rows: list[tuple[Any, list[Any]]] = []
    if iterable is NamedValuesListIterable:
        query = queryset.query
        names = queryset._fields or (*query.extra_select, *query.values_select, *query.annotation_select)
        row_class = create_namedtuple_class(*names)
    for row in fetch:
        if isinstance(row, Model):
            values = [row.__dict__.pop(alias) for alias in aliases]
            rows.append((row, values))
        elif isinstance(row, dict):
            values = [row.pop(alias) for alias in aliases]
            rows.append((row, values))
        else:
            values = list(row[-count:])
            item = tuple(row[:-count])
            if iterable is FlatValuesListIterable:
                item = item[0]
            elif iterable is NamedValuesListIterable:
                item = row_class(*item)
            rows.append((item, values))
    return rows


class _CursorSerializer:
    """``signing``'s serializer for cursors: the one JSON encoding of results, as bytes."""

    def dumps(self, value: Any) -> bytes:
        return encoding.dumps(value)

    def loads(self, data: bytes) -> Any:
        return orjson.loads(data)


def _signer() -> signing.Signer:
    # Made per use: SECRET_KEY (and its fallbacks) are read when a Signer is made.
    return signing.Signer(salt=_CURSOR_SALT)


def _encode(values: Sequence[Any]) -> str:
    """A signed cursor: the position's values as JSON, compressed if that is shorter."""
    data = [_cursor_value(value) for value in values]
    return _signer().sign_object(data, serializer=_CursorSerializer, compress=True)


def _cursor_value(value: Any) -> Any:
    """A JSON value that the field's ``to_python()`` turns back into ``value``."""
    if isinstance(value, datetime.timedelta):
        return duration_iso_string(value)
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def _decode(cursor: str, name: str, keys: Sequence[_Key], fields: Sequence[Field]) -> list[Any] | None:
    """The ordering values of the cursor given as ``name``; None for ``START_CURSOR``.

    A signed cursor of another queryset's ordering is ``InvalidArgs`` as well when its shape or
    values do not fit this one.
    """
    if cursor == START_CURSOR:
        return None
    invalid = InvalidArgs(_INVALID_CURSOR, {"pagination": {name: [_INVALID_CURSOR]}})
    try:
        raw = _signer().unsign_object(cursor, serializer=_CursorSerializer)
    except (signing.BadSignature, ValueError):
        raise invalid from None
    if not isinstance(raw, list) or len(raw) != len(keys):
        raise invalid
    if any(value is None and not key.nullable for key, value in zip(keys, raw, strict=True)):
        raise invalid
    try:
        return [
            None if value is None else field.to_python(value)
            for field, value in zip(fields, raw, strict=True)
        ]
    except (ValidationError, ValueError, TypeError, ArithmeticError):
        raise invalid from None
