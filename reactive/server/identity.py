"""Who a connection acts as, and how to check that it still may (ARCHITECTURE.md invariant 8).

A socket signs in once: at its handshake, with the Django session of its cookie (Channels'
``AuthMiddlewareStack``), or later with a token in an ``authenticate`` frame. Its rights are not
frozen there. An :class:`Identity` keeps what signed it in (the session key, or the token) and
:meth:`Identity.load_user` asks Django again, as for a new request: ``django.contrib.auth.get_user``
over the stored session (the session must still exist and be unexpired, its auth hash must match
the user's, the backend must accept the user: active, with the default one), or the token
authenticator again. The consumer calls it before every mutation and action, and whenever a
commit may have ended the sign-in (the hub passes on each batch's ``revoked`` keys). A sign-in
that has ended leaves the socket anonymous, as ``authenticate`` with a null token does.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user
from django.http import HttpRequest

from ..auth import active_user
from ..capture import identities
from ..records import ANYONE
from ..settings import reactive_settings


class Identity:
    """A connection's sign-in: the user's primary key and what signed them in (immutable)."""

    __slots__ = ("_keys", "session_key", "token", "user_id")

    def __init__(
        self, user_id: Any = None, *, session_key: str | None = None, token: str | None = None
    ) -> None:
        self.user_id = user_id
        self.session_key = session_key
        self.token = token
        # The ChangeRecord.revoked keys that concern this sign-in.
        keys = set()
        if user_id is not None:
            keys.add(identities.user_key(user_id))
            if session_key is not None:
                keys.add(identities.session_key(session_key))
        self._keys = frozenset(keys)

    def __repr__(self) -> str:
        if self.user_id is None:
            return "<Identity anonymous>"
        how = "session" if self.session_key else "token" if self.token else "handshake"
        return f"<Identity user={self.user_id!r} by {how}>"

    @classmethod
    def of_handshake(cls, user: Any, session: Any) -> Identity:
        """The identity a WebSocket handshake gives (``scope["user"]``, ``scope["session"]``).

        May read the session: call it where database access is allowed, or catch
        ``SynchronousOnlyOperation`` (Channels' auth middleware has loaded it already).
        """
        if user is None or not user.is_authenticated:
            return ANONYMOUS
        key = getattr(session, "session_key", None)
        if key and session.get(SESSION_KEY) == user._meta.pk.value_to_string(user):
            return cls(user.pk, session_key=key)
        # Signed in by something other than the session (a custom middleware): only the user's
        # own row can end it.
        return cls(user.pk)

    def concerned_by(self, revoked: frozenset[str]) -> bool:
        """Whether a batch's ``revoked`` keys may have ended this sign-in."""
        return bool(self._keys) and (ANYONE in revoked or not self._keys.isdisjoint(revoked))

    def load_user(self) -> Any:
        """The user as Django sees this sign-in now, or None if it has ended (blocking: run it
        in a worker thread). A sign-in never turns into another user: a different one is None."""
        if self.user_id is None:
            return None
        if self.session_key is not None:
            request = HttpRequest()
            request.session = import_module(settings.SESSION_ENGINE).SessionStore(self.session_key)
            user = get_user(request)
        elif self.token is not None:
            user = reactive_settings.TOKEN_AUTHENTICATOR(self.token)
        else:
            user = active_user(self.user_id)
        if user is None or not user.is_authenticated or user.pk != self.user_id:
            return None
        return user


ANONYMOUS = Identity()


def identity_of_token(token: str) -> Identity | None:
    """The identity a token signs in as, or None if ``TOKEN_AUTHENTICATOR`` refuses it
    (blocking: run it in a worker thread)."""
    user = reactive_settings.TOKEN_AUTHENTICATOR(token)
    if user is None or not user.is_authenticated:
        return None
    return Identity(user.pk, token=token)
