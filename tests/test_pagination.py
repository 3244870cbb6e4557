"""reactive.functions.pagination: keyset pages that never leave a gap or a duplicate."""

from __future__ import annotations

import base64
import datetime
import decimal
import uuid

import orjson
import pytest
from django.contrib.auth.models import Permission, User
from django.core import signing
from django.db import models, transaction
from django.db.models import Count, F
from django.db.models.functions import Lower
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from project.chat.models import Channel, Message
from project.tasks.models import Task
from reactive import paginate
from reactive.errors import InvalidArgs
from reactive.functions.pagination import (
    START_CURSOR,
    PaginationOptions,
    UnsupportedQueryset,
    _CursorSerializer,
    _decode,
    _encode,
    _Key,
    _signer,
)

T0 = datetime.datetime(2024, 1, 1, 12, 0, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def page(queryset, num_items=10, cursor=None, end_cursor=None):
    return paginate(queryset, {"num_items": num_items, "cursor": cursor, "end_cursor": end_cursor})


def load_all(queryset, num_items):
    """Every page in turn, as a client scrolling to the end would load them."""
    items, cursor = [], None
    for _ in range(1000):
        result = page(queryset, num_items, cursor)
        items += result["page"]
        cursor = result["continue_cursor"]
        if result["is_done"]:
            return items
    raise AssertionError("pagination never finished")


@pytest.fixture
def tasks():
    """Seven tasks one second apart, created out of order so pk order differs from time order."""
    seconds = [3, 0, 6, 1, 5, 2, 4]
    return [Task.objects.create(text=f"task {s}", created=at(s)) for s in seconds]


def by_time(tasks):
    return sorted(tasks, key=lambda task: task.created)


# Pages


@pytest.mark.django_db
def test_first_page_and_following_pages(tasks):
    queryset = Task.objects.order_by("created")
    first = page(queryset, 3)
    assert first["page"] == by_time(tasks)[:3]
    assert first["is_done"] is False
    assert isinstance(first["continue_cursor"], str)

    second = page(queryset, 3, first["continue_cursor"])
    assert second["page"] == by_time(tasks)[3:6]
    assert second["is_done"] is False

    third = page(queryset, 3, second["continue_cursor"])
    assert third["page"] == by_time(tasks)[6:]
    assert third["is_done"] is True


@pytest.mark.django_db
def test_last_full_page_is_done(tasks):
    result = page(Task.objects.order_by("created"), 7)
    assert len(result["page"]) == 7
    assert result["is_done"] is True
    after = page(Task.objects.order_by("created"), 7, result["continue_cursor"])
    assert after == {"page": [], "is_done": True, "continue_cursor": result["continue_cursor"]}


@pytest.mark.django_db
def test_empty_first_page_continues_from_the_start():
    queryset = Task.objects.order_by("created")
    empty = page(queryset, 5)
    assert empty == {"page": [], "is_done": True, "continue_cursor": START_CURSOR}

    task = Task.objects.create(text="a new task", created=at(0))
    # The empty page, fixed at the start, stays empty; the next page starts at the start.
    assert page(queryset, 5, None, START_CURSOR) == {"page": [], "is_done": False, "continue_cursor": "start"}
    assert page(queryset, 5, START_CURSOR)["page"] == [task]


@pytest.mark.django_db
@pytest.mark.parametrize("num_items", [1, 2, 3, 7, 100])
def test_pages_concatenate_to_the_whole_result(tasks, num_items):
    assert load_all(Task.objects.order_by("created"), num_items) == by_time(tasks)
    assert load_all(Task.objects.order_by("-created"), num_items) == by_time(tasks)[::-1]


@pytest.mark.django_db
def test_a_page_is_the_querysets_own_filtering(tasks):
    Task.objects.filter(created__gte=at(4)).update(completed=True)
    result = page(Task.objects.filter(completed=True).order_by("-created"), 2)
    assert [task.text for task in result["page"]] == ["task 6", "task 5"]
    rest = page(Task.objects.filter(completed=True).order_by("-created"), 2, result["continue_cursor"])
    assert [task.text for task in rest["page"]] == ["task 4"]
    assert rest["is_done"] is True


# end_cursor


@pytest.mark.django_db
def test_end_cursor_fixes_the_page_whatever_num_items(tasks):
    queryset = Task.objects.order_by("created")
    first = page(queryset, 3)
    end = first["continue_cursor"]
    assert page(queryset, 1, None, end) == {**first, "continue_cursor": end}

    # Rows inserted inside the page grow it instead of pushing a row onto the next page.
    inside = Task.objects.create(text="inside", created=at(0.5))
    grown = page(queryset, 3, None, end)
    assert [task.text for task in grown["page"]] == ["task 0", "inside", "task 1", "task 2"]
    assert grown["continue_cursor"] == end
    assert grown["is_done"] is False

    # Deleting the row the cursor came from moves no boundary: the next page starts after it.
    Task.objects.filter(text="task 2").delete()
    inside.delete()
    assert [task.text for task in page(queryset, 3, None, end)["page"]] == ["task 0", "task 1"]
    assert [task.text for task in page(queryset, 2, end)["page"]] == ["task 3", "task 4"]


@pytest.mark.django_db
def test_end_cursor_is_done_when_no_row_follows(tasks):
    queryset = Task.objects.order_by("created")
    last = page(queryset, 7)
    assert page(queryset, 1, None, last["continue_cursor"])["is_done"] is True
    Task.objects.create(text="later", created=at(10))
    assert page(queryset, 1, None, last["continue_cursor"])["is_done"] is False
    earlier = Task.objects.create(text="earlier", created=at(-10))
    fixed = page(queryset, 1, None, last["continue_cursor"])
    assert fixed["page"][0] == earlier
    assert len(fixed["page"]) == 8


@pytest.mark.django_db
def test_middle_page_with_cursor_and_end_cursor(tasks):
    queryset = Task.objects.order_by("-created")
    first = page(queryset, 2)
    second = page(queryset, 3, first["continue_cursor"])
    fixed = page(queryset, 50, first["continue_cursor"], second["continue_cursor"])
    assert fixed == second
    assert [task.text for task in fixed["page"]] == ["task 4", "task 3", "task 2"]


@pytest.mark.django_db
def test_end_cursor_before_cursor_gives_an_empty_page(tasks):
    queryset = Task.objects.order_by("created")
    first = page(queryset, 2)
    second = page(queryset, 2, first["continue_cursor"])
    backwards = page(queryset, 2, second["continue_cursor"], first["continue_cursor"])
    assert backwards["page"] == []
    assert backwards["continue_cursor"] == first["continue_cursor"]


# Orderings


@pytest.mark.django_db
def test_ties_are_broken_by_primary_key():
    same = [Task.objects.create(text=str(i), created=T0) for i in range(5)]
    assert load_all(Task.objects.order_by("created"), 2) == same
    # The added tie-break is ascending whatever the direction of the other keys.
    assert load_all(Task.objects.order_by("-created"), 2) == same
    # An explicit primary key ends the ordering: nothing is added after it.
    assert load_all(Task.objects.order_by("-created", "-id"), 2) == same[::-1]


@pytest.mark.django_db
def test_multiple_fields_mixed_directions():
    for i in range(12):
        Task.objects.create(text=f"t{i % 3}", completed=i % 2 == 0, created=at(i % 4))
    queryset = Task.objects.order_by("-completed", "text", "-created")
    expected = list(queryset.order_by("-completed", "text", "-created", "pk"))
    for num_items in (1, 4, 5):
        assert load_all(queryset, num_items) == expected


@pytest.mark.django_db
def test_unordered_queryset_is_paged_by_primary_key(tasks):
    assert load_all(Task.objects.all(), 3) == sorted(tasks, key=lambda task: task.pk)
    assert load_all(Task.objects.order_by(), 3) == sorted(tasks, key=lambda task: task.pk)


@pytest.mark.django_db
def test_reversed_queryset(tasks):
    assert load_all(Task.objects.order_by("created").reverse(), 3) == by_time(tasks)[::-1]
    same = [Task.objects.create(text="tie", created=at(100)) for _ in range(3)]
    reversed_result = load_all(Task.objects.order_by("created").reverse(), 2)
    assert reversed_result[:3] == same[::-1]


@pytest.mark.django_db
def test_meta_ordering_across_two_foreign_keys():
    queryset = Permission.objects.all()  # Meta.ordering: content_type__app_label, ..., codename
    expected = list(Permission.objects.order_by(*Permission._meta.ordering, "pk"))
    assert len(expected) > 10
    assert load_all(queryset, 7) == expected


@pytest.fixture
def messages():
    users = [User.objects.create(username=f"user{i}") for i in (1, 2)]
    channel = Channel.objects.create(name="general")
    authors = [None, users[0], users[1], None, users[1]]
    return [
        Message.objects.create(channel=channel, author=authors[i % 5], body=f"m{i}", created=at(i % 3))
        for i in range(11)
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "ordering",
    [
        ("author__username",),
        ("-author__username", "created"),
        (F("author__username").asc(nulls_last=True), "-created"),
        (F("author__username").desc(nulls_first=True),),
        (F("author__username").desc(nulls_last=True),),
        ("author", "-created"),
        ("channel__name", F("created")),
    ],
    ids=str,
)
def test_ordering_across_a_nullable_foreign_key(messages, ordering):
    queryset = Message.objects.order_by(*ordering)
    expected = list(queryset.order_by(*ordering, "pk"))
    for num_items in (1, 2, 3, 4):
        assert load_all(queryset, num_items) == expected


@pytest.mark.django_db
def test_ordering_by_an_annotation(tasks):
    Task.objects.create(text="TASK 3", created=at(9))
    queryset = Task.objects.annotate(lowered=Lower("text")).order_by("-lowered")
    expected = list(queryset.order_by("-lowered", "pk"))
    assert load_all(queryset, 2) == expected


@pytest.mark.django_db
def test_model_instances_keep_no_cursor_attributes(tasks):
    task = page(Task.objects.order_by("created"), 1)["page"][0]
    assert not [name for name in vars(task) if "cursor" in name]


# Querysets of values


@pytest.mark.django_db
def test_values_queryset_without_the_ordering_fields(tasks):
    queryset = Task.objects.order_by("-created").values("text")
    first = page(queryset, 4)
    assert first["page"] == [{"text": f"task {s}"} for s in (6, 5, 4, 3)]
    rest = page(queryset, 4, first["continue_cursor"])
    assert rest["page"] == [{"text": f"task {s}"} for s in (2, 1, 0)]
    assert rest["is_done"] is True


@pytest.mark.django_db
def test_values_queryset_with_expressions(tasks):
    queryset = Task.objects.values("id", upper=Lower("text")).order_by("created")
    assert load_all(queryset, 3) == list(queryset)


@pytest.mark.django_db
def test_values_list_querysets(tasks):
    flat = Task.objects.order_by("created").values_list("text", flat=True)
    assert load_all(flat, 3) == [f"task {s}" for s in range(7)]
    plain = Task.objects.order_by("created").values_list("text", "completed")
    assert load_all(plain, 3) == [(f"task {s}", False) for s in range(7)]
    named = load_all(Task.objects.order_by("created").values_list("text", named=True), 3)
    assert [row.text for row in named] == [f"task {s}" for s in range(7)]
    assert named[0]._fields == ("text",)
    everything = Task.objects.order_by("created").values_list()
    assert load_all(everything, 3) == list(everything)


# Cursors


@pytest.mark.django_db
def test_cursor_is_the_ordering_values_signed_with_the_cursor_salt(tasks):
    cursor = page(Task.objects.order_by("-created"), 1)["continue_cursor"]
    newest = by_time(tasks)[-1]
    values = signing.Signer(salt="reactive.pagination.cursor").unsign_object(cursor)
    assert values == [newest.created.isoformat(), newest.pk]
    with pytest.raises(signing.BadSignature):
        signing.Signer(salt="another.salt").unsign_object(cursor)


def test_cursor_values_round_trip_through_the_fields():
    fields = [
        models.DateTimeField(),
        models.DecimalField(max_digits=8, decimal_places=3),
        models.DateField(),
        models.UUIDField(),
        models.DurationField(),
        models.FloatField(),
        models.CharField(null=True),
        models.BigAutoField(primary_key=True),
    ]
    values = [
        datetime.datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=datetime.UTC),
        decimal.Decimal("12345.670"),
        datetime.date(2024, 2, 29),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        datetime.timedelta(days=1, microseconds=5),
        0.1,
        None,
        2**40,
    ]
    keys = [_Key(f"f{i}", False, False, False, False, nullable=True) for i in range(len(values))]
    decoded = _decode(_encode(values), "cursor", keys, fields)
    assert decoded == values
    assert decoded[1].as_tuple() == values[1].as_tuple()
    assert decoded[0].tzinfo is not None


