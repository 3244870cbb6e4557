"""The HTTP API of PROTOCOL.md, for clients that keep no socket.

``POST /reactive/api/query|mutation|action`` with ``{"name", "args"}``. Authentication is the
Django session (with its CSRF check) or ``Authorization: Bearer <token>``.

Every answer is JSON in the protocol's shape, ``{"ok": true, "value", ...}`` or ``{"ok": false,
"error": {"code", "message", "data"?}}`` with the error's status, whatever the request: a
malformed body, another method or content type, a refused CSRF check, or a bug (a logged
``server_error``). Bodies are parsed by orjson, which refuses what JSON does not allow (invalid
UTF-8, lone surrogates, numbers out of range) and nesting past 1024 levels with an error
instead of a ``RecursionError``.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpResponse
from rest_framework import authentication, exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from ..engine.execution import call_action, call_mutation, call_query, guarded, server_error
from ..errors import (
    BadMessage,
    Forbidden,
    NotFound,
    ProtocolError,
    RateLimited,
    TooLarge,
    Unauthenticated,
)
from ..functions import encoding
from ..settings import reactive_settings
from .installation import require_app_installed

_ENVELOPE = 'Body must be a JSON object with "name" (a string) and "args" (an object).'


class JSONBodyParser(BaseParser):
    """JSON bodies through orjson (strict, and safe however deeply they nest)."""

    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return orjson.loads(stream.read())
        except orjson.JSONDecodeError as exc:
            raise exceptions.ParseError(str(exc)) from None


class JSONAnswers(DefaultContentNegotiation):
    """Every answer is JSON, whatever the ``Accept`` header asks for."""

    def select_renderer(self, request: Request, renderers: list, format_suffix: str | None = None) -> tuple:
        return renderers[0], renderers[0].media_type


class BearerTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, str] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != b"bearer":
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.")
        try:
            token = header[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.") from None
        user = reactive_settings.TOKEN_AUTHENTICATOR(token)
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid or expired token.")
        return user, token

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


class CsrfFailed(exceptions.PermissionDenied):
    """A request signed in by its session cookie that failed Django's CSRF check."""


class SessionAuthentication(authentication.SessionAuthentication):
    """DRF's session authentication, whose CSRF refusal says what the caller must send."""

    def enforce_csrf(self, request: Request) -> None:
        try:
            super().enforce_csrf(request)
        except exceptions.PermissionDenied as exc:
            reason = str(exc.detail).removeprefix("CSRF Failed: ")
            raise CsrfFailed(
                f"CSRF check failed: {reason} A request signed in by the session cookie must send the "
                "X-CSRFToken header with the csrftoken cookie's value (and, from a browser, an Origin "
                "in ALLOWED_HOSTS or CSRF_TRUSTED_ORIGINS); scripts and services can send "
                "Authorization: Bearer <token> instead."
            ) from None


def answer(body: dict[str, Any], status: int = 200) -> HttpResponse:
    return HttpResponse(encoding.dumps(body), status=status, content_type="application/json")


def protocol_error(exc: Exception, request: Request) -> tuple[ProtocolError, int]:
    """The protocol error, and the HTTP status, that answer ``exc``."""
    if isinstance(exc, ProtocolError):
        return exc, exc.status
    if isinstance(exc, CsrfFailed):
        return Forbidden(str(exc.detail)), 403
    if isinstance(exc, (exceptions.AuthenticationFailed, exceptions.NotAuthenticated)):
        return Unauthenticated(str(exc.detail)), 401
    if isinstance(exc, exceptions.MethodNotAllowed):
        return BadMessage(
            f"{request.method} is not allowed: call the HTTP API with POST and a JSON body."
        ), 405
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return BadMessage(
            f"Content type {request.content_type or 'none'!r} is not supported: send the body as JSON "
            "with the header Content-Type: application/json."
        ), 415
    if isinstance(exc, exceptions.ParseError):
        return BadMessage(f"Body is not valid JSON: {exc.detail}"), 400
    if isinstance(exc, RequestDataTooBig):
        return TooLarge(f"Body exceeds {reactive_settings.MAX_MESSAGE_BYTES} bytes."), 413
    if isinstance(exc, exceptions.Throttled):
        return RateLimited(), 429
    if isinstance(exc, (Http404, exceptions.NotFound)):
        return NotFound("Not found."), 404
    if isinstance(exc, exceptions.PermissionDenied):
        return Forbidden(str(exc.detail)), 403
    if isinstance(exc, exceptions.APIException) and exc.status_code < 500:
        return BadMessage(str(exc.detail)), exc.status_code
    error = server_error(f"POST {request.path}", exc)
    return error, error.status


class FunctionView(APIView):
    kind = "query"
    # Anything but POST is refused (405) in the protocol's shape, OPTIONS included.
    http_method_names = ["post"]
    authentication_classes = [BearerTokenAuthentication, SessionAuthentication]
    permission_classes: list = []
    parser_classes = [JSONBodyParser]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONAnswers

    def handle_exception(self, exc: Exception) -> HttpResponse:
        error, status = protocol_error(exc, self.request)
        response = answer({"ok": False, "error": error.as_dict()}, status)
        if status == 401:
            response["WWW-Authenticate"] = "Bearer"
        return response

    def post(self, request: Request) -> HttpResponse:
        require_app_installed()
        name, args = self._read_body(request)
        user = request.user if request.user.is_authenticated else None
        return answer(self.call(name, args, user))

    def _read_body(self, request: Request) -> tuple[str, dict[str, Any]]:
        length = request.META.get("CONTENT_LENGTH") or "0"
        if not length.isdigit():
            raise BadMessage(f"Content-Length {length!r} is not a number of bytes.")
        if int(length) > reactive_settings.MAX_MESSAGE_BYTES:
            raise TooLarge(f"Body of {length} bytes exceeds {reactive_settings.MAX_MESSAGE_BYTES}.")
        body = request.data
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise BadMessage(_ENVELOPE)
        args = body.get("args", {})
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise BadMessage('"args" must be a JSON object.')
        return body["name"], args

    def call(self, name: str, args: dict[str, Any], user: Any) -> dict[str, Any]:
        return {"ok": True, "value": guarded(name, call_query, name, args, user)}


class MutationView(FunctionView):
    kind = "mutation"

    def call(self, name: str, args: dict[str, Any], user: Any) -> dict[str, Any]:
        outcome = guarded(name, call_mutation, name, args, user)
        return {"ok": True, "value": orjson.Fragment(outcome.payload), "version": outcome.version}


class ActionView(FunctionView):
    kind = "action"

    def call(self, name: str, args: dict[str, Any], user: Any) -> dict[str, Any]:
        return {"ok": True, "value": orjson.Fragment(guarded(name, call_action, name, args, user))}
