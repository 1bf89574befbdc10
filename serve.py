"""
tokenserver's production server: granian (HTTP in Rust, the app in Python
threads over WSGI), chosen by measurement (README, "Benchmark"):

    .venv/bin/python serve.py [--refresher]

`make bench` runs exactly this command; `make serve` runs it with --refresher
(after the migrations): `manage.py refresh_tokens --loop` beside the server, so
tokens are refreshed ahead of time without any app asking; started again if it
dies, stopped with the server (Ctrl-C, SIGTERM). It collects the console's static files
first (manage.py collectstatic), then serves. Knobs, from the environment or .env:

    TOKENSERVER_BIND   address to listen on (default 127.0.0.1:8000; behind a proxy
                       on another host, e.g. 0.0.0.0:8000)
    WEB_CONCURRENCY    worker processes (default: one per core)
    WEB_THREADS        threads per worker running the app (default 4): how many
                       requests a worker serves at once, some of them possibly
                       waiting on a provider
    LOG_LEVEL          granian's own log level, like tokenserver's (default INFO)
    TOKENSERVER_REFRESH_INTERVAL
                       with --refresher: seconds between the refresher's passes
                       (default: refresh_tokens' own, 30)
    PROMETHEUS_MULTIPROC_DIR
                       where the workers (and the refresher) keep their metrics for
                       /metrics to add up (default: a fresh temporary directory per
                       start, removed at exit; when set, emptied at start)

gunicorn.conf.py is the measured alternative (`.venv/bin/gunicorn -c
gunicorn.conf.py tokenserver.wsgi`), with the same knobs.
"""

import argparse
import ctypes
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

# granian's Rust side allocates with jemalloc, which by default keeps freed pages for
# 10 s and purges them only when it allocates again: a worker that served 300
# connections stayed about 6 MiB larger once they had closed. Purging at once and one
# arena (the Rust side runs on one thread) bring it back close to its size before the
# load, at no measurable cost in CPU per request (README, "Benchmark", memory). Set
# before granian is imported, as jemalloc reads it when it starts; the workers, forked
# from this process, inherit it.
os.environ.setdefault("_RJEM_MALLOC_CONF", "narenas:1,dirty_decay_ms:0,muzzy_decay_ms:0")

# The Python side allocates what pymalloc does not (blocks over 512 bytes: query rows,
# response bodies, TLS buffers) with glibc's malloc, which gives every thread that
# allocates at once an arena of its own, up to 8 per core, and keeps their freed pages:
# a worker's request threads, its background refreshes and the database and Redis
# clients' threads left it 3-4 MiB larger after a refresh storm (`make bench`: 81.3
# MiB per worker with glibc's default, 76.9 with two arenas; issue 10's target is 80).
# Two arenas, set here in the process the workers are forked from (mallopt's setting
# is process memory, inherited by a fork; glibc reads MALLOC_ARENA_MAX only at exec).
M_ARENA_MAX = -8
GLIBC_ARENAS = 2

from granian import Granian  # noqa: E402 - after the allocator's configuration
from granian.constants import Interfaces  # noqa: E402
from granian.http import HTTP1Settings  # noqa: E402
from granian.log import LogLevels  # noqa: E402

from tokenserver import metrics_dir  # noqa: E402 - imports neither Django nor prometheus_client
from tokenserver.envfile import read_env_file  # noqa: E402

BASE_DIR = Path(__file__).resolve().parent


