"""Query instances: a query, its canonical arguments and, if it read it, the caller's identity.

Two subscriptions to the same instance share one run per change, whatever socket or process
they come from. A query that never reads ``ctx.user`` is one instance for every caller.
"""

from __future__ import annotations

import hashlib

SHARED = "*"


def instance_base(name: str, canonical_args: bytes) -> bytes:
    """What identifies an instance apart from the caller: the name and the canonical arguments
    (``Function.validate(...).canonical``)."""
    return name.encode() + b"\0" + canonical_args


def identity_of(user_id: object | None) -> str:
    """The identity part of an instance bound to its caller."""
    return "anonymous" if user_id is None else f"user:{user_id}"


def instance_id(base: bytes, identity: str) -> str:
    """A short id, safe as a Channels group name."""
    return "rq." + hashlib.blake2b(base + b"\0" + identity.encode(), digest_size=16).hexdigest()


def candidate_ids(base: bytes, user_id: object | None) -> tuple[str, str]:
    """The instance a caller's subscription may map to: the shared one, else its own."""
    return instance_id(base, SHARED), instance_id(base, identity_of(user_id))
