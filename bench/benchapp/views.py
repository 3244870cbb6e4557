"""Plain Django views of the benchmark: the same ORM write with and without ``reactive``.

``POST /bench/bump?key=K&intended=NS`` increments a counter (``writes.bump_counter``) and answers
``{"key", "value", "stamp"}``; ``POST /bench/reset?first=F&count=C`` creates counters at 0. No
CSRF check (the load generator has no session) and no ``reactive`` import at module level.
``POST /bench/user`` (servers with ``reactive`` only) creates a user and answers
``{"token"}``, a ``reactive.auth`` token for ``Authorization: Bearer``: the chat's edits and
deletes need a signed-in author.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .writes import bump_counter, reset_counters


@csrf_exempt
@require_POST
def bump(request: HttpRequest) -> JsonResponse:
    return JsonResponse(bump_counter(int(request.GET["key"]), int(request.GET.get("intended", 0))))


@csrf_exempt
@require_POST
def user(request: HttpRequest) -> JsonResponse:
    from django.contrib.auth import get_user_model

    from reactive.auth import make_token

    model = get_user_model()
    created = model.objects.create_user(username=f"bench-{model.objects.count() + 1}")
    return JsonResponse({"token": make_token(created)})


@csrf_exempt
@require_POST
def reset(request: HttpRequest) -> JsonResponse:
    created = reset_counters(int(request.GET.get("first", 0)), int(request.GET.get("count", 1)))
    return JsonResponse({"created": created})
