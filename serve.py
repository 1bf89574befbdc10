"""
tokenserver's production server: granian (HTTP in Rust, the app in Python
threads over WSGI), chosen by measurement (README, "Benchmark"):

    .venv/bin/python serve.py

`make bench` runs exactly this command. It collects the console's static files
first (manage.py collectstatic), then serves. Knobs, from the environment:

    TOKENSERVER_BIND   address to listen on (default 127.0.0.1:8000; behind a proxy
                       on another host, e.g. 0.0.0.0:8000)
    WEB_CONCURRENCY    worker processes (default: one per core)
    WEB_THREADS        threads per worker running the app (default 4): how many
                       requests a worker serves at once, some of them possibly
                       waiting on a provider
    LOG_LEVEL          granian's own log level, like tokenserver's (default INFO)

gunicorn.conf.py is the measured alternative (`.venv/bin/gunicorn -c
gunicorn.conf.py tokenserver.wsgi`), with the same knobs.
"""

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

# granian's Rust side allocates with jemalloc, which by default keeps freed pages for
# 10 s and purges them only when it allocates again: a worker that served 300
# connections stayed about 6 MiB larger once they had closed. Purging at once and one
# arena (the Rust side runs on one thread) bring it back close to its size before the
# load, at no measurable cost in CPU per request (README, "Benchmark", memory). Set
# before granian is imported, as jemalloc reads it when it starts; the workers, forked
# from this process, inherit it.
os.environ.setdefault("_RJEM_MALLOC_CONF", "narenas:1,dirty_decay_ms:0,muzzy_decay_ms:0")

from granian import Granian  # noqa: E402 - after the allocator's configuration
from granian.constants import Interfaces  # noqa: E402
from granian.http import HTTP1Settings  # noqa: E402
from granian.log import LogLevels  # noqa: E402

BASE_DIR = Path(__file__).resolve().parent


def bind_address(text):
    """ "host:port" (IPv6 hosts in brackets) → (host, port)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"TOKENSERVER_BIND must be HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


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
        check=True,
    )


def main():
    host, port = bind_address(os.environ.get("TOKENSERVER_BIND", "127.0.0.1:8000"))
    collect_static_files()
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
