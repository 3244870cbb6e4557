from django.db import models


class Counter(models.Model):
    """One row per benchmark key. A bump increments ``value`` and writes, in the same
    transaction, ``stamp`` (``time.monotonic_ns()`` just before its UPDATE) and ``intended`` (the
    load generator's scheduled send time): every pushed or polled value carries its own timing."""

    key = models.IntegerField(unique=True, db_index=True)
    value = models.IntegerField(default=0)
    stamp = models.BigIntegerField(default=0)
    intended = models.BigIntegerField(default=0)


class Item(models.Model):
    """Rows for the plain-ORM-write overhead benchmark."""

    group = models.IntegerField(db_index=True)
    value = models.IntegerField(default=0)
