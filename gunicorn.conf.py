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
    PROMETHEUS_MULTIPROC_DIR
                       where the workers keep their metrics for /metrics to add up
                       (default: a fresh temporary directory per start, removed at
                       exit; when set, emptied at start)
"""

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

# The checkout, for tokenserver's modules below whatever directory gunicorn starts in.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tokenserver import metrics_dir  # noqa: E402 - imports neither Django nor prometheus_client
from tokenserver.envfile import read_env_file  # noqa: E402

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


#: The metrics directory of this start, and whether on_starting created it.
_metrics = {"path": None, "created": False}


def on_starting(server):
    """
    Collect the console's static files before the workers start (as serve.py does),
    and set up the metrics directory the workers share (tokenserver.metrics_dir):
    the workers are forked from this process after it, so they inherit it.
    """
    _metrics["path"], _metrics["created"] = metrics_dir.prepare()
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=Path(__file__).resolve().parent,
        env=metrics_dir.outside_the_server(),
        check=True,
    )


def child_exit(server, worker):
    """A worker exited: its live gauges go (its counters stay in the sums)."""
    metrics_dir.mark_process_dead(worker.pid)


def on_exit(server):
    if _metrics["created"]:
        metrics_dir.remove(_metrics["path"])