def _b64(value) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode()


def _signed(value) -> str:
    """A payload signed as this server signs cursors (what a cursor of another shape looks like)."""
    return _signer().sign_object(value, serializer=_CursorSerializer)


def _flipped(cursor: str, index: int) -> str:
    character = cursor[index]
    return cursor[:index] + ("A" if character != "A" else "B") + cursor[index + 1 :]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "x",
        _b64({"a": 1}),
        _b64(["2024-01-01T00:00:00+00:00", 1]),  # the unsigned cursors of earlier versions
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        "WyIyMDI0LTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwxXQ:not-a-signature",
        signing.Signer(salt="another.salt").sign_object(["2024-01-01T00:00:00+00:00", 1]),
        signing.dumps({"user": 1}, salt="reactive.token", compress=True),  # a sign-in token
    ],
)
@pytest.mark.parametrize("field", ["cursor", "end_cursor"])
def test_cursor_the_server_did_not_sign_is_invalid_args(tasks, cursor, field):
    queryset = Task.objects.order_by("created")
    with pytest.raises(InvalidArgs) as error:
        paginate(queryset, {"num_items": 3, field: cursor})
    assert error.value.code == "invalid_args"
    assert error.value.data == {
        "pagination": {field: ["Invalid cursor: pass back a cursor that this query returned."]}
    }


