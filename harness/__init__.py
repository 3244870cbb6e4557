"""The process harness of the tests and the benchmark: the real processes they start and watch.

- ``ports``: a free loopback port, waiting until a server listens on one, a server's URLs;
- ``processes``: our subprocesses (Daphne, uvicorn, ``manage.py``), each with its log, stopped
  for sure;
- ``procfs``: what ``/proc`` says about a process and the machine (CPU time, memory, sockets);
- ``services``: private ``redis-server`` and Postgres servers, and
  ``python -m harness.services run -- COMMAND`` that runs a command beside them;
- ``cluster``: the Redis backend as deployed, servers and workers on one Redis and one Postgres.

Only the standard library at import time: ``redis`` and ``psycopg`` are imported where needed.
"""
