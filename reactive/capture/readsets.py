"""What a query read, as a pure function of a compiled Django query.

A read set says, per table, which rows a query's result depends on. Each table maps to a set of
conjunctions; a conjunction is a frozenset of ``(column, canonical value)`` pairs that bound the
rows read (``channel_id = 5``). The empty conjunction means "any row of this table". A condition
that cannot be used (a range, a LIKE, an expression, a negation, raw SQL) is dropped, which only
widens the read set: widening costs a useless re-run, narrowing would lose an update.

This module never touches a database: it reads Django's query objects only, so it is tested
without one.

Why dropping conditions is sound: the WHERE clause is a tree of AND/OR over leaves (NOT subtrees
are replaced whole). Replacing a leaf or a NOT subtree by TRUE can only make the formula true for
more rows (AND and OR are monotone, also in SQL's three-valued logic). Replacing every leaf that
is not about alias ``a`` by TRUE leaves a formula over ``a``'s columns alone that every row of a
result tuple satisfies; a row that fails it can't be part of the result before or after a write.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import re
from collections.abc import Hashable, Iterable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from uuid import UUID

import orjson
from django.apps import apps
from django.conf import settings
from django.db.models import (
    BooleanField,
    CharField,
    F,
    ForeignKey,
    IntegerField,
    JSONField,
    QuerySet,
    TextField,
)
from django.db.models.constants import LOOKUP_SEP
from django.db.models.expressions import Col, RawSQL
from django.db.models.fields.related_lookups import RelatedExact, RelatedIn, RelatedIsNull
from django.db.models.lookups import Exact, In, IntegerFieldExact, IsNull, Lookup
from django.db.models.sql.constants import INNER, LOUTER
from django.db.models.sql.datastructures import Join
from django.db.models.sql.query import Query
from django.db.models.sql.subqueries import AggregateQuery
from django.db.models.sql.where import AND, OR, ExtraWhere, NothingNode, WhereNode
from django.utils import timezone
from django.utils.tree import Node

from ..records import ANY_ROW, ANY_TABLE, Conjunction, ReadSet

# Caps on the disjunctive normal form: past them a condition is dropped (the read set widens),
# so a huge `__in` or a product of ORs can't make a read set (and its matching) explode.
MAX_IN_VALUES = 64
MAX_CONJUNCTIONS = 256


# --------------------------------------------------------------------------------------------
# Canonical values
# --------------------------------------------------------------------------------------------


def canonical_value(field, value) -> Hashable:
    """The one canonical, hashable form of a column value, shared by reads and writes.

    ``field`` is the concrete field owning the column (a ForeignKey for ``channel_id``; its
    ``get_prep_value`` delegates to the target field, so ``"5"`` and ``5`` agree). The value is
    prepared the way Django prepares it for a query or a save, then normalised (see
    ``_normalize``). Raises ``TypeError`` for an expression (``F()``, ``Value()``...): its value
    is only known to the database, so a writer must treat such a row as unknown. Raises whatever
    ``get_prep_value`` raises for a value Django itself would reject.
    """
    if field is not None:
        try:
            plain = field.reactive_plain_type
        except AttributeError:
            plain = plain_value_type(field)
        if type(value) is plain or (value is None and plain is not None):
            return value
    if type(value) not in PLAIN_TYPES and hasattr(value, "resolve_expression"):
        raise TypeError(f"an expression has no canonical value: {value!r}")
    if field is not None:
        value = field.get_prep_value(value)
    return _normalize(value, field)


# Types of values that are never expressions (no ``resolve_expression`` to look for).
PLAIN_TYPES = frozenset({int, str, float, bool, type(None)})


def plain_value_type(field) -> type | None:
    """``int``, ``str`` or ``bool``: a value of exactly that type (or None) is its own canonical
    value in the field's column, as Django's own integer, text and boolean fields prepare it (an
    integer column through any chain of relations to it). None for any other field, whose values go through
    ``canonical_value``. Kept on the field once known (it is asked for every value a write
    captures)."""
    try:
        return field.reactive_plain_type
    except AttributeError:
        pass
    plain = None
    domain = value_field(field)
    preparers = {type(field).get_prep_value, type(domain).get_prep_value}
    if preparers <= {IntegerField.get_prep_value, ForeignKey.get_prep_value}:
        plain = int
    elif preparers <= {CharField.get_prep_value, TextField.get_prep_value}:
        plain = str
    elif preparers == {BooleanField.get_prep_value}:
        plain = bool
    field.reactive_plain_type = plain
    return plain


def value_field(field):
    """The field that decides a column's value domain: a relation's target, followed to the end.
    Kept on the field once known (it is asked for every value a write captures)."""
    if field is None:
        return None
    try:
        return field.reactive_value_field
    except AttributeError:
        pass
    start = field
    for _ in range(16):  # a chain of FKs to FKs, never a cycle in practice
        try:
            target = getattr(field, "target_field", None)
        except Exception:  # a multi-column relation has no single target (or none resolved yet)
            return field
        if target is None or target is field:
            break
        field = target
    start.reactive_value_field = field
    return field


def _normalize(value, field=None) -> Hashable:
    """The canonical form of an already prepared value (``get_prep_value`` has run).

    Two values the database considers equal must normalise equal (else an update is missed);
    normalising distinct values together only widens. Hence: Decimals are quantised to the
    field's places (rounded half-up, as the databases store them) and normalised (1.50 == 1.5,
    -0 == 0); datetimes become aware UTC ISO strings; bools stay bools (True == 1 in Python anyway
    and a column never mixes them); JSON values become orjson text with sorted keys (readers never
    constrain a JSON column anyway, see ``usable_value``).
    """
    domain = value_field(field)
    if value is None:
        return None
    if isinstance(domain, JSONField):
        return _json_text(value, domain)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):  # also IntegerChoices / IntEnum members
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Decimal):
        return _decimal_text(value, getattr(domain, "decimal_places", None))
    if isinstance(value, str):  # str.__str__ drops a subclass (TextChoices member, SafeString)
        return str.__str__(value)
    if isinstance(value, datetime.datetime):  # before date: a datetime is a date
        return _datetime_text(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, dict):
        return _json_text(value, domain)
    if isinstance(value, (list, tuple)):  # e.g. an ArrayField
        return tuple(_normalize(item) for item in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(_normalize(item) for item in value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def _decimal_text(value: Decimal, places: int | None) -> str:
    if not value.is_finite():
        return str(value)
    if places is not None:
        with contextlib.suppress(InvalidOperation):  # too many digits: keep it unquantised
            value = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    if value.is_zero():
        return "0"
    return format(value.normalize(), "f")


def _datetime_text(value: datetime.datetime) -> str:
    if settings.USE_TZ:
        if timezone.is_naive(value):
            # What DateTimeField.get_prep_value does (with a warning) for a naive value.
            value = timezone.make_aware(value, timezone.get_default_timezone())
        return value.astimezone(datetime.UTC).isoformat()
    if timezone.is_aware(value):
        value = timezone.make_naive(value, timezone.get_default_timezone())
    return value.isoformat()


def _json_text(value, field) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # a type orjson can't encode: the field's own encoder, or str()
        encoder = getattr(field, "encoder", None)
        return json.dumps(value, sort_keys=True, cls=encoder, default=str)


def usable_value(value) -> bool:
    """Whether a normalised value compares in Python exactly as in SQL (NaN never does)."""
    if value is None or isinstance(value, (bool, int, str, bytes)):
        return True
    if isinstance(value, float):
        return value == value
    if isinstance(value, tuple):
        return all(usable_value(item) for item in value)
    return False


# --------------------------------------------------------------------------------------------
# Conditions: the WHERE tree reduced to equalities, AND, OR, "anything" and "nothing"
# --------------------------------------------------------------------------------------------

# A condition tree is one of:
#   _ANYTHING                            unusable: any row may satisfy it
#   _NOTHING                             no row satisfies it (NothingNode, `__in=[]`)
#   ("eq", alias, column, values)        alias.column IN values (None standing for IS NULL)
#   ("and" | "or", [condition trees])
_ANYTHING = ("anything",)
_NOTHING = ("nothing",)

# The lookups whose meaning is plain SQL equality. Exact type match: a subclass (JSONExact,
# a third party's "exact" for a case-insensitive type) may compare differently.
# IntegerFieldExact only adds an out-of-range check (an impossible value matches nothing).
_EQUALITY_LOOKUPS = frozenset({Exact, IntegerFieldExact, In, IsNull, RelatedExact, RelatedIn, RelatedIsNull})


def _condition_tree(node, query, connection):
    """The usable part of a WHERE node: every unusable leaf or NOT subtree becomes _ANYTHING."""
    if isinstance(node, NothingNode):
        return _NOTHING
    if isinstance(node, WhereNode):
        if node.negated or node.connector not in (AND, OR):  # NOT and XOR aren't monotone
            return _ANYTHING
        if not node.children:
            return _ANYTHING  # an empty node compiles to no condition at all
        children = [_condition_tree(child, query, connection) for child in node.children]
        return ("and" if node.connector == AND else "or", children)
    if isinstance(node, Lookup):
        return _equality(node, query, connection)
    return _ANYTHING  # Exists(), RawSQL, ExtraWhere, any other boolean expression


def _equality(lookup: Lookup, query, connection):
    """("eq", alias, column, values) for ``col = v``, ``col IN (...)``, ``col IS NULL``; else _ANYTHING."""
    if type(lookup) not in _EQUALITY_LOOKUPS:
        return _ANYTHING
    lhs = lookup.lhs
    if not isinstance(lhs, Col) or lhs.alias not in query.alias_map:
        return _ANYTHING
    field = lhs.target
    table = query.alias_map[lhs.alias].table_name
    # The column must belong to the alias's table (a Col of an outer query's alias must not
    # bind an inner alias of the same name), and be compared in the column's own value domain.
    if getattr(getattr(field, "model", None), "_meta", None) is None:
        return _ANYTHING
    if field.model._meta.db_table != table or value_field(lhs.output_field) is not value_field(field):
        return _ANYTHING
    if isinstance(value_field(field), JSONField):
        return _ANYTHING  # JSON equality is backend-specific (key order, 1 vs 1.0, JSON null)
    if isinstance(lookup, IsNull):
        if lookup.rhs is not True or _empty_string_is_null(connection):
            return _ANYTHING
        return ("eq", lhs.alias, field.column, (None,))
    if isinstance(lookup, In):
        if not isinstance(lookup.rhs, (list, tuple)) or len(lookup.rhs) > MAX_IN_VALUES:
            return _ANYTHING  # a subquery, an expression, or too many values
        raw_values = list(lookup.rhs)
    else:
        raw_values = [lookup.rhs]
    values = []
    for raw in raw_values:
        if hasattr(raw, "resolve_expression"):
            return _ANYTHING  # F(), Value(), a subquery, an outer reference
        try:
            # The rhs was prepared by get_prep_lookup; preparing it again could change a value
            # whose get_prep_value isn't idempotent, so only normalise (unless Django didn't).
            value = _normalize(raw, field) if lookup.prepare_rhs else canonical_value(field, raw)
        except Exception:
            return _ANYTHING
        # `raw` (not `value`) tells a string column: Decimals, UUIDs, datetimes normalise to str.
        if not usable_value(value) or _collation_may_fold(raw, field, connection):
            return _ANYTHING
        values.append(value)
    return ("eq", lhs.alias, field.column, tuple(values))


def _empty_string_is_null(connection) -> bool:
    """Oracle stores '' as NULL: a written '' would not match a read `IS NULL`."""
    features = getattr(connection, "features", None)
    return bool(getattr(features, "interprets_empty_strings_as_nulls", False))


def _collation_may_fold(value, field, connection) -> bool:
    """Whether the database may find a string equal to a different string ('a' = 'A')."""
    if not isinstance(value, str):
        return False
    domain = value_field(field)
    if getattr(field, "db_collation", None) or getattr(domain, "db_collation", None):
        return True  # a declared collation may be case- or accent-insensitive
    if connection.vendor not in ("sqlite", "postgresql"):
        return True  # MySQL's default collations are case-insensitive and pad spaces
    try:
        db_type = (domain.db_type(connection) or "").lower()
    except Exception:
        return True
    # citext compares case-insensitively; a fixed-width char(n) compares space-padded.
    return "citext" in db_type or db_type.startswith(("char(", "character(", "bpchar", "nchar"))


# --------------------------------------------------------------------------------------------
# Disjunctive normal form, per alias
# --------------------------------------------------------------------------------------------

# A DNF is a frozenset of conjunctions. TRUE (no bound) holds the empty conjunction; FALSE is empty.
_TRUE: frozenset[Conjunction] = frozenset({ANY_ROW})
_FALSE: frozenset[Conjunction] = frozenset()


def _dnf(tree, alias: str) -> frozenset[Conjunction]:
    """The DNF of ``tree`` with every condition not on ``alias`` replaced by TRUE."""
    kind = tree[0]
    if kind == "nothing":
        return _FALSE
    if kind == "eq":
        _, tree_alias, column, values = tree
        if tree_alias != alias:
            return _TRUE
        return frozenset(frozenset({(column, value)}) for value in values)
    if kind == "and":
        return _and_dnf([_dnf(child, alias) for child in tree[1]])
    if kind == "or":
        return _or_dnf([_dnf(child, alias) for child in tree[1]])
    return _TRUE


def _and_dnf(dnfs: list[frozenset[Conjunction]]) -> frozenset[Conjunction]:
    result = _TRUE
    for dnf in dnfs:
        if dnf == _TRUE:
            continue
        if len(result) * len(dnf) > MAX_CONJUNCTIONS:
            continue  # dropping an operand of an AND only widens
        result = frozenset(
            merged for left in result for right in dnf if (merged := _conjoin(left, right)) is not None
        )
    return result


def _or_dnf(dnfs: list[frozenset[Conjunction]]) -> frozenset[Conjunction]:
    result = frozenset().union(*dnfs)
    if ANY_ROW in result or len(result) > MAX_CONJUNCTIONS:
        return _TRUE  # an operand of an OR can't be dropped: the whole OR goes
    return result


def _conjoin(left: Conjunction, right: Conjunction) -> Conjunction | None:
    """``left AND right``, or None if it asks one column for two different values."""
    merged = dict(left)
    for column, value in right:
        if column in merged and merged[column] != value:
            return None
        merged[column] = value
    return frozenset(merged.items())


# --------------------------------------------------------------------------------------------
# Joins
# --------------------------------------------------------------------------------------------


def _bound_aliases(query, tree) -> dict[str, frozenset[Conjunction]]:
    """Per alias of ``query.alias_map``, the conjunctions bounding the rows it reads."""
    bounds = {}
    for alias, join in query.alias_map.items():
        dnf = _dnf(tree, alias)
        if not dnf:
            # The WHERE can match no row of this alias. The query then reads nothing, but a
            # read set that bounds a read table by nothing is a trap if the reasoning above is
            # ever wrong, and such queries are rare: record ANY_ROW.
            dnf = _TRUE
        if getattr(join, "join_type", None) == LOUTER and any(
            all(value is None for _, value in conjunction) for conjunction in dnf
        ):
            # A LEFT OUTER JOIN yields a NULL-extended row when nothing joins; such a row passes
            # `col IS NULL`, and inserting a joining row (which fails it) changes the result:
            # `Channel.filter(messages__isnull=True)` must see every new message.
            dnf = _TRUE
        bounds[alias] = dnf
    _propagate_across_inner_joins(query.alias_map, bounds)
    return bounds


def _propagate_across_inner_joins(alias_map, bounds: dict[str, frozenset[Conjunction]]) -> None:
    """Carry equalities on join columns to an unbounded side of an INNER JOIN (cacheops's idea).

    In every result tuple both sides of an INNER JOIN are real rows with equal join columns; so
    if every conjunction of one side fixes the join columns, the other side's rows are bounded by
    the same values (`Restaurant.filter(pk=5)` reads only `place.id = 5`). Only between fields of
    one value domain (an FK and its target), so both sides' canonical values agree.
    """
    changed = True
    while changed:
        changed = False
        for alias, join in alias_map.items():
            if not isinstance(join, Join) or join.join_type != INNER or join.parent_alias not in bounds:
                continue
            if not join.join_fields or alias not in bounds:
                continue
            pairs = [(lhs.column, rhs.column) for lhs, rhs in join.join_fields]
            if not all(value_field(lhs) is value_field(rhs) for lhs, rhs in join.join_fields):
                continue
            for source, target, columns in (
                (join.parent_alias, alias, pairs),
                (alias, join.parent_alias, [(rhs, lhs) for lhs, rhs in pairs]),
            ):
                if bounds[target] != _TRUE or bounds[source] == _TRUE:
                    continue
                carried = _carry(bounds[source], columns)
                if carried is not None:
                    bounds[target] = carried
                    changed = True


def _carry(dnf: frozenset[Conjunction], columns: list[tuple[str, str]]) -> frozenset[Conjunction] | None:
    carried = set()
    for conjunction in dnf:
        values = dict(conjunction)
        if not all(source in values for source, _ in columns):
            return None
        carried.add(frozenset((target, values[source]) for source, target in columns))
    return frozenset(carried)


# --------------------------------------------------------------------------------------------
# Columns: which columns of each table a query's result depends on
# --------------------------------------------------------------------------------------------
#
# A result depends on a row's column if the column is selected (directly, in an annotation, in an
# aggregate's argument), filtered on (WHERE, HAVING), joined on, grouped by or ordered by. An
# UPDATE assigning none of them changes no value the query sees and moves no row in or out of it,
# in whatever rows it matches. COUNT(*) names no column. Every column reference the analysis
# can't place (raw SQL, extra(), an unresolved name, a relation ordered by its own ordering, a
# set operation) makes the query depend on every column of its tables.


def dependency_columns(query, select: list | None, build: _Build | None = None) -> dict[str, set[str]] | None:
    """Per table of ``query`` (not of its subqueries), the columns its result depends on; None:
    every column of every table. ``select``: the compiler's resolved select expressions."""
    if query.combinator or query.extra or query.extra_tables or query.extra_order_by:
        return None
    build = build if build is not None else _Build(None, select, query)
    used: dict[str, set[str]] = {}
    parts: list = [query.where, list(query.annotations.values())]
    if select is not None:
        parts.append(list(select))
    else:
        if query.default_cols or query.select_related:
            return None  # the model's columns, or a related model's: all of them
        parts.append(list(query.select))
    if isinstance(query.group_by, tuple):
        parts.append(list(query.group_by))
    for alias, join in query.alias_map.items():
        if not isinstance(join, Join):
            continue
        if join.filtered_relation is not None:
            return None  # its condition names fields, resolved only while compiling
        parent = query.alias_map.get(join.parent_alias)
        for lhs, rhs in join.join_fields:
            if parent is not None:
                used.setdefault(parent.table_name, set()).add(lhs.column)
            used.setdefault(join.table_name, set()).add(rhs.column)
        restriction = join.join_field.get_extra_restriction(alias, join.parent_alias)
        if restriction is not None:  # a GenericRelation's content type
            parts.append(restriction)
    ordering = query.order_by
    if not ordering and query.default_ordering and query.model is not None:
        ordering = query.get_meta().ordering
    for item in (*ordering, *query.distinct_fields):
        if isinstance(item, str):
            if not _add_named_column(query, item, used):
                return None
        else:
            parts.append(item)
    if not _walk_columns(parts, query, used, build):
        return None
    return used


def _add_named_column(query, name: str, used: dict[str, set[str]]) -> bool:
    """The column an ordering or DISTINCT ON name stands for; False if it can't be told."""
    name = name.lstrip("-+")
    if name == "?" or name in query.annotations:
        return True  # random, or an annotation (walked with the annotations)
    if query.model is None or LOOKUP_SEP in name:
        return False
    meta = query.get_meta()
    if name == "pk":
        field = meta.pk
    else:
        try:
            field = meta.get_field(name)
        except Exception:
            return False
    if getattr(field, "column", None) is None:
        return False  # a reverse relation or a many-to-many
    if field.is_relation and name != field.attname:
        return False  # ordered by the related model's ordering
    # Ordering names the base table's column (an inherited one lives in its parent's table).
    used.setdefault(field.model._meta.db_table, set()).add(field.column)
    if field.model._meta.db_table != meta.db_table:
        used.setdefault(meta.db_table, set()).add(field.column)
    return True


def _walk_columns(parts: Iterable, query, used: dict[str, set[str]], build: _Build) -> bool:
    """Add every column ``parts`` refer to; False on a reference that can't be placed."""
    stack = list(parts)
    while stack:
        node = stack.pop()
        if node is None or isinstance(node, (str, bytes, int, float, Decimal, bool)):
            continue
        if isinstance(node, Col):
            target = node.target
            owner = getattr(getattr(target, "model", None), "_meta", None)
            column = getattr(target, "column", None)
            if column is None:
                return False
            join = query.alias_map.get(node.alias)
            if join is not None:
                table = join.table_name
                if not isinstance(table, str):
                    return False
                used.setdefault(table, set()).add(column)
            elif owner is not None:  # an outer query's column, from a subquery
                build.outer_columns.setdefault(owner.db_table, set()).add(column)
            else:
                return False
        elif isinstance(node, (Query, QuerySet)):
            continue  # a subquery: its own tables' columns are its own read
        elif isinstance(node, (RawSQL, ExtraWhere, F)):
            return False  # raw SQL, or a name never resolved (an outer reference)
        else:
            stack.extend(_parts_of(node))
    return True


def _parts_of(node) -> Iterable:
    """The nodes below a node of a query's tree: a WHERE node's or a ``Q``'s children, a lookup's
    two sides, an expression's sources, a container's items; nothing below a value."""
    if isinstance(node, Node):
        return node.children
    if isinstance(node, (list, tuple, set, frozenset)):
        return node
    if isinstance(node, dict):
        return node.values()
    if isinstance(node, Lookup):
        return (node.lhs, node.rhs)
    if hasattr(node, "get_source_expressions"):
        return node.get_source_expressions()
    return ()


# --------------------------------------------------------------------------------------------
# Tables: the query's own, then every nested query and raw SQL fragment
# --------------------------------------------------------------------------------------------


def read_set_of(query, connection, sql: str | None = None, select: list | None = None) -> ReadSet:
    """The read set of a compiled ``django.db.models.sql.Query`` (after ``as_sql()``).

    ``sql``, the statement that ran, tells joins Django trimmed (still in ``alias_map``, absent
    from the SQL) from joins it added while compiling (``select_related``, ordering); without
    it every join counts, which only widens. ``select``, the compiler's resolved select
    expressions (``compiler.select``'s first items), names the columns fetched (the model's
    default columns, ``only()``/``defer()``, ``select_related``); without it a query selecting
    its model's default columns depends on every column of its tables.
    """
    read_set = ReadSet()
    build = _Build(sql, select, query)
    _add_query(read_set, query, connection, set(), build)
    build.finish(read_set)
    return read_set


class _Build:
    """What one ``read_set_of`` call gathers besides the read set: the compiled query's select
    list, columns of outer queries referenced from a subquery, and whether some column reference
    could not be placed (then every table read depends on every column)."""

    __slots__ = ("everything", "outer_columns", "select", "sql", "top")

    def __init__(self, sql: str | None, select: list | None, top) -> None:
        self.sql = sql
        self.select = select
        self.top = top
        self.outer_columns: dict[str, set[str]] = {}
        self.everything = False

    def finish(self, read_set: ReadSet) -> None:
        if self.everything:
            read_set.columns.clear()
            return
        for table, columns in self.outer_columns.items():
            if table in read_set.columns:  # absent: the table depends on every column already
                read_set.columns[table] = read_set.columns[table].union(columns)


def _add_query(read_set: ReadSet, query, connection, seen: set[int], build: _Build) -> None:
    if id(query) in seen:
        return
    seen.add(id(query))

    if isinstance(query, AggregateQuery):
        # SELECT <aggregates> FROM (<inner query>): the outer FROM has no table of its own.
        _add_query(read_set, query.inner_query, connection, seen, build)
        # Its aggregates refer to the inner query's columns (selected there too).
        if not _walk_columns(query.annotations.values(), query.inner_query, {}, build):
            build.everything = True
    elif not _unsatisfiable(query.where):
        _add_own_tables(read_set, query, connection, build)

    for nested in _nested_parts(query):
        _add_nested(read_set, nested, connection, seen, build)


def _unsatisfiable(node) -> bool:
    """Whether Django itself knows the WHERE matches no row (``.none()``, ``pk__in=[]`` in an AND).

    Such a query returns the same (empty) result whatever the data, so it reads none of its own
    tables; ``filter(pk__in=ids)`` with an empty ``ids`` is common enough that widening it to
    every row would re-run those queries on every write to the table.
    """
    if isinstance(node, NothingNode):
        return True
    if type(node) in (In, RelatedIn) and isinstance(node.rhs, (list, tuple, set, frozenset)):
        return not [value for value in node.rhs if value is not None]  # SQL's IN never matches NULL
    if not isinstance(node, WhereNode) or node.negated or not node.children:
        return False
    if node.connector == AND:
        return any(_unsatisfiable(child) for child in node.children)
    if node.connector == OR:
        return all(_unsatisfiable(child) for child in node.children)
    return False


def _add_own_tables(read_set: ReadSet, query, connection, build: _Build) -> None:
    """The base table and every joined alias, bounded by the WHERE clause's equalities, each
    through the columns the query uses of it."""
    sql = build.sql
    if not query.alias_map:
        if query.model is not None:  # never compiled: its base table at least
            read_set.add_table(query.get_meta().db_table)
        return
    # Only the WHERE part: conditions that Django moves to HAVING or QUALIFY filter groups or
    # window results, not rows, so they are dropped (widened).
    where, _having, _qualify = query.where.split_having_qualify(must_group_by=query.group_by is not None)
    tree = _condition_tree(where, query, connection) if where is not None else _ANYTHING
    used = dependency_columns(query, build.select if query is build.top else None, build)
    # Every alias that is in the SQL, whatever its refcount: joins added while compiling
    # (select_related, ordering) have a refcount of 0 again after as_sql().
    for alias, dnf in _bound_aliases(query, tree).items():
        if sql is not None and _trimmed(query, alias, connection, sql):
            continue
        table = query.alias_map[alias].table_name
        if not isinstance(table, str):
            table = ANY_TABLE
        columns = None if used is None or table == ANY_TABLE else used.get(table, ())
        for conjunction in dnf:
            read_set.add(table, conjunction, columns)


def _trimmed(query, alias: str, connection, sql: str) -> bool:
    """A join Django removed from the SQL (``filter(fk_id=...)`` trims the join to the target)."""
    join = query.alias_map[alias]
    if not isinstance(join, Join) or query.alias_refcount.get(alias, 0) > 0:
        return False
    if connection.ops.quote_name(alias) in sql:
        return False
    # Generated aliases (T3, U0) appear unquoted; a false "present" would only widen.
    return re.search(rf"\b{re.escape(alias)}\b", sql) is None


def _nested_parts(query) -> Iterable:
    """Every part of a query that may hold a subquery or raw SQL."""
    yield query.where  # whole, HAVING included: its subqueries are read too
    yield from query.annotations.values()
    yield from query.select
    yield from query.order_by
    if isinstance(query.group_by, tuple):
        yield from query.group_by
    yield from query.combined_queries
    for join in query.alias_map.values():
        if getattr(join, "filtered_relation", None) is not None:
            yield join.filtered_relation.condition
    for sql, _params in query.extra.values():
        yield _RawFragment(sql)
    for table in query.extra_tables:
        yield _ExtraTable(table)
    # extra(order_by=...) names columns (quoted as identifiers), of tables already in FROM.


class _RawFragment:
    __slots__ = ("sql",)

    def __init__(self, sql: str) -> None:
        self.sql = sql


class _ExtraTable:
    __slots__ = ("table",)

    def __init__(self, table: str) -> None:
        self.table = table


def _add_nested(read_set: ReadSet, node, connection, seen: set[int], build: _Build) -> None:
    """Add the tables of every subquery and raw SQL fragment found under ``node``."""
    stack = [node]
    while stack:
        node = stack.pop()
        if node is None or isinstance(node, (str, bytes, int, float)):
            continue
        if isinstance(node, Query):
            _add_query(read_set, node, connection, seen, build)
        elif isinstance(node, QuerySet):
            _add_query(read_set, node.query, connection, seen, build)
        elif isinstance(node, _ExtraTable):
            read_set.add_table(node.table)
        elif isinstance(node, _RawFragment):
            read_set.merge(read_set_of_raw_sql(node.sql, known_tables()))
        elif isinstance(node, ExtraWhere):
            for sql in node.sqls:
                read_set.merge(read_set_of_raw_sql(sql, known_tables()))
        elif isinstance(node, RawSQL):
            read_set.merge(read_set_of_raw_sql(node.sql, known_tables()))
        else:
            stack.extend(_parts_of(node))
            if not isinstance(node, (Node, Lookup)) and hasattr(node, "get_source_expressions"):
                # A pre-5.x style SubqueryConstraint, or a custom expression holding a query.
                stack.extend(getattr(node, name, None) for name in ("query", "query_object", "queryset"))


@functools.cache
def known_tables() -> frozenset[str]:
    """Every table of an installed model, auto-created m2m through tables included."""
    return frozenset(model._meta.db_table for model in apps.get_models(include_auto_created=True))


# --------------------------------------------------------------------------------------------
# Raw SQL
# --------------------------------------------------------------------------------------------


def read_set_of_raw_sql(sql: str, known_tables: Iterable[str]) -> ReadSet:
    """The read set of raw SQL: every known table named in it, or ANY_TABLE if none is."""
    lowered = sql.lower()
    read_set = ReadSet()
    for table in known_tables:
        if _names_table(lowered, table.lower()):
            read_set.add_table(table)
    if not read_set.tables:
        # Nothing we know is named: the SQL may still read a table through a view, a function
        # or a name we don't know, so it depends on everything.
        read_set.add_table(ANY_TABLE)
    return read_set


def _names_table(lowered_sql: str, lowered_table: str) -> bool:
    # A whole identifier, quoted ("t", `t`, [t]) or not: `chat_message` must not match inside
    # `chat_message_tags` nor `old_chat_message`.
    if not lowered_table or lowered_table not in lowered_sql:
        return False
    return re.search(rf"(?<![\w$]){re.escape(lowered_table)}(?![\w$])", lowered_sql) is not None