@pytest.mark.django_db
@pytest.mark.parametrize("position", [0, 10, -1], ids=["payload-start", "payload", "signature"])
def test_real_cursor_with_one_character_changed_is_invalid_args(tasks, position):
    cursor = page(Task.objects.order_by("created"), 3)["continue_cursor"]
    with pytest.raises(InvalidArgs) as error:
        page(Task.objects.order_by("created"), 3, None, _flipped(cursor, position))
    assert list(error.value.data["pagination"]) == ["end_cursor"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "payload",
    [
        {"a": 1},
        [1],
        ["2024-01-01T00:00:00+00:00", 1, 2],
        ["not a date", 1],
        ["2024-01-01T00:00:00+00:00", "one"],
        ["2024-01-01T00:00:00+00:00", None],
        [None, 1],
    ],
)
def test_signed_cursor_that_does_not_fit_the_ordering_is_invalid_args(tasks, payload):
    queryset = Task.objects.order_by("created")
    for field in ("cursor", "end_cursor"):
        with pytest.raises(InvalidArgs) as error:
            paginate(queryset, {"num_items": 3, field: _signed(payload)})
        assert error.value.message == "Invalid cursor: pass back a cursor that this query returned."
        assert list(error.value.data["pagination"]) == [field]


@pytest.mark.django_db
def test_cursor_from_another_ordering_is_rejected_when_its_shape_differs(tasks):
    cursor = page(Task.objects.order_by("completed", "created"), 1)["continue_cursor"]
    with pytest.raises(InvalidArgs, match=r"Invalid cursor"):
        page(Task.objects.order_by("created"), 1, cursor)


