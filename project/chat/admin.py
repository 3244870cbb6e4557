from django.contrib import admin

from .models import Channel, Message


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    list_display = ["name", "id"]
    search_fields = ["name"]
    filter_horizontal = ["members"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["body", "channel", "author", "created", "edited"]
    list_filter = ["channel"]
    search_fields = ["body"]
    list_select_related = ["channel", "author"]
    date_hierarchy = "created"
