"""Benchmarks of django-reactive-queries (see ``bench/README.md``)."""