# The largest page


@pytest.mark.django_db
def test_page_fixed_by_end_cursor_is_cut_at_the_largest_page(tasks, settings):
    settings.REACTIVE = {**settings.REACTIVE, "PAGINATION_MAX_ITEMS": 3}
    queryset = Task.objects.order_by("created")
    first = page(queryset, 3)
    end = first["continue_cursor"]
    assert page(queryset, 1, None, end) == {**first, "continue_cursor": end}

    inside = [Task.objects.create(text=f"inside {i}", created=at(0.5 + i / 10)) for i in range(2)]
    cut = page(queryset, 1, None, end)
    # Five rows now lie up to end_cursor: the page holds three and continues after the third.
    assert [task.text for task in cut["page"]] == ["task 0", "inside 0", "inside 1"]
    assert cut["is_done"] is False
    assert cut["continue_cursor"] != end
    # The rest of the fixed page, then the rows after it, with no gap and no duplicate.
    rest = page(queryset, 3, cut["continue_cursor"], end)
    assert [task.text for task in rest["page"]] == ["task 1", "task 2"]
    assert rest["continue_cursor"] == end
    after = page(queryset, 3, end)
    assert [task.text for task in after["page"]] == ["task 3", "task 4", "task 5"]
    assert len(inside) + len(tasks) == len(cut["page"]) + len(rest["page"]) + len(after["page"]) + 1


