"""The write overhead in one process, by CPU time: for a machine too busy for wall clocks.

    DJANGO_SETTINGS_MODULE=bench.settings SQLITE_PATH=/path/to/scratch.sqlite3 \\
        python -m bench.overhead_cpu [--iterations 500] [--rounds 7]

One process with ``reactive`` installed times the operations of ``bench.overhead_worker`` with its
patches taken off (``patches.uninstall()``: plain Django), then on with the table unwatched, then
watched, round after round, in this process's CPU time (``time.process_time_ns``): time spent
waiting for the CPU while other jobs run is not counted. On SQLite that is the whole cost of a
write (the database runs in the process); on Postgres the server's share is missing, so use the
wall-clock part (``python -m bench --parts overhead``) there. Prints the median of the rounds per
variant and its ratio to plain, with the lowest and highest per-round ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

VARIANTS = ("plain", "unwatched", "watched")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command

    from bench.overhead_worker import OPERATION_LABELS, OPERATIONS, _watch, one_round
    from reactive.capture import patches

    call_command("migrate", verbosity=0, interactive=False)
    runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    try:
        for round_number in range(options.rounds + 1):  # the first round warms up, discarded
            for variant in VARIANTS:
                if variant == "plain":
                    patches.uninstall()
                else:
                    patches.install()
                    _watch(variant == "watched")
                result = one_round(options.iterations, time.process_time_ns)
                if round_number:
                    runs[variant].append(result)
    finally:
        patches.install()
    print(f"CPU µs per operation, median of {options.rounds} rounds of {options.iterations}")
    for op in OPERATIONS:
        plain = [r[op] for r in runs["plain"]]
        cells = [f"{OPERATION_LABELS[op]:36} plain {statistics.median(plain):7.1f}"]
        for variant in VARIANTS[1:]:
            times = [r[op] for r in runs[variant]]
            median = statistics.median(times)
            ratios = [t / p for t, p in zip(times, plain, strict=True)]
            cells.append(
                f"{variant} {median:7.1f} ({median / statistics.median(plain):.2f}x,"
                f" rounds {min(ratios):.2f}-{max(ratios):.2f})"
            )
        print("  ".join(cells))


if __name__ == "__main__":
    main()
