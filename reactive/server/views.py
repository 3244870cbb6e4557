"""The HTTP API of PROTOCOL.md, for clients that keep no socket.

``POST /reactive/api/query|mutation|action`` with ``{"name", "args"}``. Authentication is the
Django session (with its CSRF check) or ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..engine.execution import call_action, call_mutation, call_query, guarded
from ..errors import BadMessage, ProtocolError, TooLarge, Unauthenticated
from ..functions import encoding
from ..settings import reactive_settings
from .installation import require_app_installed


class BearerTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, str] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != b"bearer":
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.")
        token = header[1].decode()
        user = reactive_settings.TOKEN_AUTHENTICATOR(token)
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid or expired token.")
        return user, token

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


class FunctionView(APIView):
    kind = "query"
    authentication_classes = [BearerTokenAuthentication, authentication.SessionAuthentication]
    permission_classes: list = []
    parser_classes = [JSONParser]
    # JSON only: DRF's browsable API needs "rest_framework" in INSTALLED_APPS for its templates,
    # and without it a browser's GET would end in a TemplateDoesNotExist error page.
    renderer_classes = [JSONRenderer]

    def handle_exception(self, exc: Exception) -> Response:
        # Authentication runs before post(): answer in the protocol's shape, not DRF's.
        if isinstance(exc, (exceptions.AuthenticationFailed, exceptions.NotAuthenticated)):
            error = Unauthenticated(str(exc.detail))
            response = Response({"ok": False, "error": error.as_dict()}, status=error.status)
            response["WWW-Authenticate"] = "Bearer"
            return response
        return super().handle_exception(exc)

    def post(self, request: Request) -> Response:
        try:
            require_app_installed()
            name, args = self._read_body(request)
            user = request.user if request.user.is_authenticated else None
            body = self.call(name, args, user)
            return Response(body)
        except ProtocolError as error:
            return Response({"ok": False, "error": error.as_dict()}, status=error.status)

    def _read_body(self, request: Request) -> tuple[str, dict[str, Any]]:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
        if length > reactive_settings.MAX_MESSAGE_BYTES:
            raise TooLarge(f"Body of {length} bytes exceeds {reactive_settings.MAX_MESSAGE_BYTES}.")
        try:
            body = request.data
        except exceptions.ParseError as exc:
            raise BadMessage(f"Body is not valid JSON: {exc.detail}") from None
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise BadMessage('Body must be a JSON object with "name" (a string) and "args" (an object).')
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
        return {"ok": True, "value": outcome.value, "version": outcome.version}


class ActionView(FunctionView):
    kind = "action"

    def call(self, name: str, args: dict[str, Any], user: Any) -> dict[str, Any]:
        return {"ok": True, "value": encoding.loads(guarded(name, call_action, name, args, user))}
