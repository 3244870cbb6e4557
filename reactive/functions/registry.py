"""The registry of query, mutation and action functions, and the decorators that fill it.

``@query``, ``@mutation`` and ``@action`` record a :class:`Function` under the name
``"<app_label>.<function name>"`` (or ``name=``). Each installed app's ``functions`` module is
imported in ``ReactiveConfig.ready()``, like ``admin.autodiscover()``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeVar, overload

from django.apps import apps
from rest_framework import serializers

from ..errors import Forbidden, InvalidArgs, NotFound, Unauthenticated, plain_errors
from . import encoding

Kind = Literal["query", "mutation", "action"]
F = TypeVar("F", bound=Callable[..., Any])

# args= accepts a mapping of DRF fields or a Serializer class.
ArgsSpec = Mapping[str, serializers.Field] | type[serializers.Serializer] | None
# permission= accepts a callable(ctx) -> bool or a DRF permission class.
PermissionSpec = Callable[[Any], bool] | type | None


class ValidArgs(NamedTuple):
    """Validated arguments: the values the function gets, and their canonical JSON.

    The canonical JSON is the fields' own representation of the validated values, with sorted
    keys: unknown keys inside nested objects are gone, and equal arguments give equal bytes.
    It is all that leaves the connection (requests to the invalidator, instance identity,
    stored instances); the invalidator validates it again.
    """

    values: dict[str, Any]
    canonical: bytes


@dataclass(eq=False)
class Function:
    """A registered function: what it is, how to validate its arguments, who may call it."""

    kind: Kind
    name: str
    func: Callable[..., Any]
    serializer_class: type[serializers.Serializer]
    permission: PermissionSpec = None
    field_names: frozenset[str] = field(default_factory=frozenset)

    def validate_args(self, args: Any) -> dict[str, Any]:
        """Validated keyword arguments, or ``InvalidArgs`` with DRF-shaped field errors."""
        return self.validate(args).values

    def validate(self, args: Any) -> ValidArgs:
        """``validate_args`` with the canonical JSON of the result (see ``ValidArgs``)."""
        if not isinstance(args, dict):
            raise InvalidArgs(
                "Arguments must be a JSON object.", {"non_field_errors": ["Expected an object."]}
            )
        unknown = sorted(set(args) - self.field_names)
        if unknown:
            raise InvalidArgs(
                f"Unknown argument(s) for {self.name}: {', '.join(unknown)}.",
                {name: ["Unknown argument."] for name in unknown},
            )
        serializer = self.serializer_class(data=args)
        if not serializer.is_valid():
            raise InvalidArgs(f"Invalid arguments for {self.name}.", plain_errors(serializer.errors))
        values = dict(serializer.validated_data)
        fields = serializer.fields
        representation = {
            name: value if value is None or name not in fields else fields[name].to_representation(value)
            for name, value in values.items()
        }
        try:
            canonical = encoding.dumps_canonical(representation)
        except TypeError as exc:
            # orjson's limits: integers beyond 64 bits, nesting beyond 254 levels.
            raise InvalidArgs(
                f"Invalid arguments for {self.name}: {exc}.",
                {"non_field_errors": [f"{exc}: integers must fit in 64 bits, nesting in 254 levels."]},
            ) from None
        return ValidArgs(values, canonical)

    def check_permission(self, ctx: Any) -> None:
        """Raise ``Unauthenticated`` or ``Forbidden`` unless ``ctx`` may call this function."""
        if self.permission is None:
            return
        if isinstance(self.permission, type):
            allowed = self.permission().has_permission(_PermissionRequest(ctx), None)
        else:
            allowed = self.permission(ctx)
        if not allowed:
            raise Forbidden() if ctx.is_authenticated else Unauthenticated()


class _PermissionRequest:
    """What a DRF permission class reads from a request: the user (and the method, as POST)."""

    method = "POST"

    def __init__(self, ctx: Any) -> None:
        self.user = ctx.user
        self.auth = None


_functions: dict[str, Function] = {}


def get_function(name: Any, kind: Kind) -> Function:
    """The function registered as ``name``, which must be of ``kind``; else ``NotFound``."""
    function = _functions.get(name) if isinstance(name, str) else None
    if function is None:
        raise NotFound(f"No {kind} named {name!r}.")
    if function.kind != kind:
        raise NotFound(f"{name!r} is a {function.kind}, not a {kind}.")
    return function


def _serializer_class(name: str, args: ArgsSpec) -> type[serializers.Serializer]:
    if args is None:
        args = {}
    if isinstance(args, type) and issubclass(args, serializers.Serializer):
        return args
    if isinstance(args, Mapping):
        for arg_name, arg_field in args.items():
            if not isinstance(arg_field, serializers.Field):
                raise TypeError(f"{name}: argument {arg_name!r} must be a DRF field, got {arg_field!r}.")
        return type("Args", (serializers.Serializer,), dict(args))
    raise TypeError(f"{name}: args= must be a mapping of DRF fields or a Serializer class.")


def _default_name(func: Callable[..., Any]) -> str:
    app_config = apps.get_containing_app_config(func.__module__)
    prefix = app_config.label if app_config else func.__module__.rsplit(".", 1)[-1]
    return f"{prefix}.{func.__name__}"


def register(kind: Kind, func: F, *, args: ArgsSpec, name: str | None, permission: PermissionSpec) -> F:
    function_name = name or _default_name(func)
    serializer_class = _serializer_class(function_name, args)
    existing = _functions.get(function_name)
    if existing is not None and existing.func.__qualname__ != func.__qualname__:
        raise ValueError(f"Two functions are registered as {function_name!r}; give one of them name=.")
    _functions[function_name] = Function(
        kind=kind,
        name=function_name,
        func=func,
        serializer_class=serializer_class,
        permission=permission,
        field_names=frozenset(serializer_class().fields),
    )
    func.reactive_name = function_name  # type: ignore[attr-defined]
    return func


def _decorator(kind: Kind):
    @overload
    def decorate(func: F, /) -> F: ...

    @overload
    def decorate(
        *, args: ArgsSpec = None, name: str | None = None, permission: PermissionSpec = None
    ) -> Callable[[F], F]: ...

    def decorate(func=None, /, *, args=None, name=None, permission=None):
        if func is not None:
            return register(kind, func, args=args, name=name, permission=permission)
        return lambda f: register(kind, f, args=args, name=name, permission=permission)

    decorate.__name__ = kind
    decorate.__doc__ = (
        f"Register a {kind} function ``f(ctx, **args)``.\n\n"
        "``args``: a mapping of DRF fields or a Serializer class validating the arguments; "
        "unknown arguments are rejected. ``name``: the public name (default "
        '``"<app_label>.<function>"``). ``permission``: a callable(ctx) -> bool or a DRF '
        "permission class."
    )
    return decorate


query = _decorator("query")
mutation = _decorator("mutation")
action = _decorator("action")
