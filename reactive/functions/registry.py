"""The registry of query, mutation and action functions, and the decorators that fill it.

``@query``, ``@mutation`` and ``@action`` record a :class:`Function` under the name
``"<app_label>.<function name>"`` (or ``name=``). Each installed app's ``functions`` module is
imported in ``ReactiveConfig.ready()``, like ``admin.autodiscover()``.
"""

from __future__ import annotations

import difflib
import inspect
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeVar, overload

from django.apps import apps
from rest_framework import serializers

from ..errors import Forbidden, InvalidArgs, NotFound, ServerError, Unauthenticated, plain_errors
from ..settings import reactive_settings
from . import encoding

Kind = Literal["query", "mutation", "action"]
F = TypeVar("F", bound=Callable[..., Any])

# args= accepts a mapping of DRF fields or a Serializer class.
ArgsSpec = Mapping[str, serializers.Field] | type[serializers.Serializer] | None
# permission= accepts a callable(ctx) -> bool or a DRF permission class.
PermissionSpec = Callable[[Any], bool] | type | None

logger = logging.getLogger("reactive.functions")


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
    # What is wrong with the function's signature for its args= (``manage.py check``: reactive.E005).
    problems: tuple[str, ...] = ()

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
    """The function registered as ``name``, which must be of ``kind``; else ``NotFound``.

    A function whose signature does not fit its ``args=`` is refused with the reason (the same
    text ``manage.py check`` shows) rather than failing inside the call with a bare TypeError.
    """
    function = _functions.get(name) if isinstance(name, str) else None
    if function is None:
        raise NotFound(_not_found_message(name, kind))
    if function.kind != kind:
        raise NotFound(f"{name!r} is a {function.kind}, not a {kind}: call it as a {function.kind}.")
    if function.problems:
        error = ServerError(f"{function.name} cannot be called: {' '.join(function.problems)}")
        logger.error("%s", error.message)
        raise error
    return function


def registered_functions() -> Iterator[Function]:
    """Every registered function (for the system checks)."""
    return iter(list(_functions.values()))


def _not_found_message(name: Any, kind: Kind) -> str:
    """``No query named ...``, with the close matches and the naming rule."""
    names = sorted(n for n, function in _functions.items() if function.kind == kind)
    message = f"No {kind} named {name!r}."
    if not isinstance(name, str):
        return message
    # A bare function name matches "<app_label>.<name>"; else the closest spellings.
    close = [n for n in names if n.rpartition(".")[2] == name] or difflib.get_close_matches(
        name, names, n=3, cutoff=0.8
    )
    if close:
        message += f" Did you mean {' or '.join(repr(n) for n in close)}?"
    if not names:
        return (
            f"{message} No {kind} is registered at all: functions are found in the "
            f"{reactive_settings.FUNCTIONS_MODULE}.py module of each app in INSTALLED_APPS."
        )
    return f'{message} Names are "<app_label>.<function>", or the name= given to the decorator.'


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


def signature_problems(func: Callable[..., Any], serializer: serializers.Serializer) -> tuple[str, ...]:
    """Why ``func`` cannot be called as ``func(ctx, **validated_args)``; empty if it can."""
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):  # a builtin or a callable without a signature: trust it
        return ()
    P = inspect.Parameter
    fields = serializer.fields
    problems = []
    positional = [p for p in parameters if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    takes_ctx = bool(positional) and positional[0].name not in fields
    if takes_ctx:
        parameters.remove(positional[0])
    elif not any(p.kind is P.VAR_POSITIONAL for p in parameters):
        problems.append("It does not take ctx: its first parameter must be ctx, as in def f(ctx, ...).")
    by_keyword = {p.name: p for p in parameters if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)}
    if not any(p.kind is P.VAR_KEYWORD for p in parameters):
        unknown = [n for n in fields if n not in by_keyword]
        if unknown:
            problems.append(
                f"args= names {_names(unknown)}, which the function does not take"
                f"{'' if by_keyword else ' (it takes no argument after ctx)'}: "
                "rename the parameter or the argument so that they match."
            )
    missing = [n for n, p in by_keyword.items() if p.default is P.empty and n not in fields]
    if missing:
        them = "them" if len(missing) > 1 else "it"
        problems.append(
            f"It requires {_names(missing)}, which args= does not name: "
            f"add {them} to args= or give {them} a default."
        )
    # An optional field without a default is left out of the arguments when the client omits it.
    omitted = [
        n
        for n, f in fields.items()
        if not f.required
        and f.default is serializers.empty
        and n in by_keyword
        and by_keyword[n].default is P.empty
    ]
    if omitted:
        problems.append(
            f"args= makes {_names(omitted)} optional without a default, and the parameter has none: "
            "give the parameter or the field a default."
        )
    only_positional = [p.name for p in parameters if p.kind is P.POSITIONAL_ONLY]
    if only_positional:
        problems.append(f"{_names(only_positional)} must be passable by keyword: remove the '/'.")
    return tuple(problems)


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


def register(kind: Kind, func: F, *, args: ArgsSpec, name: str | None, permission: PermissionSpec) -> F:
    function_name = name or _default_name(func)
    serializer_class = _serializer_class(function_name, args)
    existing = _functions.get(function_name)
    if existing is not None and existing.func.__qualname__ != func.__qualname__:
        raise ValueError(f"Two functions are registered as {function_name!r}; give one of them name=.")
    serializer = serializer_class()
    _functions[function_name] = Function(
        kind=kind,
        name=function_name,
        func=func,
        serializer_class=serializer_class,
        permission=permission,
        field_names=frozenset(serializer.fields),
        problems=signature_problems(func, serializer),
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
