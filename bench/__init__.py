"""Benchmarks of django-reactive-queries against the alternatives: ``python -m bench`` (see
``bench/README.md`` for the scenarios, the systems, the method and the module list).

A run (``suite``) starts each system under test (``systems``, ``servers``, ``cluster``) on
loopback, drives it with load-generator processes (``loadgen``, ``generators``, ``wire``) through
the scenarios (``latency``, ``fanout``, ``throughput``, ``precision``, ``overhead``, ``profile``,
``roundtrips``, ``lag``), each made of measured windows (``population``, ``window``), and writes
the report (``report``, ``benchmarks_md``, ``plots``, ``targets``).
"""


class Broken(Exception):
    """Something the benchmark needs did not work (not a slow number: a wrong one)."""
