from django.db import models


class Counter(models.Model):
    """One row per benchmark key; ``benchapp.bump`` increments ``value``."""

    key = models.IntegerField(unique=True, db_index=True)
    value = models.IntegerField(default=0)


class Item(models.Model):
    """Rows for the plain-ORM-write overhead benchmark."""

    group = models.IntegerField(db_index=True)
    value = models.IntegerField(default=0)