@pytest.mark.django_db
def test_num_items_is_bounded_by_the_setting(tasks, settings):
    settings.REACTIVE = {**settings.REACTIVE, "PAGINATION_MAX_ITEMS": 3}
    assert len(page(Task.objects.order_by("created"), 3)["page"]) == 3
    with pytest.raises(InvalidArgs) as error:
        page(Task.objects.order_by("created"), 4)
    assert error.value.data == {
        "pagination": {"num_items": ["Ensure this value is less than or equal to 3."]}
    }


# Options


def test_pagination_options_defaults_and_limits():
    options = PaginationOptions(data={"num_items": 5})
    assert options.is_valid()
    assert dict(options.validated_data) == {"num_items": 5, "cursor": None, "end_cursor": None}
    for bad in (
        {"num_items": 0},
        {"num_items": 1001},
        {"num_items": "many"},
        {},
        {"num_items": 1, "cursor": 5},
    ):
        assert not PaginationOptions(data=bad).is_valid(), bad
    assert PaginationOptions(data={"num_items": 1000, "cursor": None, "end_cursor": START_CURSOR}).is_valid()
    assert not PaginationOptions(data={"num_items": 1, "end_cursor": "abc"}).is_valid()


@pytest.mark.django_db
def test_paginate_checks_options_given_as_a_plain_dict(tasks):
    with pytest.raises(InvalidArgs) as error:
        paginate(Task.objects.all(), {"num_items": 0})
    assert "num_items" in error.value.data["pagination"]
    assert len(paginate(Task.objects.all(), {"num_items": 2})["page"]) == 2


# Unsupported querysets


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Task.objects.order_by("?"), "random"),
        (lambda: Task.objects.order_by(Lower("text")), "annotate"),
        (lambda: Task.objects.order_by(Lower("text").desc()), "annotate"),
        (lambda: Channel.objects.order_by("messages__created"), "to-many"),
        (lambda: Channel.objects.order_by("members__username"), "to-many"),
        (lambda: Task.objects.order_by("text__lower"), "transform"),
        (lambda: Task.objects.order_by("created")[:5], "sliced"),
        (lambda: Task.objects.order_by("created").union(Task.objects.all()), "union"),
        (lambda: Message.objects.values("channel").annotate(n=Count("id")).order_by("-n"), "aggregated"),
        (lambda: Task.objects.values("text").distinct().order_by("text"), "distinct"),
        (lambda: Task.objects.extra(select={"x": "1"}, order_by=["x"]), "extra"),
    ],
)
def test_unsupported_querysets_raise_a_clear_error(make, message):
    with pytest.raises(UnsupportedQueryset, match=message):
        page(make(), 3)