def bind_address(text):
    """ "host:port" (IPv6 hosts in brackets) → (host, port)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"TOKENSERVER_BIND must be HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def say_which_backends():
    """Which database, cache and lock the workers will use (`manage.py backends`)."""
    subprocess.run(
        [sys.executable, "manage.py", "backends"],
        cwd=BASE_DIR,
        env=metrics_dir.outside_the_server(),
        check=True,
    )


def collect_static_files():
    """
    The console's static files (the admin's CSS and scripts), collected into
    STATIC_ROOT before the workers start, where whitenoise serves them: a fresh
    checkout or a new release is styled without a separate step. About a second;
    files already collected are left alone.
    """
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=BASE_DIR,
        env=metrics_dir.outside_the_server(),
        check=True,
    )


def _die_with_parent():
    """In the refresher, before it runs: SIGTERM when serve.py dies, even by SIGKILL."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Refresher:
    """
    `manage.py refresh_tokens --loop` beside the server: started with it, started
    again (after RESTART_DELAY) if it exits, stopped with it. It runs in a session of
    its own, so a Ctrl-C in the terminal reaches serve.py only, which stops it; it
    also gets SIGTERM if serve.py itself is killed. Several hosts may each run one:
    each refresh is single-flight.
    """

    RESTART_DELAY = 2.0

    def __init__(self, interval: str | None):
        self.command = [sys.executable, "manage.py", "refresh_tokens", "--loop"]
        if interval:
            self.command += ["--interval", interval]
        self.process = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._supervise, name="refresher", daemon=True)

    def _spawn(self):
        return subprocess.Popen(  # noqa: S603 - our own manage.py, with our own arguments
            self.command, cwd=BASE_DIR, start_new_session=True, preexec_fn=_die_with_parent
        )

    def start(self):
        self.process = self._spawn()
        self.thread.start()

    def _supervise(self):
        while True:
            code = self.process.wait()
            metrics_dir.mark_process_dead(self.process.pid)
            if self.stopping.is_set():
                return
            print(
                f"serve.py: the refresher exited with {code}; starting it again",
                file=sys.stderr,
                flush=True,
            )
            if self.stopping.wait(self.RESTART_DELAY):
                return
            self.process = self._spawn()

    def stop(self, timeout=15.0):
        self.stopping.set()
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="tokenserver's production server (granian); knobs in the environment "
        "or .env: TOKENSERVER_BIND, WEB_CONCURRENCY, WEB_THREADS, LOG_LEVEL."
    )
    parser.add_argument(
        "--refresher",
        action="store_true",
        help="also run `manage.py refresh_tokens --loop` beside the server, restarted if it "
        "dies and stopped with the server (interval: TOKENSERVER_REFRESH_INTERVAL)",
    )
    return parser.parse_args(argv)


def limit_malloc_arenas():
    """glibc's malloc arenas capped at GLIBC_ARENAS (see above); a no-op without glibc."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, GLIBC_ARENAS)
    except OSError:
        pass  # not glibc (musl, macOS): nothing to cap


def main(argv=None):
    args = parse_args(argv)
    limit_malloc_arenas()
    # The knobs below may come from .env, like every setting (the environment wins).
    read_env_file()
    host, port = bind_address(os.environ.get("TOKENSERVER_BIND", "127.0.0.1:8000"))
    # Before any worker (or the refresher) starts: every process of this server
    # counts into this directory, and /metrics adds them up (tokenserver.metrics).
    metrics_path, created = metrics_dir.prepare()
    say_which_backends()
    collect_static_files()
    refresher = None
    if args.refresher:
        refresher = Refresher(os.environ.get("TOKENSERVER_REFRESH_INTERVAL"))
        refresher.start()
    try:
        serve(host, port)
    finally:
        if refresher is not None:
            refresher.stop()
        # The workers are gone: drop their live gauges (granian does not say when one
        # exits; a scrape drops those of workers that died meanwhile).
        metrics_dir.reap_dead_processes(metrics_path)
        if created:
            metrics_dir.remove(metrics_path)


def serve(host, port):
    """granian, until SIGTERM or Ctrl-C."""
    workers = int(os.environ.get("WEB_CONCURRENCY", 0)) or multiprocessing.cpu_count()
    threads = int(os.environ.get("WEB_THREADS", 0)) or 4
    level = os.environ.get("LOG_LEVEL", "INFO").lower()
    Granian(
        "tokenserver.wsgi:application",
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        workers=workers,
        blocking_threads=threads,
        websockets=False,
        # A slow client gets 30 s to send its headers; keep-alive connections stay open.
        http1_settings=HTTP1Settings(header_read_timeout=30_000, keep_alive=True),
        log_level=LogLevels(level) if level in LogLevels.__members__ else LogLevels.info,
        # No access log: query strings carry tokens (`rejected=`), and tokenserver
        # logs what it needs itself, with query strings redacted.
        log_access=False,
        # A worker that dies is replaced (as gunicorn does); on SIGTERM, requests in
        # flight get 30 s to finish.
        respawn_failed_workers=True,
        workers_kill_timeout=30,
        working_dir=BASE_DIR,
    ).serve()


if __name__ == "__main__":
    main()
