"""Benchmarks of django-reactive-queries: ``python -m bench`` (see ``bench/README.md``).

The modules, in the order a run uses them:

- ``__main__``: the command line: which parts run, with which plan, and where results go;
- ``plans``: how much each part does, in the full run and in the ``--quick`` smoke test;
- ``servers``: the embedded backend's Daphne on a fresh SQLite database, and what a log says;
- ``cluster``: the Redis backend deployed (``harness.cluster``: servers A and B, one worker);
- ``workload``: subscriber sockets, open-loop writes, the warm-up, and which write each pushed
  value came from;
- the parts: ``latency`` (commit -> subscriber, on either backend), ``overhead`` (what write
  tracking adds to ORM writes; ``overhead_worker`` is its subprocess), ``roundtrips`` (Redis
  commands per change record) and ``lag`` (the invalidator under load; ``lag_writer`` is its
  subprocess);
- ``stats``: percentiles and summaries; ``tables``: text and Markdown tables; ``report``: the
  printed report and the JSON and Markdown files under ``bench/results/``.

``settings``, ``settings_plain`` and ``cluster_settings`` configure the Django processes, and
``benchapp`` is the app they serve.
"""


class Broken(Exception):
    """Something the benchmark needs did not work (not a slow number: a wrong one)."""
