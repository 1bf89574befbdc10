"""
The directory prometheus_client's multi-process mode shares between a
server's processes (PROMETHEUS_MULTIPROC_DIR): every worker writes its
counters to memory-mapped files there, and a scrape, whichever worker answers
it, adds them all up (tokenserver.metrics).

The production entry points (serve.py, gunicorn.conf.py) call `prepare()`
before any worker starts, and before anything in their own process imports
prometheus_client (which decides at import time whether it runs in
multi-process mode). Nothing here imports it or Django, so they can.
"""

import os
import shutil
import tempfile
from pathlib import Path

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

#: prometheus_client's live gauge modes: their files are removed when their process dies.
LIVE_GAUGE_FILES = "gauge_live*_{pid}.db"


def prepare(environ=os.environ) -> tuple[Path, bool]:
    """
    Set up the directory for one server start: PROMETHEUS_MULTIPROC_DIR when the
    operator set it (emptied of the files of an earlier start: counters start again
    at zero with the server), else a fresh temporary directory, set in `environ`
    for the workers. Returns the directory and whether it was created here (and is
    to be removed at exit: `remove`).
    """
    given = environ.get(VARIABLE)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return path, False
    path = Path(tempfile.mkdtemp(prefix="tokenserver-metrics-"))
    environ[VARIABLE] = str(path)
    return path, True


def ensure_exists(environ=os.environ) -> None:
    """
    Create the directory PROMETHEUS_MULTIPROC_DIR names, if it names one: a
    process (a manage.py command run with it set) would otherwise fail to start
    on its first metric, whose file prometheus_client opens there.
    """
    given = environ.get(VARIABLE)
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)


def outside_the_server(environ=os.environ) -> dict:
    """
    The environment for a one-off command a server runs before its workers
    (collectstatic, backends): without the directory, so it writes no files there.
    """
    return {name: value for name, value in environ.items() if name != VARIABLE}


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def mark_process_dead(pid: int, path: str | Path | None = None) -> None:
    """
    A worker has exited: drop its live gauges (what prometheus_client's
    multiprocess.mark_process_dead does; here, so a server's master process need
    not import prometheus_client). Its counters stay: they count what it did.
    """
    path = path or os.environ.get(VARIABLE)
    if not path:
        return
    for live in Path(path).glob(LIVE_GAUGE_FILES.format(pid=pid)):
        live.unlink(missing_ok=True)


def reap_dead_processes(path: str | Path) -> None:
    """
    mark_process_dead for every process that wrote live gauges and is gone: granian
    replaces a dead worker without telling Python, so a scrape looks for itself.
    """
    for live in Path(path).glob(LIVE_GAUGE_FILES.format(pid="*")):
        pid = live.stem.rpartition("_")[2]
        if pid.isdigit() and not _alive(int(pid)):
            live.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process by that number
    return True
