"""Tokens for the ``authenticate`` message and the HTTP API's ``Authorization: Bearer``.

The default is a token signed with ``SECRET_KEY`` (Django's ``signing``), made by
:func:`make_token`. Point ``REACTIVE["TOKEN_AUTHENTICATOR"]`` at another callable
``(token) -> user or None`` to accept other tokens (JWTs, DRF tokens, ...).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core import signing

from .settings import reactive_settings

_SALT = "reactive.token"


def make_token(user: Any) -> str:
    """A signed token identifying ``user``, valid for ``TOKEN_MAX_AGE_SECONDS``."""
    return signing.dumps({"user": user.pk}, salt=_SALT, compress=True)


def authenticate_signed_token(token: str) -> Any:
    """The active user a :func:`make_token` token names, or None."""
    try:
        data = signing.loads(token, salt=_SALT, max_age=reactive_settings.TOKEN_MAX_AGE_SECONDS)
    except signing.BadSignature:
        return None
    user = get_user_model()._default_manager.filter(pk=data.get("user")).first()
    return user if user is not None and user.is_active else None
