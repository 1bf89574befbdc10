"""
The example deployment files under deploy/ (issue 13: the README's deployment
section): they are examples, but they must at least parse, name settings
tokenserver reads, and start files the repository has.

systemd units: `systemd-analyze verify` (with the install path pointed at this
checkout) when it is installed, else parsed as INI. The compose file: `docker
compose config` when Docker's compose plugin is installed, else parsed with PyYAML.
"""

import configparser
import re
import shlex
import shutil
import subprocess

import pytest
import yaml
from django.conf import settings

DEPLOY = settings.BASE_DIR / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
INSTALL_DIR = "/opt/tokenserver"  # where the example units expect the checkout
ENV_FILE = "/etc/tokenserver/env"


def settings_names() -> set[str]:
    """The environment variables tokenserver reads: settings.py's and serve.py's knobs."""
    settings_py = (settings.BASE_DIR / "tokenserver" / "settings.py").read_text()
    serve_py = (settings.BASE_DIR / "serve.py").read_text()
    names = set(re.findall(r'\benv(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]*)"', settings_py))
    names |= set(re.findall(r'os\.environ(?:\.get)?[\[(]\s*"([A-Z][A-Z0-9_]*)"', serve_py))
    return names


def unit(path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def test_the_example_units_and_compose_file_are_there():
    assert {path.name for path in UNITS} == {
        "tokenserver.service",
        "tokenserver-refresher.service",
    }
    assert (DEPLOY / "compose.yaml").is_file()
    for path in [*UNITS, DEPLOY / "compose.yaml", DEPLOY / "Dockerfile"]:
        assert "EXAMPLE" in path.read_text()[:200], f"{path.name} does not say it is an example"


@pytest.mark.parametrize("path", UNITS, ids=lambda path: path.name)
def test_each_unit_starts_files_the_repository_has(path):
    service = unit(path)["Service"]

    for key in ("ExecStartPre", "ExecStart"):
        if key not in service:
            continue
        program, script, *_ = shlex.split(service[key])
        assert program == f"{INSTALL_DIR}/.venv/bin/python", service[key]
        assert script.startswith(f"{INSTALL_DIR}/"), service[key]
        assert (settings.BASE_DIR / script.removeprefix(f"{INSTALL_DIR}/")).is_file(), script
    assert service["WorkingDirectory"] == INSTALL_DIR
    assert service["EnvironmentFile"] == ENV_FILE


def test_the_refresher_unit_runs_the_refresher_loop():
    command = shlex.split(
        unit(DEPLOY / "systemd" / "tokenserver-refresher.service")["Service"]["ExecStart"]
    )

    assert command[1:4] == [f"{INSTALL_DIR}/manage.py", "refresh_tokens", "--loop"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_verifies_the_units(tmp_path):
    # Pointed at this checkout (its .venv) so the commands exist; any complaint fails,
    # warnings (an unknown key, a bad value) included.
    env_file = tmp_path / "env"
    env_file.write_text("DEBUG=off\n")
    copies = []
    for path in UNITS:
        copy = tmp_path / path.name
        text = path.read_text().replace(INSTALL_DIR, str(settings.BASE_DIR))
        copy.write_text(text.replace(ENV_FILE, str(env_file)))
        copies.append(str(copy))

    result = subprocess.run(
        ["systemd-analyze", "verify", *copies], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def compose_config() -> dict:
    """The compose file as Docker reads it (when its compose plugin is there), else PyYAML."""
    path = DEPLOY / "compose.yaml"
    docker = shutil.which("docker")
    if docker:
        plugin = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
        if plugin.returncode == 0:
            env = {
                "TOKENSERVER_DB_PASSWORD": "example",
                "SECRET_KEY": "example",
                "TOKENSERVER_ENCRYPTION_KEYS": "example",
            }
            checked = subprocess.run(
                [docker, "compose", "-f", str(path), "config", "--format", "json"],
                capture_output=True,
                text=True,
                timeout=60,
                env={"PATH": "/usr/bin:/bin:/usr/local/bin", **env},
            )
            assert checked.returncode == 0, checked.stderr
    return yaml.safe_load(path.read_text())


def test_the_compose_file_has_the_app_mariadb_and_redis():
    config = compose_config()

    services = config["services"]
    assert set(services) == {"app", "mariadb", "redis"}
    app = services["app"]
    assert (settings.BASE_DIR / app["build"]["dockerfile"]).is_file()
    assert set(app["depends_on"]) == {"mariadb", "redis"}
    assert app["environment"]["DATABASE_URL"].startswith("mysql://")
    assert "@mariadb:3306/" in app["environment"]["DATABASE_URL"]
    assert app["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert "mariadb" in config["volumes"]


def test_the_compose_file_sets_only_settings_tokenserver_reads():
    app = compose_config()["services"]["app"]

    unknown = set(app["environment"]) - settings_names()

    assert unknown == set()
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "TOKENSERVER_ENCRYPTION_KEYS"} <= set(
        app["environment"]
    )
