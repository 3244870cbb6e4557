"""The app's tables: stored mutation results (for replay after a reconnect), and the change log."""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.utils import timezone


class MutationRecord(models.Model):
    """The result of a mutation sent with a session id, written in the mutation's transaction.

    A record belongs to the caller that ran the mutation: its identity is part of the key, so a
    caller who learns another's ``session_id`` neither reads that caller's results nor stores
    one in advance that the other's mutation would be answered with. ``fingerprint`` names the
    function and arguments, so a replay is answered only with the result of the same mutation.
    """

    # "anonymous" or "user:<pk>" (engine/instances.py identity_of).
    identity = models.CharField(max_length=255)
    session_id = models.CharField(max_length=64)
    request_id = models.BigIntegerField()
    # SHA-256 (hex) of the function name and the canonical JSON of the arguments as sent.
    fingerprint = models.CharField(max_length=64)
    payload = models.BinaryField()
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        # Explicit, so that the routing and the URLs import even when "reactive" is missing from
        # INSTALLED_APPS: the consumer and the views then say so (server/installation.py).
        app_label = "reactive"
        constraints = [
            models.UniqueConstraint(
                fields=["identity", "session_id", "request_id"],
                name="reactive_unique_identity_session_request",
            )
        ]

    def __str__(self) -> str:
        return f"{self.identity} {self.session_id}#{self.request_id}"

    @classmethod
    def lookup(cls, identity: str, session_id: str, request_id: int) -> tuple[str, bytes] | None:
        """The stored ``(fingerprint, payload)`` of this caller's request, if any."""
        row = (
            cls.objects.filter(identity=identity, session_id=session_id, request_id=request_id)
            .values_list("fingerprint", "payload")
            .first()
        )
        return (row[0], bytes(row[1])) if row is not None else None

    @classmethod
    def store(cls, identity: str, session_id: str, request_id: int, fingerprint: str, payload: bytes) -> None:
        cls.objects.create(
            identity=identity,
            session_id=session_id,
            request_id=request_id,
            fingerprint=fingerprint,
            payload=payload,
        )

    @classmethod
    def delete_expired(cls, ttl_hours: float) -> int:
        deleted, _ = cls.objects.filter(created__lt=timezone.now() - timedelta(hours=ttl_hours)).delete()
        return deleted


class ChangeLogEntry(models.Model):
    """One committed transaction's changes, appended inside that transaction just before COMMIT.

    So a record exists if and only if its data committed, whichever process committed it. Its
    version is its id on SQLite, where one writer at a time makes id order commit order, and
    ``xid + 1`` on Postgres, where ids are not in commit order and readers read only below the
    oldest transaction still in progress. ``capture/logtable.py`` has the SQL that appends,
    reads and prunes; docs/architecture.md the reasons.
    """

    # Postgres: the writing transaction's id (pg_current_xact_id(), 64 bits, never wraps).
    xid = models.BigIntegerField(null=True)
    created = models.DateTimeField()
    # encode_change() of the transaction's row changes and opaque tables (reactive/records.py).
    changes = models.TextField()

    class Meta:
        app_label = "reactive"  # as MutationRecord's: the server imports without the app installed
        db_table = "reactive_changelog"
        # Created by the migrations, then left alone by `manage.py flush` (and the test runner's
        # flush), which empty the tables of managed models only and restart their keys: readers
        # hold positions in this log, so it keeps its records and its numbering, and the flush is
        # a commit like any other, recorded after them.
        managed = False
        indexes = [
            models.Index(fields=["xid"], condition=models.Q(xid__isnull=False), name="reactive_changelog_xid")
        ]

    def __str__(self) -> str:
        return f"change {self.xid if self.xid is not None else self.pk}"


class Live(models.Model):
    """No table: the admin's "Live subscriptions" page (``admin.py``), listed under this app.

    An unmanaged model is how a page of the default admin site is added without touching the
    project's URLs: its ModelAdmin serves the dashboard instead of a change list.
    """

    class Meta:
        app_label = "reactive"
        managed = False
        default_permissions = ()
        verbose_name = verbose_name_plural = "Live subscriptions"
