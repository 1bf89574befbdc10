"""
The generated .env lists every setting with its true default (issue 13: "the
generated .env lists every setting, commented, with its default").
"""

import json
import os
import re
import subprocess
import sys

from django.conf import settings

from tokenserver import envfile

# Read by the code but not settings an operator writes in .env.
NOT_SETTINGS = {
    "DJANGO_SETTINGS_MODULE",
    "_RJEM_MALLOC_CONF",  # serve.py's allocator tuning
    "TOKENSERVER_AUTH_FAILURES_PER_MINUTE",  # gone: named only to refuse it at start-up
    "SECRET_KEY",  # generated, written uncommented
    "TOKENSERVER_ENCRYPTION_KEYS",
}
SOURCES = ["tokenserver/settings.py", "serve.py", "gunicorn.conf.py", "tokenserver/metrics_dir.py"]
READ = re.compile(
    r'(?:env\.\w+\(|environ\.get\()\s*"([A-Z][A-Z0-9_]*)"|^VARIABLE = "([A-Z_]+)"', re.M
)


def names_read_by_the_code():
    names = set()
    for source in SOURCES:
        for found in READ.findall((settings.BASE_DIR / source).read_text()):
            names |= {name for name in found if name}
    return names - NOT_SETTINGS


def listed_names():
    return {name for entries in envfile.SETTINGS.values() for name, _, _ in entries}


def test_every_setting_the_code_reads_is_listed_and_nothing_else():
    assert names_read_by_the_code() - listed_names() == set(), "add them to envfile.SETTINGS"
    assert listed_names() - names_read_by_the_code() == set(), "stale entries in envfile.SETTINGS"


def test_a_new_env_file_has_the_keys_and_every_setting_commented(tmp_path):
    path = tmp_path / ".env"
    assert envfile.main([str(path)]) == 0
    text = path.read_text()

    assert re.search(r"^SECRET_KEY=\S{40,}$", text, re.M)
    assert re.search(r"^TOKENSERVER_ENCRYPTION_KEYS=\S{44}$", text, re.M)
    for name in listed_names():
        assert re.search(rf"^# {name}=", text, re.M), name
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    # An existing file is never overwritten (it holds the keys that decrypt the secrets).
    assert envfile.main([str(path)]) == 0
    assert path.read_text() == text


SETTINGS_AS_JSON = """
import json, django
from django.conf import settings
django.setup()
names = [n for n in dir(settings) if n.isupper()]
print(json.dumps({n: getattr(settings, n) for n in names}, default=str, sort_keys=True))
"""


def settings_loaded_from(env_file):
    """Django's settings as a fresh process loads them from `env_file` alone."""
    environment = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "tokenserver.settings"}
    environment["TOKENSERVER_ENV_FILE"] = str(env_file)
    result = subprocess.run(
        [sys.executable, "-c", SETTINGS_AS_JSON],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(result.stdout)
    del loaded["ENV_FILE"]  # which file it read: the one thing meant to differ
    return loaded


def test_the_written_defaults_are_the_real_defaults(tmp_path):
    # Arrange: the file as generated, and the same file with every literal default
    # uncommented (computed defaults, in angle brackets, stay commented).
    commented = tmp_path / "commented.env"
    envfile.main([str(commented)])
    uncommented = tmp_path / "uncommented.env"
    uncommented.write_text(
        re.sub(r"^# ([A-Z][A-Z0-9_]*=[^<\n]*)$", r"\1", commented.read_text(), flags=re.M)
    )
    assert uncommented.read_text().count("\nTOKENSERVER_") > 20

    # Act, assert: the settings come out the same either way.
    assert settings_loaded_from(uncommented) == settings_loaded_from(commented)


def test_serve_reads_the_env_file_too(tmp_path, monkeypatch):
    # serve.py's knobs (TOKENSERVER_BIND, WEB_CONCURRENCY, ...) are read before Django
    # starts: they come from the same .env, and the environment still wins.
    env_file = tmp_path / ".env"
    env_file.write_text("TOKENSERVER_BIND=127.0.0.1:8123\nWEB_THREADS=7\n")
    monkeypatch.setenv("TOKENSERVER_ENV_FILE", str(env_file))
    monkeypatch.delenv("TOKENSERVER_BIND", raising=False)
    monkeypatch.setenv("WEB_THREADS", "2")

    envfile.read_env_file()

    assert os.environ["TOKENSERVER_BIND"] == "127.0.0.1:8123"
    assert os.environ["WEB_THREADS"] == "2"
