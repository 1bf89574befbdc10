"""
Helpers for tests that involve time, threads and other processes: wait for
a condition (with a deadline, never a fixed sleep), release threads
together, start a child process that is always stopped, pick a free port.
"""

import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from django.conf import settings
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext


def wait_until(condition, timeout=5.0, *, interval=0.01, message=None):
    """
    Call `condition()` until it returns something true, and return that; fail
    (AssertionError) once `timeout` seconds have passed. `message` (a string,
    or a function returning one) says what was awaited.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = message() if callable(message) else message
            name = detail or getattr(condition, "__name__", repr(condition))
            raise AssertionError(f"still not true after {timeout} s: {name}")
        time.sleep(interval)


def queries_of(action) -> tuple[object, int]:
    """What `action()` returns, and how many database queries it made."""
    with CaptureQueriesContext(connection) as queries:
        result = action()
    return result, len(queries)


def run_at_once(count, function):
    """Run `function` in `count` threads released together; return results or exceptions."""
    barrier = threading.Barrier(count)

    def worker(_):
        barrier.wait()
        try:
            return function()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            return exc
        finally:
            connections.close_all()  # this thread's connections

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(worker, range(count)))


def free_port() -> int:
    """A port on 127.0.0.1 that the OS has just handed out (for a child process to bind)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- Child processes ----------------------------------------------------------------------

#: Upstreams in the tests listen on 127.0.0.1, which production refuses by default.
CHILD_ENV = {"TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS": "127.0.0.0/8"}


def database_url() -> str:
    """The test database, as a DATABASE_URL a child process can use."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 3306}"
    return f"mysql://{db['USER']}{password}@{host}/{db['NAME']}"


def child_env(**extra) -> dict:
    """The environment for a tokenserver child process on the test's database, cache and keys."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tokenserver.settings",
        "DATABASE_URL": database_url(),
        "SECRET_KEY": settings.SECRET_KEY,
        "TOKENSERVER_ENCRYPTION_KEYS": ",".join(settings.TOKENSERVER_ENCRYPTION_KEYS),
        "CACHE_KEY_PREFIX": settings.CACHE_KEY_PREFIX,
        "TOKENSERVER_LOCK_BACKEND": settings.TOKENSERVER_LOCK_BACKEND,
        "TOKENSERVER_ENV_FILE": "",
        **CHILD_ENV,
        **extra,
    }
    if settings.REDIS_URL and "REDIS_URL" not in extra:  # a test may name another Redis
        env["REDIS_URL"] = settings.REDIS_URL
    return env


class ChildProcess:
    """
    A process a test starts: a server (then `ready()` tells when it answers)
    or a worker. start() waits for `ready()` within `start_timeout`, failing
    at once if the process exits; stop() terminates it, then kills it (and
    every process it started: it runs in a process group of its own) after a
    short deadline. Use it as a context manager so it is stopped whatever
    happens:

        with ChildProcess([...], ready=lambda: requests.get(url, timeout=1)):
            ...
    """

    STOP_TIMEOUT = 5.0

    def __init__(self, args, *, ready=None, env=None, cwd=None, log=None, start_timeout=30.0):
        self.args = [str(arg) for arg in args]
        self.ready = ready
        self.env = env
        self.cwd = cwd or settings.BASE_DIR
        self.log_path = Path(log) if log else None
        self.start_timeout = start_timeout
        self.process = None
        self._log = None

    @property
    def pid(self):
        return self.process.pid

    def start(self):
        if self.log_path:
            self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends its children too
        )
        if self.ready is not None:
            try:
                wait_until(
                    self._answers,
                    self.start_timeout,
                    interval=0.05,
                    message=lambda: f"{self.args[:4]} did not start{self.log_tail()}",
                )
            except BaseException:
                self.stop()
                raise
        return self

    def _answers(self):
        if self.process.poll() is not None:
            raise AssertionError(
                f"{self.args[:4]} exited with {self.process.returncode}{self.log_tail()}"
            )
        try:
            return self.ready() is not False
        except (OSError, requests.RequestException):  # refused, reset, timed out: not yet
            return False

    def log_tail(self, size=2000) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n" + self.log_path.read_text(errors="replace")[-size:]

    def kill(self):
        """SIGKILL, as a crash would; wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self):
        """
        Terminate, then kill after STOP_TIMEOUT; then kill
        whatever it left behind in its process group (a worker that outlived
        its master). Idempotent.
        """
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=self.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.process.wait()
        self._kill_group()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _kill_group(self):
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # the group is gone already

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def production_server(command, tmp_path, **env) -> ChildProcess:
    """
    A production server command (serve.py, gunicorn with its config file) on the test
    database, one worker, DEBUG off, an empty STATIC_ROOT (as on a fresh clone), on a
    free port; ready when /healthz answers 200. `.base` is its URL. Use it with `with`.
    """
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = ChildProcess(
        command,
        env=child_env(
            **{
                "TOKENSERVER_BIND": f"127.0.0.1:{port}",
                "WEB_CONCURRENCY": "1",
                "WEB_THREADS": "2",
                "ALLOWED_HOSTS": "127.0.0.1",
                "DEBUG": "off",
                "TOKENSERVER_HTTPS": "off",
                "LOG_LEVEL": "WARNING",
                "STATIC_ROOT": str(tmp_path / "static"),
                **env,
            }
        ),
        log=tmp_path / "serve.log",
        ready=lambda: requests.get(f"{base}/healthz", timeout=1).status_code == 200,
        start_timeout=60,
    )
    server.base = base
    return server
