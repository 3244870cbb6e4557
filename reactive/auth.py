"""Who the caller is: users loaded as Django loads a signed-in user, and tokens.

Tokens are for the ``authenticate`` message and the HTTP API's ``Authorization: Bearer``. The
default is a token signed with ``SECRET_KEY`` (Django's ``signing``), made by :func:`make_token`:
it names the user and carries a digest of their session auth hash, so it dies when their password
changes (as their sessions do), when they are deactivated, and after ``TOKEN_MAX_AGE_SECONDS``.
Point ``REACTIVE["TOKEN_AUTHENTICATOR"]`` at another callable ``(token) -> user or None`` to
accept other tokens (JWTs, DRF tokens, ...); it is called again before every mutation and action
of a socket that authenticated with it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_backends
from django.core import signing
from django.utils.crypto import constant_time_compare, salted_hmac

from .settings import reactive_settings

_SALT = "reactive.token"


def active_user(user_id: Any) -> Any:
    """The user with this primary key as Django loads a signed-in user (``backend.get_user`` of
    the authentication backends), or None: with the default ``ModelBackend``, an inactive user is
    nobody."""
    for backend in get_backends():
        user = backend.get_user(user_id)
        if user is not None:
            return user
    return None


def make_token(user: Any) -> str:
    """A signed token for ``user``, valid for ``TOKEN_MAX_AGE_SECONDS`` while their password (and
    so their session auth hash) stays the same and they stay active."""
    digest = None
    if hasattr(user, "get_session_auth_hash"):
        digest = _auth_digest(user.get_session_auth_hash(), settings.SECRET_KEY)
    return signing.dumps(
        {"user": user._meta.pk.value_to_string(user), "auth": digest}, salt=_SALT, compress=True
    )


def authenticate_signed_token(token: str) -> Any:
    """The user a :func:`make_token` token names, or None if it is forged, expired, or outlived
    its user's password or their being active."""
    try:
        data = signing.loads(token, salt=_SALT, max_age=reactive_settings.TOKEN_MAX_AGE_SECONDS)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("user"), str):
        return None  # not one of ours, or made before tokens carried the auth hash
    user = active_user(data["user"])
    if user is None or not _auth_digest_matches(user, data.get("auth")):
        return None
    return user


def _auth_digest(session_auth_hash: str, secret: str) -> str:
    # A digest of the session auth hash, not the hash itself: a token is signed, not encrypted,
    # and the hash is what Django keeps server-side in sessions.
    return salted_hmac(_SALT, session_auth_hash, secret=secret, algorithm="sha256").hexdigest()


def _auth_digest_matches(user: Any, digest: Any) -> bool:
    """Whether ``digest`` is of the user's session auth hash now, under ``SECRET_KEY`` or one of
    ``SECRET_KEY_FALLBACKS`` (as ``django.contrib.auth.get_user`` verifies a session)."""
    if not hasattr(user, "get_session_auth_hash"):
        return True  # a user model without a password: nothing to verify (as Django's get_user)
    if not isinstance(digest, str):
        return False
    hashes = [(user.get_session_auth_hash(), settings.SECRET_KEY)]
    hashes += zip(user.get_session_auth_fallback_hash(), settings.SECRET_KEY_FALLBACKS, strict=False)
    return any(constant_time_compare(digest, _auth_digest(value, secret)) for value, secret in hashes)
