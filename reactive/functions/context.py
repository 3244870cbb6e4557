"""``ctx``: what a function knows of its caller, passed as its first argument."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import AnonymousUser


class Context:
    """The caller of a function.

    ``ctx.user`` is the Django user (``AnonymousUser`` when signed out), ``ctx.is_authenticated``
    whether there is one, ``ctx.user_or_none`` the user or ``None``. A query that reads any of
    them depends on the caller's identity: its result is kept per user and it re-runs when the
    client signs in or out. A query that never reads them is shared by every caller.
    In actions, ``ctx`` is an ``ActionContext`` (``engine/execution.py``): ``ctx.run_query(name,
    args)`` and ``ctx.run_mutation(name, args)`` call other functions as the same user.
    """

    def __init__(
        self,
        user_loader: Callable[[], Any] | None = None,
        *,
        kind: str = "query",
        session_id: str | None = None,
    ) -> None:
        self._user_loader = user_loader
        self._user: Any = None
        self.kind = kind
        self.session_id = session_id
        self.read_identity = False

    @classmethod
    def for_user(cls, user: Any, **kwargs: Any) -> Context:
        return cls(lambda: user, **kwargs)

    @property
    def user(self) -> Any:
        self.read_identity = True
        if self._user is None:
            loaded = self._user_loader() if self._user_loader else None
            self._user = loaded if loaded is not None else AnonymousUser()
        return self._user

    @property
    def is_authenticated(self) -> bool:
        return bool(self.user.is_authenticated)

    @property
    def user_or_none(self) -> Any:
        return self.user if self.is_authenticated else None

    def run_query(self, name: str, args: dict[str, Any] | None = None) -> Any:
        """Run a query once, as this caller, and return its value (actions only)."""
        raise RuntimeError("ctx.run_query() is only available in actions.")

    def run_mutation(self, name: str, args: dict[str, Any] | None = None) -> Any:
        """Run a mutation in its own transaction, as this caller (actions only)."""
        raise RuntimeError("ctx.run_mutation() is only available in actions.")
