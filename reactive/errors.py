"""Every error the protocol knows, each with a stable machine code and an HTTP status.

After Django REST framework's exceptions: the code is what clients branch on, the message is
for people. ``ReactiveError`` is the one a function raises on purpose; the others are raised by
the app itself.
"""

from __future__ import annotations

from typing import Any


class ProtocolError(Exception):
    """An error that is sent to the client as ``{"code", "message", "data"?}``."""

    code = "server_error"
    status = 500
    default_message = "A server error occurred."

    def __init__(self, message: str | None = None, data: Any = None) -> None:
        self.message = message or self.default_message
        self.data = data
        super().__init__(self.message)

    def as_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class ReactiveError(ProtocolError):
    """Raised by a query, mutation or action to fail on purpose.

    The message and ``data`` (any JSON value) reach the client as a ``user_error``. In a
    mutation the transaction is rolled back.
    """

    code = "user_error"
    status = 400

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message, data)


class BadMessage(ProtocolError):
    code = "bad_message"
    status = 400
    default_message = "Malformed message."


class NotFound(ProtocolError):
    code = "not_found"
    status = 404
    default_message = "No such function."


class InvalidArgs(ProtocolError):
    code = "invalid_args"
    status = 400
    default_message = "Invalid arguments."


class Unauthenticated(ProtocolError):
    code = "unauthenticated"
    status = 401
    default_message = "Authentication required."


class Forbidden(ProtocolError):
    code = "forbidden"
    status = 403
    default_message = "You may not call this function."


class ServerError(ProtocolError):
    code = "server_error"
    status = 500


class TooLarge(ProtocolError):
    code = "too_large"
    status = 413
    default_message = "Message too large."


class LimitExceeded(ProtocolError):
    code = "limit_exceeded"
    status = 429
    default_message = "Limit exceeded."


class RateLimited(ProtocolError):
    code = "rate_limited"
    status = 429
    default_message = "Too many messages; slow down."


class WriteInQuery(ProtocolError):
    """A query tried to write: queries are read-only."""

    code = "server_error"
    status = 500
    default_message = "Queries are read-only: a query function tried to write to the database."

    @classmethod
    def in_function(cls, function_name: str) -> WriteInQuery:
        return cls(
            f"Queries are read-only: the query {function_name} tried to write to the database. "
            "Write in a @mutation instead (or an @action that calls one) and call it from the client."
        )


class UnencodableResult(ProtocolError):
    """A function returned what JSON cannot hold. The message names only the function and the
    type, so it is shown to the client whatever ``EXPOSE_ERRORS`` says."""

    code = "server_error"
    status = 500
    default_message = "A function returned a value that cannot be encoded as JSON."


class AppNotInstalled(ProtocolError):
    """The WebSocket or the HTTP API is routed, but "reactive" is not in INSTALLED_APPS."""

    code = "server_error"
    status = 500
    default_message = (
        'The "reactive" app is not installed: add "reactive" to INSTALLED_APPS in the settings '
        "and restart the server (without it no functions are discovered and no write is seen)."
    )


_BY_CODE: dict[str, type[ProtocolError]] = {
    cls.code: cls
    for cls in (
        BadMessage,
        NotFound,
        InvalidArgs,
        Unauthenticated,
        Forbidden,
        ReactiveError,
        ServerError,
        TooLarge,
        LimitExceeded,
        RateLimited,
    )
}


def error_from_dict(error: dict[str, Any]) -> ProtocolError:
    """The ``ProtocolError`` of an error object: its class (and so its HTTP status) by ``code``."""
    exc = ProtocolError.__new__(_BY_CODE.get(error.get("code"), ServerError))
    ProtocolError.__init__(exc, error.get("message"), error.get("data"))
    return exc


def plain_errors(errors: Any) -> Any:
    """DRF's ``ErrorDetail`` lists as plain JSON (field -> list of messages)."""
    if isinstance(errors, dict):
        return {key: plain_errors(value) for key, value in errors.items()}
    if isinstance(errors, list):
        return [plain_errors(value) for value in errors]
    return str(errors)
