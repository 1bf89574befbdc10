"""
gunicorn, the measured alternative to the production server (serve.py, granian;
README, "Benchmark"):

    .venv/bin/gunicorn -c gunicorn.conf.py tokenserver.wsgi

`make bench BENCH_ARGS="--server gunicorn-sync,gunicorn-gthread"` runs it. The
same knobs as serve.py, from the environment or .env:

    TOKENSERVER_BIND   address to listen on (default 127.0.0.1:8000)
    WEB_CONCURRENCY    worker processes (default: 2 per core)
    WEB_THREADS        threads per worker (default 1: sync workers; more: gthread)
    LOG_LEVEL          gunicorn's own log level, like tokenserver's (default INFO)
"""

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokenserver.envfile import read_env_file  # noqa: E402 - after the path

# The knobs below may come from .env, like every setting (the environment wins).
read_env_file()

bind = os.environ.get("TOKENSERVER_BIND", "127.0.0.1:8000")

workers = int(os.environ.get("WEB_CONCURRENCY", 0)) or max(2, multiprocessing.cpu_count() * 2)
threads = int(os.environ.get("WEB_THREADS", 1))
worker_class = "sync" if threads == 1 else "gthread"

# A request may wait on an upstream: the realm's timeout (default 5 s, one
# call's deadline is twice that), retries and backoffs. A sync worker silent
# longer than `timeout` is killed, so it is well above the longest wait.
timeout = 60
graceful_timeout = 30
keepalive = 5

# No access log: query strings carry tokens (`rejected=`) and tokenserver logs
# what it needs itself, with query strings redacted.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "INFO").lower()


def on_starting(server):
    """Collect the console's static files before the workers start (as serve.py does)."""
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=Path(__file__).resolve().parent,
        check=True,
    )
