"""Test-only models: plain fields of many types and every relation kind Django joins over."""

import uuid

from django.conf import settings
from django.db import models

# A case-folding collation that exists on the test database (SQLite's NOCASE, Postgres's "C" is
# not folding but any explicit collation makes the read sets drop string conditions).
FOLDING_COLLATION = "nocase" if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3") else "C"


class Owner(models.Model):
    name = models.CharField(max_length=100)
    email = models.CharField(max_length=200, blank=True)


class Profile(models.Model):
    """One-to-one to Owner."""

    owner = models.OneToOneField(Owner, models.CASCADE, related_name="profile")
    bio = models.TextField(blank=True)


class Channel(models.Model):
    name = models.CharField(max_length=100)
    is_public = models.BooleanField(default=True)
    owner = models.ForeignKey(Owner, models.CASCADE, related_name="owned_channels")
    # ManyToMany with an explicit through model.
    members = models.ManyToManyField(Owner, through="Membership", related_name="channels")


class OpenChannel(Channel):
    """A proxy: same table as Channel."""

    class Meta:
        proxy = True


class Membership(models.Model):
    owner = models.ForeignKey(Owner, models.CASCADE, related_name="memberships")
    channel = models.ForeignKey(Channel, models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, default="member")


class Tag(models.Model):
    """A CharField primary key."""

    slug = models.SlugField(primary_key=True, max_length=50)
    label = models.CharField(max_length=100, blank=True)


class Item(models.Model):
    """Plain fields of many types, FKs (CASCADE, SET_NULL, self), an auto-through ManyToMany."""

    number = models.IntegerField(default=0)
    flag = models.BooleanField(default=False)
    title = models.CharField(max_length=200, blank=True)
    body = models.TextField(blank=True)
    price = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    created = models.DateTimeField(null=True)
    day = models.DateField(null=True)
    at = models.TimeField(null=True)
    duration = models.DurationField(null=True)
    ratio = models.FloatField(null=True)
    token = models.UUIDField(default=uuid.uuid4)
    data = models.JSONField(default=dict, blank=True)
    blob = models.BinaryField(null=True)
    nickname = models.CharField(max_length=50, null=True)
    external = models.IntegerField(null=True, db_column="ext_ref")
    folded = models.CharField(max_length=50, blank=True, db_collation=FOLDING_COLLATION)
    channel = models.ForeignKey(Channel, models.CASCADE, related_name="items")
    editor = models.ForeignKey(Owner, models.SET_NULL, null=True, related_name="edited_items")
    parent = models.ForeignKey("self", models.SET_NULL, null=True, related_name="children")
    tags = models.ManyToManyField(Tag, related_name="items", blank=True)


class Place(models.Model):
    """Multi-table inheritance parent."""

    name = models.CharField(max_length=100)
    city = models.CharField(max_length=100, blank=True)


class Restaurant(Place):
    """Multi-table inheritance child: its pk is the parent_ptr OneToOne."""

    serves_pizza = models.BooleanField(default=False)
    rating = models.IntegerField(default=0)


class Legacy(models.Model):
    """A custom db_table."""

    code = models.IntegerField()
    note = models.CharField(max_length=100, blank=True)

    class Meta:
        db_table = "legacy_records"


class Document(models.Model):
    """A UUID primary key, and an FK to a CharField primary key."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    title = models.CharField(max_length=100)
    tag = models.ForeignKey(Tag, models.SET_NULL, null=True, related_name="documents")
    owner = models.ForeignKey(Owner, models.CASCADE, null=True, related_name="documents")
