"""A writer process of the Redis lag scenario: direct ORM writes in autocommit, from a process
that is not a server, on an open-loop schedule.

    python -m bench.lag_writer --keys 200000,200002 --count 600 --period-ns 4000000 --offset-ns 0

With Django configured by the environment (``bench.cluster_settings``; ``bench/redis_diagnostics.py``
starts it). Prints ``ready`` once Django is set up, reads the start time (monotonic ns) from stdin,
then writes ``Counter.objects.filter(key=k).update(value=F("value") + 1, stamp=now, intended=slot)``
(``stamp`` taken just before the UPDATE, as ``bench/bump`` does); prints one JSON line of records
``[intended, sent, done, 200, key, value, stamp]``, the load generator's format.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lag_writer", description=__doc__.splitlines()[0])
    parser.add_argument("--keys", required=True, help="comma-separated counter keys, written round robin")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--period-ns", type=int, required=True)
    parser.add_argument("--offset-ns", type=int, default=0)
    options = parser.parse_args(argv)

    import django

    django.setup()
    from django.db.models import F

    from bench.benchapp.models import Counter as CounterModel

    keys = [int(k) for k in options.keys.split(",")]
    values = dict(CounterModel.objects.filter(key__in=keys).values_list("key", "value"))
    if set(values) != set(keys):
        print(json.dumps({"error": f"missing counters {sorted(set(keys) - set(values))}"}), flush=True)
        return 1
    print("ready", flush=True)
    start = int(sys.stdin.readline()) + options.offset_ns
    records = []
    errors = []
    for i in range(options.count):
        intended = start + i * options.period_ns
        delay = intended - time.monotonic_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
        key = keys[i % len(keys)]
        sent = stamp = time.monotonic_ns()
        try:
            CounterModel.objects.filter(key=key).update(value=F("value") + 1, stamp=stamp, intended=intended)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        values[key] += 1
        records.append([intended, sent, time.monotonic_ns(), 200, key, values[key], stamp])
    print(json.dumps({"records": records, "errors": errors[:10], "error_count": len(errors)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
