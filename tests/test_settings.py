"""The REACTIVE settings: defaults, overrides, system checks."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.test import override_settings

from reactive.settings import DEFAULTS, reactive_settings


def test_documented_defaults_apply_when_a_setting_is_absent(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    with override_settings(REACTIVE={}):
        assert reactive_settings.MAX_MESSAGE_BYTES == 1024 * 1024
        assert reactive_settings.MAX_SUBSCRIPTIONS == 1000
        assert reactive_settings.MAX_INFLIGHT_REQUESTS == 100
        assert reactive_settings.MUTATION_RESULT_TTL_HOURS == 24
        assert reactive_settings.BACKEND == "embedded"


def test_override_takes_effect_at_once_and_is_undone():
    with override_settings(REACTIVE={"MAX_SUBSCRIPTIONS": 7}):
        assert reactive_settings.MAX_SUBSCRIPTIONS == 7
    assert reactive_settings.MAX_SUBSCRIPTIONS == 100  # tests/settings.py


def test_redis_url_in_the_environment_selects_the_redis_backend(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    with override_settings(REACTIVE={}):
        assert reactive_settings.BACKEND == "redis"
    with override_settings(REACTIVE={"BACKEND": "embedded"}):
        assert reactive_settings.BACKEND == "embedded"


def test_unknown_setting_name_fails_as_attribute_error():
    with pytest.raises(AttributeError, match="Invalid REACTIVE setting"):
        reactive_settings.NO_SUCH_SETTING  # noqa: B018


def test_system_checks_report_unknown_keys_and_bad_backends(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    with override_settings(REACTIVE={"MAX_SUBSCRIPTONS": 5}):
        ids = {message.id for message in run_checks()}
        assert "reactive.E002" in ids
    with override_settings(REACTIVE={"BACKEND": "memcached"}):
        assert "reactive.E003" in {message.id for message in run_checks()}
    with override_settings(REACTIVE={"BACKEND": "redis"}):
        assert "reactive.E004" in {message.id for message in run_checks()}


def test_system_checks_guard_the_change_log(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    mysql = {"default": {"ENGINE": "django.db.backends.mysql", "NAME": "app"}}
    # (Django warns that a changed DATABASES does not reach open connections: the check reads
    # the setting only.)
    with pytest.warns(UserWarning, match="DATABASES"), override_settings(DATABASES=mysql):
        assert "reactive.E010" in {message.id for message in run_checks()}
    with override_settings(REACTIVE={"IGNORED_TABLES": ["django_session"]}):
        assert "reactive.E011" in {message.id for message in run_checks()}
    second = {**settings.DATABASES, "reports": {"ENGINE": "django.db.backends.sqlite3", "NAME": "reports"}}
    with pytest.warns(UserWarning, match="DATABASES"), override_settings(DATABASES=second):
        warnings = [message for message in run_checks() if message.id == "reactive.W011"]
        assert len(warnings) == 1 and "'reports'" in warnings[0].msg
    redis_layer = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer"}}
    with override_settings(REACTIVE={"BACKEND": "embedded"}, CHANNEL_LAYERS=redis_layer):
        assert "reactive.W010" in {message.id for message in run_checks()}


def test_the_demo_settings_pass_every_check():
    ids = {message.id for message in run_checks() if message.id.startswith("reactive.")}
    assert ids == set()


def test_every_default_is_documented():
    with open("docs/settings.md") as handle:
        documented = handle.read()
    for name in DEFAULTS:
        assert f"`{name}`" in documented, name
