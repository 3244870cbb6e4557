from django.conf import settings
from django.db import models
from django.utils import timezone


class Channel(models.Model):
    name = models.CharField(max_length=100, unique=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="chat_channels", blank=True)

    def __str__(self) -> str:
        return self.name


class Message(models.Model):
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="messages")
    # Kept when the author's account is deleted; messages sent while signed out have none.
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    body = models.CharField(max_length=2000)
    created = models.DateTimeField(default=timezone.now, db_index=True)
    edited = models.BooleanField(default=False)

    class Meta:
        # A channel's messages newest first: what list_messages and paginated_messages read.
        indexes = [models.Index(fields=["channel", "created"], name="chat_message_channel_created")]

    def __str__(self) -> str:
        return self.body[:50]
