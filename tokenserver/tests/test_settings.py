"""Start-up: configuration errors surface at once, with a clear message."""

import os
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.conf import settings

CHECK = [sys.executable, "manage.py", "check"]


def run_manage(**env_overrides):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SECRET_KEY", "TOKENSERVER_ENCRYPTION_KEYS", "DEBUG")
    }
    env["TOKENSERVER_ENV_FILE"] = ""  # ignore the developer's .env
    env.update(env_overrides)
    return subprocess.run(
        CHECK, cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({}, "SECRET_KEY and TOKENSERVER_ENCRYPTION_KEYS must be set"),
        ({"SECRET_KEY": "x" * 50}, "TOKENSERVER_ENCRYPTION_KEYS must be set"),
        ({"TOKENSERVER_ENCRYPTION_KEYS": Fernet.generate_key().decode()}, "SECRET_KEY must be set"),
    ],
)
def test_start_up_fails_without_keys_when_debug_is_off(given, missing):
    result = run_manage(**given)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert missing in result.stderr


def test_start_up_fails_on_a_malformed_encryption_key():
    result = run_manage(SECRET_KEY="x" * 50, TOKENSERVER_ENCRYPTION_KEYS="not-a-key")

    assert result.returncode != 0
    assert "TOKENSERVER_ENCRYPTION_KEYS entry 1 is not a Fernet key" in result.stderr
    assert "not-a-key" not in result.stderr


def test_starts_with_both_keys():
    result = run_manage(
        SECRET_KEY="x" * 50, TOKENSERVER_ENCRYPTION_KEYS=Fernet.generate_key().decode()
    )

    assert result.returncode == 0, result.stderr


def test_debug_starts_without_keys():
    assert run_manage(DEBUG="on").returncode == 0


def test_redis_lock_without_redis_is_a_system_check_error():
    result = run_manage(
        SECRET_KEY="x" * 50,
        TOKENSERVER_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        TOKENSERVER_LOCK_BACKEND="redis",
        REDIS_URL="",
    )

    assert result.returncode != 0
    assert "tokens.E002" in result.stderr


def test_mysql_uses_utf8mb4_and_persistent_connections():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from django.conf import settings; d = settings.DATABASES['default'];"
            "print(d['OPTIONS']['charset'], d['CONN_MAX_AGE'], d['CONN_HEALTH_CHECKS'])",
        ],
        cwd=settings.BASE_DIR,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tokenserver.settings",
            "DATABASE_URL": "mysql://u:p@db:3306/tokenserver",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.stdout.split() == ["utf8mb4", "60", "True"], result.stderr


def test_check_deploy_is_clean_with_production_settings():
    import secrets

    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR,
        env={
            **{k: v for k, v in os.environ.items() if k not in ("DEBUG",)},
            "TOKENSERVER_ENV_FILE": "",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "TOKENSERVER_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "TOKENSERVER_HTTPS": "on",
            "ALLOWED_HOSTS": "tokens.example.com",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_the_retired_failure_limit_stops_the_start_up_with_its_replacement():
    # Issue 11, item 7: failures are limited per address and username now; an
    # old limit left in the environment must not be ignored without a word.
    result = run_manage(DEBUG="on", TOKENSERVER_AUTH_FAILURES_PER_MINUTE="3")

    assert result.returncode != 0
    assert "TOKENSERVER_AUTH_FAILURE_RATE" in result.stderr


@pytest.mark.parametrize(
    "name", ["TOKENSERVER_AUTH_FAILURE_RATE", "TOKENSERVER_AUTH_FAILURE_ADDRESS_RATE"]
)
def test_a_bad_failure_rate_stops_the_start_up(name):
    result = run_manage(DEBUG="on", **{name: "lots"})

    assert result.returncode != 0
    assert f"{name} is 'lots'" in result.stderr


@pytest.mark.parametrize("lease", ["0", "-5"])
def test_start_up_fails_on_a_lock_lease_that_is_not_positive(lease):
    result = run_manage(DEBUG="on", TOKENSERVER_LOCK_LEASE=lease)

    assert result.returncode != 0
    assert "TOKENSERVER_LOCK_LEASE must be a positive number of seconds" in result.stderr
