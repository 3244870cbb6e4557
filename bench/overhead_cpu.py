"""The write overhead in one process, by CPU time: for a machine too busy for wall clocks.

    DJANGO_SETTINGS_MODULE=bench.settings SQLITE_PATH=/path/to/scratch.sqlite3 \\
        python -m bench.overhead_cpu [--slice 30] [--triplets 150]

One process with ``reactive`` installed times the operations of ``bench.overhead_worker`` with its
patches taken off (``patches.uninstall()``: plain Django), then on with the table unwatched, then
watched, in this process's CPU time (``time.process_time_ns``): time spent waiting for the CPU
while other jobs run is not counted. On SQLite that is the whole cost of a write (the database
runs in the process); on Postgres the server's share is missing, so use the wall-clock part
(``python -m bench --parts overhead``) there.

As in ``bench/overhead.py``: per operation, slices of ``--slice`` operations of that kind, one per
variant in turn (a triplet), the order rotated each triplet, ``--triplets`` triplets after
``--warmup`` discarded ones. Short slices side by side see the same machine: the unwatched and
watched creates (the same work) agree, which rounds of every kind did not. Prints per operation
the median slice per variant, the median of the triplets' ratios to plain and the ratio of the
sums.
"""

from __future__ import annotations

import argparse
import time

VARIANTS = ("plain", "unwatched", "watched")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slice", type=int, default=30, help="operations per slice")
    parser.add_argument("--triplets", type=int, default=150, help="measured triplets per operation")
    parser.add_argument("--warmup", type=int, default=2, help="discarded triplets per operation")
    options = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command

    from bench.overhead_worker import OPERATION_LABELS, OPERATIONS, _watch, one_slice, slice_summary
    from reactive.capture import patches

    call_command("migrate", verbosity=0, interactive=False)
    slices: dict[str, dict[str, list[float]]] = {
        variant: {op: [] for op in OPERATIONS} for variant in VARIANTS
    }
    try:
        for op in OPERATIONS:
            for triplet in range(-options.warmup, options.triplets):
                shift = triplet % 3
                for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                    if variant == "plain":
                        patches.uninstall()
                    else:
                        patches.install()
                        _watch(variant == "watched")
                    us = one_slice(op, options.slice, time.process_time_ns)
                    if triplet >= 0:
                        slices[variant][op].append(us)
    finally:
        patches.install()
    summary = slice_summary(slices)
    median, ratio, of_sums = summary["median_us"], summary["ratio"], summary["ratio_of_sums"]
    print(
        f"CPU µs per operation, median slice of {options.triplets} triplets of {options.slice}; "
        "ratios to plain: median of the triplets' ratios [ratio of the sums]"
    )
    for op in OPERATIONS:
        cells = [f"{OPERATION_LABELS[op]:36} plain {median['plain'][op]:7.1f}"]
        for variant in VARIANTS[1:]:
            ratios = f"{ratio[variant][op]:.2f}x [{of_sums[variant][op]:.2f}x]"
            cells.append(f"{variant} {median[variant][op]:7.1f} ({ratios})")
        print("  ".join(cells))


if __name__ == "__main__":
    main()
