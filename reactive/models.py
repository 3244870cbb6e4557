"""The app's one table: stored mutation results, for replay after a reconnect."""

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
