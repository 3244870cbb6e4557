"""Worker of the ORM-write overhead part; ``bench/overhead.py`` runs it in a subprocess.

    DJANGO_SETTINGS_MODULE=bench.settings_plain SQLITE_PATH=/tmp/x.sqlite3 \
        python -m bench.overhead_worker --variants plain --iterations 3000
    (then commands on stdin: ``slice plain create 30``, ``round plain``, ``floor``, ``check``,
    ``quit``)

Migrates a fresh SQLite database, then times plain ORM writes on ``benchapp.Item``: one slice of
operations of one kind per ``slice`` command, or one round of every kind per ``round`` command.
Variants:
``plain`` (settings without ``reactive``), ``unwatched`` (``reactive`` installed, no read set
names the table: a write costs its capture and one change record appended to the log table in
its transaction, a transaction of its own in autocommit mode) and ``watched``
(a read set on ``benchapp_item.group`` is registered, so updates and deletes first read the old
``group`` of the rows they touch). ``bench/overhead.py`` runs a plain and a reactive worker and
alternates short slices between them and between variants.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

OPERATIONS = ("create", "update", "save", "delete", "atomic10")
OPERATION_LABELS = {
    "create": "Item.objects.create() (autocommit)",
    "update": "filter(pk=).update(value=)",
    "save": "item.save() (an UPDATE)",
    "delete": "filter(pk=).delete()",
    "atomic10": "atomic() block of 10 creates",
}
WATCH_INSTANCE = "bench-overhead"


def _watch(on: bool) -> None:
    from reactive.backends import get_backend
    from reactive.capture.readsets import ReadSet

    index = get_backend().index
    if on:
        index.set(WATCH_INSTANCE, ReadSet({"benchapp_item": {frozenset({("group", 1)})}}))
    else:
        index.remove(WATCH_INSTANCE)


def _timed(func: Any, count: int, clock: Any = time.perf_counter_ns) -> float:
    """Mean microseconds per call of ``func(i)`` for ``i`` in ``range(count)``, by ``clock``."""
    gc.collect()
    start = clock()
    for i in range(count):
        func(i)
    return (clock() - start) / count / 1000


def _operations(items: list[Any], pks: list[int]) -> dict[str, Callable[[int], None]]:
    """The body of each of ``OPERATIONS``, called with ``i`` in ``range(_calls(op, count))``:
    ``create`` appends the item it made to ``items`` and its key to ``pks``; ``update``,
    ``save`` and ``delete`` work on the ``i``-th of them."""
    from django.db import transaction

    from bench.benchapp.models import Item

    def create(i: int) -> None:
        item = Item.objects.create(group=i % 10, value=i)
        items.append(item)
        pks.append(item.pk)

    def update(i: int) -> None:
        Item.objects.filter(pk=pks[i]).update(value=i + 1)

    def save(i: int) -> None:
        item = items[i]
        item.value = i + 2
        item.save()

    def delete(i: int) -> None:
        Item.objects.filter(pk=pks[i]).delete()

    def atomic10(i: int) -> None:
        with transaction.atomic():
            for j in range(10):
                Item.objects.create(group=(i + j) % 10, value=j)

    return {"create": create, "update": update, "save": save, "delete": delete, "atomic10": atomic10}


def _calls(operation: str, count: int) -> int:
    """How many calls of ``operation``'s body ``count`` operations are: ``atomic10`` makes 10
    rows a call (at least one call)."""
    return max(1, count // 10) if operation == "atomic10" else count


def _empty_table() -> None:
    from bench.benchapp.models import Item

    Item.objects.all().delete()


def one_round(iterations: int, clock: Any = time.perf_counter_ns) -> dict[str, float]:
    """Time each operation once over ``iterations`` rows, in the order of ``OPERATIONS`` (wall
    clock unless ``clock`` says otherwise, in ns); leaves the table empty."""
    body = _operations([], [])
    result = {op: _timed(body[op], _calls(op, iterations), clock) for op in OPERATIONS}
    _empty_table()  # untimed: the next round starts from an empty table
    return result


def one_slice(operation: str, count: int, clock: Any = time.perf_counter_ns) -> float:
    """Mean µs of ``count`` operations of one kind (``atomic10``: per block of 10 creates,
    ``count // 10`` blocks, at least one), on an empty table. Untimed: for ``update``, ``save``
    and ``delete`` the ``count`` rows they touch are created first; the table is emptied after."""
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}")
    body = _operations([], [])
    if operation in ("update", "save", "delete"):
        for i in range(count):
            body["create"](i)
    result = _timed(body[operation], _calls(operation, count), clock)
    _empty_table()
    return result


def slice_summary(slices: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """From µs per operation of each slice (``slices[variant][op]``, the i-th slices of the
    variants from one triplet): the median slice (``median_us``); the median of the triplets'
    ratios to plain (``ratio``: drift between triplets cancels out, which medians taken apart
    keep); the ratio of the sums (``ratio_of_sums``); the slices themselves (``runs_us``)."""
    plain = slices["plain"]
    others = [variant for variant in slices if variant != "plain"]
    return {
        "median_us": {
            variant: {op: statistics.median(values) for op, values in by_op.items()}
            for variant, by_op in slices.items()
        },
        "ratio": {
            name: {
                op: statistics.median(v / p for v, p in zip(slices[name][op], plain[op], strict=True))
                for op in plain
            }
            for name in others
        },
        "ratio_of_sums": {
            name: {op: sum(slices[name][op]) / sum(plain[op]) for op in plain} for name in others
        },
        "runs_us": {
            variant: {op: [round(value, 2) for value in values] for op, values in by_op.items()}
            for variant, by_op in slices.items()
        },
    }


def database_floor(iterations: int, clock: Any = time.perf_counter_ns) -> dict[str, float]:
    """What the change record costs the database alone, with no Python of Django or ``reactive``
    around it: µs per plain ``INSERT`` of an item in autocommit mode (``insert``), and per
    transaction of that ``INSERT`` and the log row a create appends (``insert_and_record``:
    ``BEGIN``, the two ``INSERT``s, ``COMMIT``, in the round trips the write patches use), straight
    on the DB-API connection. Leaves the table empty and the log as it was, but for the newest of
    the records it appended (the newest record is never deleted: migration 0006)."""
    from django.db import DEFAULT_DB_ALIAS, connections

    from bench.benchapp.models import Item
    from reactive.capture import logtable, origin
    from reactive.records import RowChange, encode_change

    # The connection itself, not django.db.connection: each attribute read through that proxy
    # costs a lookup of its own, which the capture never pays (it is given the connection).
    connection = connections[DEFAULT_DB_ALIAS]
    connection.ensure_connection()
    raw = connection.connection
    table = connection.ops.quote_name(Item._meta.db_table)
    mark = "%s" if connection.vendor == "postgresql" else "?"
    insert = f'INSERT INTO {table} ("group", "value") VALUES ({mark}, {mark})'
    begin = f"BEGIN {getattr(connection, 'transaction_mode', None) or ''}"
    record = encode_change(
        [RowChange(Item._meta.db_table, None, {"group": 1, "value": 1})], (), (), origin.current()
    )
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {logtable.LOG_TABLE}")
        (last_kept,) = cursor.fetchone()

    kept = raw.cursor()  # one cursor for every statement, as the capture keeps one for its own

    def plain(i: int) -> None:
        kept.execute(insert, (i % 10, i))

    if connection.vendor == "postgresql":  # one string, as the patches send a one-row insert
        from psycopg import ClientCursor

        client = ClientCursor(raw)
        before, after = logtable.around_statement(connection, record, (Item._meta.db_table, "id"))
        one_string = f"{before.replace('%', '%%')}; {insert}; {after.replace('%', '%%')}"

        def with_record(i: int) -> None:
            client.execute(one_string, (i % 10, i))

    else:

        def with_record(i: int) -> None:
            kept.execute(begin)
            kept.execute(insert, (i % 10, i))
            logtable.append_and_commit(connection, record, kept)

    result = {
        "insert": _timed(plain, iterations, clock),
        "insert_and_record": _timed(with_record, iterations, clock),
    }
    with connection.cursor() as cursor:  # untimed
        cursor.execute(f"DELETE FROM {table}")
        log = logtable.LOG_TABLE
        cursor.execute(f"DELETE FROM {log} WHERE id > %s AND id < (SELECT max(id) FROM {log})", (last_kept,))
    return result


def measuring_clock() -> Any:
    """This process's CPU time where the database runs inside it (SQLite): the whole cost of a
    write, and none of the time spent waiting while other work has the CPU, which on a shared
    machine swings wall-clock rounds by tens of percent. Wall time where the database is a
    server (its share runs in another process)."""
    from django.db import connection

    return time.process_time_ns if connection.vendor == "sqlite" else time.perf_counter_ns


def callgrind_marker() -> int:
    """The clock of a round counted in instructions: under ``valgrind --tool=callgrind
    --dump-before=zlib_crc32`` each call ends one part of the profile, so each timed loop of
    ``one_round`` is a part of its own (its instruction count is the part's total). Nothing in a
    write calls ``zlib.crc32``."""
    zlib.crc32(b"")
    return 0


def count_round(variant: str, iterations: int) -> None:
    """One round of ``variant`` under callgrind (``bench/overhead.py`` reads its parts): a warm-up
    round first, untimed, then the round with ``callgrind_marker`` around each loop."""
    _set_up([variant])
    if variant != "plain":
        _watch(variant == "watched")
    one_round(max(10, iterations // 10))
    one_round(iterations, callgrind_marker)


def _set_up(variants: list[str]) -> tuple[bool, bool]:
    """Set Django up and migrate the fresh database; refuse variants that do not fit the
    settings. Whether ``reactive`` is installed, and whether its patches are applied."""
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db.models.sql import compiler

    call_command("migrate", verbosity=0, interactive=False)
    reactive_loaded = "reactive" in settings.INSTALLED_APPS
    patched = hasattr(compiler.SQLInsertCompiler.execute_sql, "__wrapped__")
    if ("plain" in variants) == reactive_loaded or reactive_loaded != patched:
        raise SystemExit(f"variants {variants} do not fit the settings (reactive: {reactive_loaded})")
    return reactive_loaded, patched


def serve(variants: list[str], iterations: int) -> None:
    """Answer the driver's commands on stdin, one JSON line each on stdout.

    ``slice VARIANT OPERATION COUNT`` times ``COUNT`` operations of one kind (``{"us": ...}``,
    µs per operation); ``round VARIANT [ITERATIONS]`` times one round of every kind; ``floor``
    times the database alone; ``check`` reports what was loaded; ``quit``. The driver alternates
    slices between this process and the other one, so load from the rest of the machine, which
    drifts, falls on every variant alike.
    """
    reactive_loaded, patched = _set_up(variants)
    clock = measuring_clock()
    _reply({"ready": True, "settings": os.environ.get("DJANGO_SETTINGS_MODULE"), "clock": clock.__name__})

    for line in sys.stdin:
        command = line.split()
        if not command:
            continue
        if command[0] in ("slice", "round"):
            variant = command[1]
            if variant not in variants:
                raise SystemExit(f"unknown variant {variant!r} for this process ({variants})")
            if variant != "plain":
                _watch(variant == "watched")
            if command[0] == "slice":
                operation = command[2]
                if operation not in OPERATIONS:
                    raise SystemExit(f"unknown operation {operation!r} ({OPERATIONS})")
                _reply({"us": one_slice(operation, int(command[3]), clock)})
            else:
                _reply(one_round(int(command[2]) if len(command) > 2 else iterations, clock))
        elif command[0] == "floor":
            _reply(database_floor(iterations, clock))
        elif command[0] == "check":
            leaked = sorted(
                name for name in sys.modules if name == "reactive" or name.startswith("reactive.")
            )
            functions_imported = "bench.benchapp.functions" in sys.modules
            log_length = None
            if reactive_loaded:
                from reactive.models import ChangeLogEntry

                log_length = ChangeLogEntry.objects.count()
            _reply(
                {
                    "reactive_installed": reactive_loaded,
                    "reactive_modules": len(leaked),
                    "bench_functions_imported": functions_imported,
                    "compilers_patched": patched,
                    "log_records_kept": log_length,
                }
            )
        elif command[0] == "quit":
            return
        else:
            raise SystemExit(f"unknown command {line!r}")


def _reply(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", required=True, help="comma-separated: plain or unwatched,watched")
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--count", action="store_true", help="one round under callgrind, then exit")
    options = parser.parse_args()
    if options.count:
        count_round(options.variants, options.iterations)
    else:
        serve(options.variants.split(","), options.iterations)


if __name__ == "__main__":
    main()
