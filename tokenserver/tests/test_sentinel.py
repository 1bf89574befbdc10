"""
REDIS_URL naming Redis Sentinel (issue 13): the form is read into django-redis's
Sentinel support, and a malformed one is refused at start-up. The failover under
a real primary, replica and three Sentinels is in test_scale_out.py.
"""

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from tokenserver.sentinel import parse_sentinel_url, sentinel_cache_options


def manage(command, redis_url):
    """`manage.py <command>` in a fresh process with REDIS_URL set, ignoring the .env."""
    env = {
        **os.environ,
        "TOKENSERVER_ENV_FILE": "",
        "DEBUG": "off",
        "SECRET_KEY": "x" * 50,
        "TOKENSERVER_ENCRYPTION_KEYS": ",".join(settings.TOKENSERVER_ENCRYPTION_KEYS),
        "REDIS_URL": redis_url,
    }
    env.pop("TOKENSERVER_LOCK_BACKEND", None)
    return subprocess.run(
        [sys.executable, "manage.py", command],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database():
    parts = parse_sentinel_url("redis+sentinel://10.0.0.1:26380,10.0.0.2,[::1]:26381/mymaster/3")

    assert parts["sentinels"] == [("10.0.0.1", 26380), ("10.0.0.2", 26379), ("::1", 26381)]
    assert parts["service"] == "mymaster"
    assert parts["db"] == 3
    assert parse_sentinel_url("redis+sentinel://h:1/svc")["db"] == 0


def test_the_cache_goes_through_django_redis_sentinel_support_to_the_primary_only():
    location, options = sentinel_cache_options("redis+sentinel://:s%40cret@h1:1,h2:2/mymaster/2")

    assert location == "redis://:s%40cret@mymaster/2"
    assert options["CONNECTION_FACTORY"] == "django_redis.pool.SentinelConnectionFactory"
    assert options["SENTINELS"] == [("h1", 1), ("h2", 2)]
    # Not SentinelClient: it would read from a replica that may lag the primary.
    assert options["CLIENT_CLASS"] == "django_redis.client.DefaultClient"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel:///mymaster/0", "every Sentinel needs a host"),
        ("redis+sentinel://h:port/mymaster/0", "port must be a number"),
        ("redis+sentinel://h:26379", "service name"),
        ("redis+sentinel://h:26379/", "service name"),
        ("redis+sentinel://h:26379/mymaster/zero", "database must be a number"),
        ("redis+sentinel://h:26379/mymaster/0/extra", "nothing more"),
        ("redis+sentinel://h:26379/MyMaster/0", "lower-case"),
        ("redis+sentinel://h:26379/mymaster/0?ssl=1", "no query string"),
    ],
)
def test_a_malformed_sentinel_url_is_refused(url, why):
    with pytest.raises(ImproperlyConfigured, match=why):
        parse_sentinel_url(url)


def test_a_malformed_sentinel_url_stops_start_up_without_echoing_it():
    result = manage("check", "redis+sentinel://:hunter2@h:26379")

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "the service name" in result.stderr and "redis+sentinel://" in result.stderr
    assert "hunter2" not in result.stderr


def test_backends_names_the_sentinels_never_the_password():
    result = manage(
        "backends", "redis+sentinel://:hunter2@10.0.0.1:26379,10.0.0.2:26379/mymaster/4"
    )

    assert result.returncode == 0, result.stderr
    assert (
        "cache: Redis through Sentinel 10.0.0.1:26379,10.0.0.2:26379, service mymaster, "
        "database 4" in result.stdout
    )
    assert "hunter2" not in result.stdout
