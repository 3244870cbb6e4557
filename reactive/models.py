"""The app's one table: stored mutation results, for replay after a reconnect."""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.utils import timezone


class MutationRecord(models.Model):
    """The result of a mutation sent with a session id, written in the mutation's transaction."""

    session_id = models.CharField(max_length=64)
    request_id = models.BigIntegerField()
    payload = models.BinaryField()
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        # Explicit, so that the routing and the URLs import even when "reactive" is missing from
        # INSTALLED_APPS: the consumer and the views then say so (server/installation.py).
        app_label = "reactive"
        constraints = [
            models.UniqueConstraint(
                fields=["session_id", "request_id"], name="reactive_unique_session_request"
            )
        ]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.request_id}"

    @classmethod
    def lookup(cls, session_id: str, request_id: int) -> bytes | None:
        payload = (
            cls.objects.filter(session_id=session_id, request_id=request_id)
            .values_list("payload", flat=True)
            .first()
        )
        return bytes(payload) if payload is not None else None

    @classmethod
    def store(cls, session_id: str, request_id: int, payload: bytes) -> None:
        cls.objects.create(session_id=session_id, request_id=request_id, payload=payload)

    @classmethod
    def delete_expired(cls, ttl_hours: float) -> int:
        deleted, _ = cls.objects.filter(created__lt=timezone.now() - timedelta(hours=ttl_hours)).delete()
        return deleted
