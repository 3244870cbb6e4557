"""The task list's query and mutations (``tasks.list``, ``tasks.create`` ...)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from reactive import ReactiveError, mutation, query

from .models import Task


def _task(task_id: int) -> Task:
    task = Task.objects.filter(pk=task_id).first()
    if task is None:
        raise ReactiveError("No such task.", {"id": task_id})
    return task


# Named explicitly: a function called `list` would shadow the builtin.
@query(name="tasks.list")
def list_tasks(ctx: Any) -> list[dict[str, Any]]:
    return list(Task.objects.order_by("created", "id").values("id", "text", "completed"))


@mutation(name="tasks.create", args={"text": serializers.CharField(max_length=500)})
def create_task(ctx: Any, text: str) -> int:
    return Task.objects.create(text=text).id


@mutation(name="tasks.toggle", args={"id": serializers.IntegerField()})
def toggle_task(ctx: Any, id: int) -> bool:
    """Flip the task's completed flag; return the new value."""
    task = _task(id)
    task.completed = not task.completed
    task.save(update_fields=["completed"])
    return task.completed


@mutation(name="tasks.remove", args={"id": serializers.IntegerField()})
def remove_task(ctx: Any, id: int) -> None:
    _task(id).delete()
