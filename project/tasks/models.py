from django.db import models
from django.utils import timezone


class Task(models.Model):
    text = models.CharField(max_length=500)
    completed = models.BooleanField(default=False)
    created = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.text