def test_relation_ordered_by_the_related_models_meta_ordering_is_refused(monkeypatch):
    # Ordering by a relation follows the related model's Meta.ordering, which a cursor cannot.
    monkeypatch.setattr(User._meta, "ordering", ["username"])
    with pytest.raises(UnsupportedQueryset, match=r"Meta\.ordering"):
        page(Message.objects.order_by("author"), 3)


@pytest.mark.django_db
def test_relation_ordered_by_its_key_when_the_related_model_has_meta_ordering(messages, monkeypatch):
    monkeypatch.setattr(User._meta, "ordering", ["username"])
    queryset = Message.objects.order_by("author_id")
    assert load_all(queryset, 2) == list(queryset.order_by("author_id", "pk"))


# Pages stay gapless while rows come, go and move


ORDERINGS = [
    ("-created", "-id"),
    ("created",),
    ("edited", "-created"),
    ("-body", "created"),
    ("author__username", "-created"),
    ("-author__username",),
    (F("author__username").desc(nulls_last=True), "body"),
]
SHAPES = ["instances", "values", "flat"]


@pytest.mark.django_db
@settings(
    derandomize=True,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_pages_loaded_while_rows_change_cover_everything_once(data):
    with transaction.atomic():
        _check_gapless_pages(data)
        transaction.set_rollback(True)


def _check_gapless_pages(data):
    users = [None, *(User.objects.create(username=f"user{i}") for i in (1, 2))]
    channel = Channel.objects.create(name="general")
    ordering = data.draw(st.sampled_from(ORDERINGS), label="ordering")
    shape = data.draw(st.sampled_from(SHAPES), label="shape")
    row = st.fixed_dictionaries(
        {
            "author": st.sampled_from(users),
            "created": st.integers(0, 3).map(at),  # few values: many ties
            "body": st.sampled_from(["a", "b", "c"]),
            "edited": st.booleans(),
        }
    )

    def insert(values):
        Message.objects.create(channel=channel, **values)

    for values in data.draw(st.lists(row, max_size=12), label="initial rows"):
        insert(values)

    base = Message.objects.filter(channel=channel).order_by(*ordering)
    queryset = {
        "instances": base,
        "values": base.values("id"),
        "flat": base.values_list("pk", flat=True),
    }[shape]

    def pk(item):
        return item if shape == "flat" else item["id"] if shape == "values" else item.pk

    def everything():
        return list(base.order_by(*ordering, "pk").values_list("pk", flat=True))

    def rerun(pages):
        items = []
        for cursor, end_cursor in pages:
            items += [pk(item) for item in page(queryset, 1, cursor, end_cursor)["page"]]
        return items

    def mutate():
        pks = everything()
        for _ in range(data.draw(st.integers(0, 3), label="changes")):
            kind = data.draw(st.sampled_from(["insert", "delete", "update"]), label="change")
            if kind == "insert" or not pks:
                insert(data.draw(row, label="inserted"))
                continue
            target = data.draw(st.sampled_from(pks), label="row")
            if kind == "delete":
                Message.objects.filter(pk=target).delete()
                pks.remove(target)
            else:
                Message.objects.filter(pk=target).update(**data.draw(row, label="new values"))

    pages: list[tuple[str | None, str]] = []  # each loaded page, end_cursor fixed
    cursor = None
    for loads in range(200):
        result = page(queryset, data.draw(st.integers(1, 4), label="num_items"), cursor)
        pages.append((cursor, result["continue_cursor"]))
        cursor = result["continue_cursor"]
        if loads < 8 and data.draw(st.booleans(), label="change rows"):
            mutate()
            # The fixed pages so far still cover a prefix of the result, each row once.
            loaded = rerun(pages)
            assert loaded == everything()[: len(loaded)]
        elif result["is_done"]:
            break
    else:
        raise AssertionError("pagination never finished")

    assert rerun(pages) == everything()
    assert page(queryset, 1, *pages[-1])["is_done"] is True
