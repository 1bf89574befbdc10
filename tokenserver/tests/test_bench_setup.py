"""The benchmark's set-up waits out a busy database server (issue 10, issue 14 session)."""

import importlib.util

import MySQLdb
import pytest
from django.conf import settings

spec = importlib.util.spec_from_file_location(
    "token_bench", settings.BASE_DIR / "bench" / "token_bench.py"
)
token_bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(token_bench)


def test_set_up_waits_while_the_server_has_too_many_connections(monkeypatch):
    # A run started right after another once aborted at set-up with MariaDB's
    # "Too many connections" (1040): the server had not let go of the previous run's
    # connections yet. Set-up now tries again until they are gone.
    monkeypatch.setattr(token_bench.time, "sleep", lambda seconds: None)
    answers = iter([MySQLdb.OperationalError(1040, "Too many connections")] * 3 + ["connected"])

    def connect():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert token_bench.while_server_busy(connect, "connect") == "connected"


def test_set_up_gives_up_on_any_other_database_error_at_once(monkeypatch):
    calls = []

    def connect():
        calls.append(1)
        raise MySQLdb.OperationalError(1045, "Access denied")

    with pytest.raises(MySQLdb.OperationalError):
        token_bench.while_server_busy(connect, "connect")
    assert len(calls) == 1


def test_set_up_gives_up_when_the_server_stays_busy(monkeypatch):
    clock = iter(range(0, 10_000, 10))
    monkeypatch.setattr(token_bench.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(token_bench.time, "sleep", lambda seconds: None)

    def connect():
        raise MySQLdb.OperationalError(1040, "Too many connections")

    with pytest.raises(MySQLdb.OperationalError):
        token_bench.while_server_busy(connect, "connect")


def test_the_virtualenvs_libraries_are_dropped_from_the_page_cache_before_a_run(tmp_path):
    # Issue 14 session: in a freshly made virtualenv each worker's RSS counted ~2 MiB
    # more (cryptography's _rust.abi3.so mapped in the large folios writing it left in
    # the page cache). The bench drops the libraries first; what it cannot open it skips.
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "_native.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\0" * 65536)
    (tmp_path / "lib" / "libfoo.so.1").write_bytes(b"\0" * 4096)
    (tmp_path / "lib" / "module.py").write_text("")
    (tmp_path / "lib" / "dangling.so").symlink_to(tmp_path / "missing")

    assert token_bench.settle_libraries(tmp_path) == 2
