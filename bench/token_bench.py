"""
`make bench`: tokenserver's token endpoint under load, on this machine, over
the loopback only, in a few minutes. `python bench/token_bench.py --help`
lists the options (`make bench BENCH_ARGS="..."` passes them).

What it starts (and always stops): the production server configuration (the
README's production command), a simulated upstream speaking WeChat's format
(`{"access_token", "expires_in": 7200}`, with a configurable latency), the
floor (bench/floor.py under gunicorn with 4 sync workers), the refresher
(`manage.py refresh_tokens --loop`), and the load generators wrk and ab
(Debian packages `wrk` and `apache2-utils`, installed with apt-get when
missing). An app calls with a bearer access token, as apps do.

What it measures, in this order:

1. floor: the bare WSGI callable (one Redis GET, the same JSON), with
   `wrk -t2 -c300 -d10s --latency` and `ab -c300 -t5` (no keep-alive);
2. each tokenserver server configuration (--server): the same wrk and ab runs
   on `GET /api/token` for a cached token (the hot path); the ratio
   tokenserver / floor of the same run is the headline; then
   herd: one expired token, 300 concurrent requests: upstream calls (must be 1)
   and their p99;
3. refresh storm (on the first configuration): 1,000 secrets whose tokens all
   enter their refresh margin at once, the refresher running and app traffic
   on top: upstream calls per minute, app requests that waited on an upstream
   call (answered `"source": "upstream"`; must be 0), tokens that expired
   before they were refreshed (must be 0);
4. memory: resident set size of each worker process after its run. Before the
   servers start, the virtualenv's shared libraries are dropped from the page
   cache (`settle_libraries`): a library written minutes ago (a fresh `make
   setup`) sits there in large folios that a process maps whole, which counts
   up to ~2 MiB more of shared, clean pages in every process's RSS (measured:
   cryptography's _rust.abi3.so, +1,988 kB RssFile, identical file) than the
   same library read back from disk, as any later start of a deployment does.

It prints a table and writes bench/results.json.

Database and cache: DATABASE_URL and REDIS_URL from the environment when set
(an empty REDIS_URL means no Redis); otherwise the local MariaDB
(mysql://root@127.0.0.1:3306/tokenserver_bench) and Redis
(redis://127.0.0.1:6379/5) when they answer; otherwise the embedded default
(a temporary SQLite file, local-memory cache), with a note saying so. The
database must be the benchmark's own: it refuses one that holds realms other
than its own `bench-*` ones. It uses fresh encryption keys each run and cleans
up its rows and cache keys when it ends.
"""

import argparse
import fcntl
import hashlib
import http.client
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

#: The README's production command, as `make bench` runs it (paths relative to BASE_DIR).
PRODUCTION_COMMAND = ".venv/bin/python serve.py"
#: The floor: always gunicorn with 4 sync workers, so ratios compare across changes.
FLOOR_WORKERS = 4

DEFAULT_DATABASE_URL = "mysql://root@127.0.0.1:3306/tokenserver_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/5"

REALM_HOT = "bench-hot"
REALM_STORM = "bench-storm"
CLIENT_NAME = "token-bench"
#: Seconds between the storm's start and the moment every token enters its margin.
STORM_LEAD = 5.0

TARGETS = {
    "ratio": 0.6,  # hot path ≥ 0.6 × the floor (wrk and ab)
    "p99_ms": 250.0,  # wrk p99 at concurrency 300
    "rss_mib": 80.0,  # per worker
}

SERVER_HELP = """\
server configurations for tokenserver, comma-separated, each NAME or
NAME:WORKERS or NAME:WORKERSxTHREADS. NAME is one of:
production = the README's production command, `%(production)s` (granian;
workers and threads from WEB_CONCURRENCY / WEB_THREADS in the environment,
else one worker per core x 4 threads); granian = the same serve.py with the
shape given (default: one worker per core x 4 threads); gunicorn-sync =
gunicorn with gunicorn.conf.py and sync workers (default 4, the floor's
shape); gunicorn-gthread = the same config file with gthread workers (default
4x25). The storm runs on the first configuration only."""

# --- Small helpers ----------------------------------------------------------------


def free_port() -> int:
    """A port on 127.0.0.1 the OS has just handed out (for a child process to bind)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def settle_libraries(venv):
    """
    Drop the virtualenv's shared libraries (*.so) from the page cache, so the
    workers map them as read back from disk, not in the large folios that writing
    them left (see the module's docstring, "memory"). Returns how many were
    dropped; a file that cannot be opened is left alone.
    """
    dropped = 0
    for library in Path(venv).rglob("*.so*"):
        try:
            descriptor = os.open(library, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            dropped += 1
        except OSError:
            pass
        finally:
            os.close(descriptor)
    return dropped


def percentile(samples, fraction):
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def rss_mib(pid, field="VmRSS"):
    """A process's resident memory in MiB (`field` VmHWM: its peak so far)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def settled_rss_mib(pids, timeout=10.0):
    """
    The workers' RSS once the load has ended: the connections the load tools opened
    take a moment to close and their buffers to be returned, so this waits until the
    total stops falling (two readings 0.5 s apart within 0.2 MiB), at most `timeout`.
    """
    deadline = time.monotonic() + timeout
    sizes = [rss_mib(pid) or 0 for pid in pids]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = [rss_mib(pid) or 0 for pid in pids]
        if sum(sizes) - sum(now) < 0.2:
            return now
        sizes = now
    return sizes


def children(pid):
    """The processes `pid` started (every thread's children)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return sorted(set(found))


def worker_pids(master_pid):
    """
    The worker processes of a server: the master's children that are Python
    processes (gunicorn's and granian's workers), else the master itself.
    """
    pids = [pid for pid in children(master_pid) if rss_mib(pid)]
    return pids or [master_pid]


def say(text=""):
    print(text, flush=True)


class Child:
    """
    A process the benchmark starts, in a process group of its own, its output
    in a log file; stop() terminates it, then kills its whole group.
    """

    def __init__(self, name, args, *, env, log_dir):
        self.name = name
        self.args = [str(arg) for arg in args]
        self.env = env
        self.log_path = Path(log_dir) / f"{re.sub(r'[^a-z0-9]+', '-', name.lower())}.log"
        self.process = None

    def start(self):
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args,
                cwd=BASE_DIR,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self):
        return self.process.pid

    def running(self):
        return self.process is not None and self.process.poll() is None

    def log_tail(self, size=3000):
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def stop(self, timeout=10.0):
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever it left behind
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()


class Processes:
    """Every process the run starts; stop_all() (in a finally) ends each, newest first."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.started = []

    def start(self, name, args, *, env):
        child = Child(name, args, env=env, log_dir=self.log_dir)
        self.started.append(child)
        return child.start()

    def stop(self, child):
        child.stop()
        if child in self.started:
            self.started.remove(child)

    def stop_all(self):
        while self.started:
            self.started.pop().stop()


def http_get(port, path, headers, timeout=10.0):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_until_serving(child, port, path, headers, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        if not child.running():
            raise SystemExit(f"{child.name} exited at start:\n{child.log_tail()}")
        try:
            return http_get(port, path, headers, timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"{child.name} did not answer within {timeout:.0f} s:\n{child.log_tail()}"
                ) from None
            time.sleep(0.2)


# --- Environment: database, cache, tools --------------------------------------------


#: MySQL's "Too many connections": a previous run's (or CI's) connections the server has
#: not let go of yet. Set-up waits for them rather than aborting the run.
TOO_MANY_CONNECTIONS = 1040
BUSY_SERVER_WAIT = 60.0


def while_server_busy(action, what):
    """
    `action()`, tried again for up to BUSY_SERVER_WAIT seconds while MySQL answers
    "Too many connections"; any other error, or the deadline, is raised.
    """
    import MySQLdb

    deadline = time.monotonic() + BUSY_SERVER_WAIT
    told = False
    while True:
        try:
            return action()
        except MySQLdb.OperationalError as error:
            busy = error.args and error.args[0] == TOO_MANY_CONNECTIONS
            cause = error.__cause__
            if not busy and isinstance(cause, MySQLdb.OperationalError):
                busy = bool(cause.args) and cause.args[0] == TOO_MANY_CONNECTIONS
            if not busy or time.monotonic() > deadline:
                raise
        if not told:
            say(f"NOTE database: too many connections at {what}; waiting for the server")
            told = True
        time.sleep(0.5)


def mysql_connect(url, timeout):
    """A MySQLdb connection to the server of a DATABASE_URL (no database selected)."""
    import MySQLdb

    parts = urlsplit(url)
    return while_server_busy(
        lambda: MySQLdb.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=parts.username or "root",
            password=parts.password or "",
            connect_timeout=timeout,
        ),
        "connect",
    )


def mariadb_answers(url):
    try:
        mysql_connect(url, 2).close()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not there"
        return False


def ensure_mysql_database(url):
    connection = mysql_connect(url, 3)
    name = urlsplit(url).path.lstrip("/").replace("`", "")
    connection.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
    connection.close()


def redis_answers(url):
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2).ping())
    except Exception:  # noqa: BLE001 - any failure means "not there"
        return False


def choose_backends(tmp):
    """DATABASE_URL and REDIS_URL for the run, and notes on where they came from."""
    notes = []
    database_url = os.environ.get("DATABASE_URL")
    if database_url:
        notes.append("database: DATABASE_URL from the environment")
    elif mariadb_answers(DEFAULT_DATABASE_URL):
        database_url = DEFAULT_DATABASE_URL
        notes.append(f"database: the local MariaDB ({DEFAULT_DATABASE_URL})")
    else:
        database_url = f"sqlite:///{tmp}/bench.sqlite3"
        notes.append(
            "NOTE database: no DATABASE_URL and no MariaDB answering at 127.0.0.1:3306 "
            "(root, no password): falling back to the embedded default, a temporary SQLite "
            "file. Production runs on MariaDB/MySQL; these numbers are not production's."
        )
    if database_url.startswith("sqlite") and not notes[-1].startswith("NOTE"):
        notes.append("NOTE database: SQLite; production runs on MariaDB/MySQL.")
    if database_url.startswith("mysql"):
        ensure_mysql_database(database_url)
    if "REDIS_URL" in os.environ:
        redis_url = os.environ["REDIS_URL"]
        notes.append(
            "cache: REDIS_URL from the environment"
            if redis_url
            else "NOTE cache: REDIS_URL is empty in the environment: local-memory cache"
        )
    elif redis_answers(DEFAULT_REDIS_URL):
        redis_url = DEFAULT_REDIS_URL
        notes.append(f"cache: the local Redis ({DEFAULT_REDIS_URL})")
    else:
        redis_url = ""
        notes.append(
            "NOTE cache: no REDIS_URL and no Redis answering at 127.0.0.1:6379: falling back to "
            "the embedded default, a local-memory cache per process and the database lock. "
            "Production runs with Redis; these numbers are not production's. The floor then "
            "reads its document from memory (no Redis GET)."
        )
    return database_url, redis_url, notes


def lock_database(database_url):
    """
    One run at a time per database: a run deletes the rows a previous one left,
    and its refresher refreshes every token in the database, so two runs on one
    database would spoil each other (and two on one machine, each other's
    numbers). MySQL: a named lock held by a connection of its own (across
    hosts); otherwise a lock file for this database on this machine. Returns
    what must stay referenced for the run's duration.
    """
    name = "tokenserver-bench-" + hashlib.sha256(database_url.encode()).hexdigest()[:16]
    busy = (
        "another `make bench` is running on this database "
        f"({database_url.split('@')[-1]}); wait for it, or give this one a database of its own "
        "(DATABASE_URL)"
    )
    if database_url.startswith("mysql"):
        connection = mysql_connect(database_url, 3)
        cursor = connection.cursor()
        cursor.execute("SELECT GET_LOCK(%s, 0)", (name,))
        if cursor.fetchone()[0] != 1:
            connection.close()
            raise SystemExit(busy)
        return connection
    handle = open(Path(tempfile.gettempdir()) / f"{name}.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise SystemExit(busy) from None
    return handle


TOOLS = {"wrk": "wrk", "ab": "apache2-utils"}


def ensure_tools(install):
    missing = sorted({package for tool, package in TOOLS.items() if not shutil.which(tool)})
    if not missing:
        return
    if not install:
        raise SystemExit(
            f"missing load tools: install the Debian packages {' '.join(missing)} "
            "(or run without --no-install)"
        )
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install_cmd = [*sudo, "apt-get", "install", "-y", "-qq", *missing]

    def run(command):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        return done.returncode, (done.stdout + done.stderr).strip()

    say(f"installing the load tools: {' '.join(install_cmd)}")
    status, output = run(install_cmd)
    if status != 0:
        update = [*sudo, "apt-get", "update", "-qq"]
        say(f"  that failed; updating the package lists first: {' '.join(update)}")
        run(update)
        status, output = run(install_cmd)
    still = [tool for tool in TOOLS if not shutil.which(tool)]
    if still:
        raise SystemExit(
            f"could not install {', '.join(still)} (install {' '.join(missing)} yourself):\n"
            f"{output[-2000:]}"
        )


def git_revision():
    git = shutil.which("git")
    if not git:
        return ""

    def run(*args):
        return subprocess.run(
            [git, "-C", str(BASE_DIR), *args],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()

    try:
        dirty = run("status", "--porcelain", "--untracked-files=no")
        return run("rev-parse", "--short", "HEAD") + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""
    try:
        out = subprocess.run(
            [git, "-C", str(BASE_DIR), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        dirty = subprocess.run(
            [git, "-C", str(BASE_DIR), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def readme_check():
    """The README's production line must be the command the bench runs."""
    try:
        text = (BASE_DIR / "README.md").read_text()
    except OSError:
        return "README.md not found"
    if PRODUCTION_COMMAND not in text:
        return f"README.md does not show the production command `{PRODUCTION_COMMAND}`"
    return None


# --- Load tools -------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _wrk_ms(text):
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return round(float(match.group(1)) * _UNITS_MS[match.group(2)], 2) if match else None


def parse_wrk(out):
    """req/s, p50, p99 (ms), non-2xx (wrk: non-2xx-or-3xx), socket errors, requests."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+\w+)", out)
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)\s*$", out, re.M))
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not rps or not total:
        return {"error": out.strip()[-500:] or "wrk printed nothing"}
    socket_errors = dict(
        zip(("connect", "read", "write", "timeout"), map(int, sockets.groups()), strict=True)
        if sockets
        else {}
    )
    return {
        "rps": round(float(rps.group(1)), 1),
        "p50_ms": _wrk_ms(latency.get("50", "")),
        "p99_ms": _wrk_ms(latency.get("99", "")),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(socket_errors.values()),
        "socket_error_kinds": socket_errors,
        "requests": int(total.group(1)),
    }


def parse_ab(out):
    """req/s, p50, p99 (ms, ab's percentile table), non-2xx, socket errors, requests."""
    rps = re.search(r"Requests per second:\s+([\d.]+)", out)
    complete = re.search(r"Complete requests:\s+(\d+)", out)
    failed = re.search(r"\(Connect: (\d+), Receive: (\d+), Length: (\d+), Exceptions: (\d+)\)", out)
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    table = dict(re.findall(r"^\s+(50|99)%\s+(\d+)", out, re.M))
    if not rps or not complete:
        return {"error": out.strip()[-500:] or "ab printed nothing"}
    connect, receive, length, exceptions = map(int, failed.groups()) if failed else (0, 0, 0, 0)
    return {
        "rps": round(float(rps.group(1)), 1),
        "p50_ms": float(table["50"]) if "50" in table else None,
        "p99_ms": float(table["99"]) if "99" in table else None,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": connect + receive + exceptions,
        "socket_error_kinds": {"connect": connect, "receive": receive, "exceptions": exceptions},
        "length_mismatches": length,
        "requests": int(complete.group(1)),
    }


def run_tool(args, timeout):
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, check=False, cwd=BASE_DIR
        )
        return done.stdout + done.stderr
    except subprocess.TimeoutExpired as expired:
        return f"{args[0]} did not finish within {timeout} s\n{expired.stdout or ''}"


def wrk(url, header, args, seconds=None):
    seconds = seconds or args.wrk_seconds
    out = run_tool(
        [
            "wrk",
            f"-t{args.wrk_threads}",
            f"-c{args.connections}",
            f"-d{seconds}s",
            "--latency",
            "-H",
            header,
            url,
        ],
        timeout=seconds + 60,
    )
    return parse_wrk(out)


def ab(url, header, args):
    # -t implies -n 50000; a later -n lifts that cap. -r: count receive errors, go on.
    out = run_tool(
        [
            "ab",
            "-q",
            "-r",
            f"-c{args.connections}",
            f"-t{args.ab_seconds}",
            "-n",
            "1000000",
            "-H",
            header,
            url,
        ],
        timeout=args.ab_seconds + 90,
    )
    return parse_ab(out)


def hot_path(port, header, args):
    url = f"http://127.0.0.1:{port}/api/token?realm={REALM_HOT}&key=hot"
    wrk(url, header, args, seconds=args.warmup_seconds)  # warm every worker up, discarded
    return {"wrk": wrk(url, header, args), "ab": ab(url, header, args)}


# --- Server configurations ---------------------------------------------------------


def parse_servers(text):
    specs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, shape = item.partition(":")
        if name not in ("production", "gunicorn-sync", "gunicorn-gthread", "granian"):
            raise argparse.ArgumentTypeError(f"unknown server configuration {name!r}")
        workers = threads = None
        if shape:
            match = re.fullmatch(r"(\d+)(?:x(\d+))?", shape)
            if not match or int(match.group(1)) < 1:
                raise argparse.ArgumentTypeError(f"{item!r}: expected NAME:WORKERS[xTHREADS]")
            if name == "production":
                raise argparse.ArgumentTypeError(
                    "production takes its shape from serve.py (set WEB_CONCURRENCY / "
                    "WEB_THREADS in the environment instead)"
                )
            workers = int(match.group(1))
            threads = int(match.group(2)) if match.group(2) else None
        specs.append((name, workers, threads))
    if not specs:
        raise argparse.ArgumentTypeError("no server configuration given")
    return specs


def server_command(name, workers, threads, port, env, venv_bin):
    """(label, argv, env) of one tokenserver server configuration."""
    env = {**env, "TOKENSERVER_BIND": f"127.0.0.1:{port}"}
    if name in ("production", "granian"):
        command = [str(venv_bin / "python"), "serve.py"]
        if name == "production":
            shape = [env.get("WEB_CONCURRENCY") or os.cpu_count(), env.get("WEB_THREADS") or 4]
            return f"production (granian {shape[0]}x{shape[1]})", command, env
        workers, threads = workers or os.cpu_count(), threads or 4
        env.update(WEB_CONCURRENCY=str(workers), WEB_THREADS=str(threads))
        return f"granian {workers}x{threads}", command, env
    command = [str(venv_bin / "gunicorn"), "-c", "gunicorn.conf.py", "tokenserver.wsgi"]
    if name == "gunicorn-sync":
        workers = workers or 4
        env.update(WEB_CONCURRENCY=str(workers), WEB_THREADS="1")
        return f"gunicorn-sync {workers}", command, env
    workers, threads = workers or 4, threads or 25
    env.update(WEB_CONCURRENCY=str(workers), WEB_THREADS=str(threads))
    return f"gunicorn-gthread {workers}x{threads}", command, env


# --- Fixtures ----------------------------------------------------------------------


def wechat_realm(realm_id, url, *, margin, max_concurrency):
    from realms.presets import preset_get
    from realms.services import realm_upsert

    data = json.loads(json.dumps(preset_get("wechat_official_account")["realm"]))
    data["config"].update(
        url=url, refresh_margin=margin, max_concurrency=max_concurrency, timeout=5
    )
    data["comment"] = "tokenserver benchmark (bench/token_bench.py); deleted when it ends"
    return realm_upsert(realm_id, data)[0]


def clean_rows():
    """Delete what a benchmark run leaves (this one or an interrupted one), decrypting nothing."""
    from clients.models import Client
    from realms.models import Argument, Realm
    from secret_store.models import Secret
    from tokens.models import FetchLease, FetchLog, StoredToken

    StoredToken.objects.filter(secret__realm__id__startswith="bench-").delete()  # noqa: S106
    Secret.objects.filter(realm__id__startswith="bench-").only("id", "realm_id", "name").delete()
    Argument.objects.filter(realm__id__startswith="bench-").delete()
    Realm.objects.filter(id__startswith="bench-").delete()
    FetchLog.objects.filter(realm__startswith="bench-").delete()
    FetchLease.objects.filter(name__contains="bench-").delete()
    Client.objects.filter(name=CLIENT_NAME).delete()


def clean_cache(redis_url, prefix, floor_key):
    if not redis_url:
        return
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    client.delete(floor_key)
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)


def foreign_realms():
    """Realms in this database that are not the benchmark's (before migrating)."""
    from django.db import connection

    from realms.models import Realm

    if Realm._meta.db_table not in connection.introspection.table_names():
        return []
    return list(Realm.objects.exclude(id__startswith="bench-").values_list("id", flat=True)[:5])


def make_token(number):
    # WeChat's access tokens are about 150 characters.
    return f"{number:08d}_" + secrets.token_urlsafe(120)[:141]


def upstream_route(latency):
    def route(number):
        return 200, {"access_token": make_token(number), "expires_in": 7200}, latency

    return route


def expired_secret(realm, name, appid):
    """A secret whose stored token expired a second ago (nothing caches it yet)."""
    from secret_store.models import Secret
    from tokens.models import StoredToken

    secret = Secret.objects.create(realm=realm, name=name, key_1=appid, key_2="bench-secret")
    now = datetime.now(UTC)
    StoredToken.objects.create(
        secret=secret,
        token="EXPIRED-" + make_token(0),
        fetched_at=now - timedelta(seconds=7201),
        expires_at=now - timedelta(seconds=1),
    )
    return secret


# --- Herd --------------------------------------------------------------------------


def herd(port, header_value, secret, appid, upstream, count):
    """`count` requests at once for one expired token; upstream calls and latencies."""
    before = sum(1 for call in upstream.requests if call["query"].get("appid") == appid)
    path = f"/api/token?realm={secret.realm_id}&key={secret.name}"
    barrier = threading.Barrier(count)
    results = []
    lock = threading.Lock()

    def one():
        try:
            barrier.wait(timeout=30)
        except threading.BrokenBarrierError:
            pass
        started = time.perf_counter()
        try:
            status, body = http_get(port, path, {"Authorization": header_value}, timeout=60)
            source = json.loads(body).get("source") if status == 200 else None
        except (OSError, ValueError):
            status, source = None, None
        with lock:
            results.append((status, time.perf_counter() - started, source))

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    time.sleep(0.5)  # a stray second call would land by now
    calls = sum(1 for call in upstream.requests if call["query"].get("appid") == appid) - before
    latencies = [latency * 1000 for status, latency, _ in results if status is not None]
    return {
        "requests": count,
        "upstream_calls": calls,
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99), 1) if latencies else None,
        "max_ms": round(max(latencies), 1) if latencies else None,
        "non_2xx": sum(1 for status, _, _ in results if status is not None and status != 200),
        "socket_errors": sum(1 for status, _, _ in results if status is None)
        + (count - len(results)),
        "sources": {
            source: sum(1 for _, _, s in results if s == source)
            for source in sorted({s for _, _, s in results if s})
        },
    }


# --- Refresh storm -----------------------------------------------------------------


def storm_fixtures(realm, count):
    """`count` secrets with stored tokens (their times are set when the storm starts)."""
    from secret_store.models import Secret
    from tokens.models import StoredToken

    now = datetime.now(UTC)
    created = Secret.objects.bulk_create(
        Secret(realm=realm, name=f"s{i:05d}", key_1=f"storm-{i:05d}", key_2="bench-secret")
        for i in range(count)
    )
    if created and created[0].pk is None:  # MySQL's bulk_create does not set primary keys
        created = list(Secret.objects.filter(realm=realm).order_by("name"))
    StoredToken.objects.bulk_create(
        StoredToken(
            secret=secret,
            token=make_token(i),
            fetched_at=now,
            expires_at=now + timedelta(seconds=7200),
        )
        for i, secret in enumerate(created)
    )
    return [secret.name for secret in created]


def storm(port, header_value, names, args, upstream, child_env, processes, venv_python):
    """
    Every token enters its margin STORM_LEAD seconds from now; the refresher
    runs, app traffic asks for random secrets of the realm; for
    --storm-seconds. Returns the figures.
    """
    from tokens.models import StoredToken

    margin = args.storm_margin
    started_wall = time.time()
    started = time.monotonic()
    expires_at = started_wall + STORM_LEAD + margin
    StoredToken.objects.filter(secret__realm_id=REALM_STORM).update(
        fetched_at=datetime.fromtimestamp(expires_at - 7200, UTC),
        expires_at=datetime.fromtimestamp(expires_at, UTC),
    )
    refresher = processes.start(
        "refresher",
        [
            venv_python,
            "manage.py",
            "refresh_tokens",
            "--loop",
            "--interval",
            str(args.storm_interval),
        ],
        env={**child_env, "LOG_LEVEL": "INFO"},
    )
    answers = []
    lock = threading.Lock()
    stop = threading.Event()
    clients = max(1, min(32, args.storm_rps // 10 or 1))
    gap = clients / max(1, args.storm_rps)
    # The storm ends once every secret has been refreshed (and the app has asked a
    # few more seconds), or 5 s after the tokens expire, or at --storm-seconds.
    end = started + min(args.storm_seconds, STORM_LEAD + margin + 5)

    def app(seed):
        rng = random.Random(seed)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        next_at = time.monotonic() + rng.random() * gap
        mine = []
        while not stop.is_set():
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            next_at += gap
            name = rng.choice(names)
            t0 = time.perf_counter()
            try:
                connection.request(
                    "GET",
                    f"/api/token?realm={REALM_STORM}&key={name}",
                    headers={"Authorization": header_value},
                )
                response = connection.getresponse()
                body = response.read()
                status = response.status
                source = json.loads(body).get("source") if status == 200 else None
                if response.will_close:
                    connection.close()
            except (OSError, ValueError, http.client.HTTPException):
                connection.close()
                status, source = None, None
            mine.append((time.monotonic() - started, status, source, time.perf_counter() - t0))
        connection.close()
        with lock:
            answers.extend(mine)

    threads = [threading.Thread(target=app, args=(n,), daemon=True) for n in range(clients)]
    all_refreshed = False
    try:
        for thread in threads:
            thread.start()
        while time.monotonic() < end:
            if not refresher.running():
                raise SystemExit(f"the refresher exited:\n{refresher.log_tail()}")
            time.sleep(0.5)
            if not all_refreshed:
                asked = {call["query"].get("appid") for call in list(upstream.requests)}
                if len(asked) >= len(names):
                    all_refreshed = True
                    end = min(end, time.monotonic() + 5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(40)
        processes.stop(refresher)
    elapsed = time.monotonic() - started

    # Upstream calls: when (relative to the start), and the first one per secret.
    calls = [
        (call["at"] - started, call["query"].get("appid", "")) for call in list(upstream.requests)
    ]
    first_call = {}
    for at, appid in sorted(calls):
        first_call.setdefault(appid, at)
    due_from = STORM_LEAD  # every token is inside its margin from here on
    expiry = STORM_LEAD + margin
    refreshed_late = sum(1 for at in first_call.values() if at >= expiry)
    never = len(names) - len(first_call)
    now = datetime.now(UTC)
    still_expired = StoredToken.objects.filter(
        secret__realm_id=REALM_STORM, expires_at__lte=now
    ).count()
    buckets = [0] * (int(elapsed // 10) + 1)
    for at, _ in calls:
        if 0 <= at < elapsed:
            buckets[int(at // 10)] += 1
    spread = sorted(first_call.values())
    waited = sum(1 for _, status, source, _ in answers if source == "upstream")
    slow = sum(1 for *_, latency in answers if latency > args.upstream_latency)
    latencies = [latency * 1000 for *_, latency in answers]
    passes = re.findall(
        r"refresh_tokens: (\d+) tokens checked, (\d+) due, (\d+) refreshed, "
        r"(\d+) failed",
        refresher.log_tail(200000),
    )
    return {
        "secrets": len(names),
        "seconds": round(elapsed, 1),
        "ended": "5 s after every secret was refreshed"
        if all_refreshed
        else "at its time limit, with secrets not refreshed",
        "refresh_margin_s": margin,
        "refresher_interval_s": args.storm_interval,
        "max_concurrency": args.storm_concurrency,
        "enter_margin_at_s": due_from,
        "expire_at_s": expiry,
        "upstream_calls": len(calls),
        "secrets_refreshed": len(first_call),
        "refreshed_more_than_once": len(calls) - len(first_call),
        "upstream_calls_per_minute": round(len(calls) / (elapsed / 60), 1),
        "upstream_calls_per_10s": buckets,
        "busiest_minute_rate": max(buckets, default=0) * 6,
        "refresh_spread_s": [round(spread[0], 1), round(spread[-1], 1)] if spread else None,
        "upstream_max_in_flight": upstream.max_in_flight,
        "app_requests": len(answers),
        "app_waited_on_upstream": waited,
        "app_slower_than_upstream_latency": slow,
        "app_p99_ms": round(percentile(latencies, 0.99), 1) if latencies else None,
        "app_non_2xx": sum(
            1 for _, status, _, _ in answers if status is not None and status != 200
        ),
        "app_503": sum(1 for _, status, _, _ in answers if status == 503),
        "app_socket_errors": sum(1 for _, status, _, _ in answers if status is None),
        "tokens_expired": refreshed_late + never,
        "tokens_expired_at_end": still_expired,
        "refresher_passes": [
            {"checked": int(c), "due": int(d), "refreshed": int(r), "failed": int(f)}
            for c, d, r, f in passes
        ],
    }


# --- Report ------------------------------------------------------------------------


def fmt(value, digits=0):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def row(label, tool, figures, ratio=None):
    if "error" in figures:
        return f"{label:<34} {tool:<4} error: {figures['error'][:200]}"
    return (
        f"{label:<34} {tool:<4} {fmt(figures['rps']):>8} {fmt(figures['p50_ms'], 1):>8} "
        f"{fmt(figures['p99_ms'], 1):>8} {fmt(figures['non_2xx']):>8} "
        f"{fmt(figures['socket_errors']):>9} {fmt(ratio, 2) if ratio is not None else '':>8}"
    )


def ratio(ours, floor):
    if "rps" not in ours or "rps" not in floor or not floor["rps"]:
        return None
    return round(ours["rps"] / floor["rps"], 3)


def checks(results):
    """The issue's targets, each with its measured value and pass/fail."""
    found = []
    for server in results["servers"]:
        name = server["label"]
        for tool in ("wrk", "ab"):
            figures = server["hot_path"].get(tool, {})
            value = server.get(f"ratio_{tool}")
            found.append(
                (
                    f"{name}: {tool} ≥ {TARGETS['ratio']} × floor",
                    value,
                    value is not None and value >= TARGETS["ratio"],
                )
            )
            errors = (figures.get("non_2xx") or 0) + (figures.get("socket_errors") or 0)
            found.append(
                (
                    f"{name}: {tool} 0 non-2xx and socket errors",
                    errors,
                    "error" not in figures and errors == 0,
                )
            )
        p99 = server["hot_path"].get("wrk", {}).get("p99_ms")
        found.append(
            (
                f"{name}: wrk p99 ≤ {TARGETS['p99_ms']:.0f} ms",
                p99,
                p99 is not None and p99 <= TARGETS["p99_ms"],
            )
        )
        if server.get("herd"):
            calls = server["herd"]["upstream_calls"]
            found.append((f"{name}: herd exactly 1 upstream call", calls, calls == 1))
        worst = max(server.get("rss_mib") or [0])
        found.append(
            (
                f"{name}: RSS ≤ {TARGETS['rss_mib']:.0f} MiB per worker",
                worst,
                0 < worst <= TARGETS["rss_mib"],
            )
        )
    if results.get("storm"):
        s = results["storm"]
        found.append(
            (
                "storm: 0 app requests waited on an upstream call",
                s["app_waited_on_upstream"],
                s["app_waited_on_upstream"] == 0,
            )
        )
        found.append(("storm: 0 tokens expired", s["tokens_expired"], s["tokens_expired"] == 0))
        found.append(
            (
                "storm: 0 app non-2xx and socket errors",
                s["app_non_2xx"] + s["app_socket_errors"],
                s["app_non_2xx"] + s["app_socket_errors"] == 0,
            )
        )
        found.append(
            (
                f"storm: upstream in flight ≤ max_concurrency {s['max_concurrency']}",
                s["upstream_max_in_flight"],
                s["upstream_max_in_flight"] <= s["max_concurrency"],
            )
        )
    return [{"target": t, "value": v, "ok": bool(ok)} for t, v, ok in found]


def report(results):
    say()
    say(
        f"tokenserver bench, {results['started_at']} ({results['revision'] or 'no git'}): "
        f"{results['machine']['cores']} cores, {results['backends']['database']} + "
        f"{results['backends']['cache']}, upstream latency "
        f"{results['upstream_latency_s'] * 1000:.0f} ms, {results['connections']} connections"
    )
    for note in results["notes"]:
        if note.startswith("NOTE"):
            say(f"  {note}")
    say()
    say(
        f"{'server':<34} {'tool':<4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} "
        f"{'sock err':>9} {'× floor':>8}"
    )
    floor = results["floor"]
    say(row(floor["label"], "wrk", floor["hot_path"]["wrk"]))
    say(row("", "ab", floor["hot_path"]["ab"]))
    for server in results["servers"]:
        say(row(server["label"], "wrk", server["hot_path"]["wrk"], server.get("ratio_wrk")))
        say(row("", "ab", server["hot_path"]["ab"], server.get("ratio_ab")))
    say()
    for server in results["servers"]:
        h = server.get("herd")
        if h:
            say(
                f"herd ({server['label']}): {h['requests']} requests for an expired token: "
                f"{h['upstream_calls']} upstream call(s), p50 {fmt(h['p50_ms'], 1)} ms, "
                f"p99 {fmt(h['p99_ms'], 1)} ms, {h['non_2xx']} non-2xx, "
                f"{h['socket_errors']} socket errors"
            )
    s = results.get("storm")
    if s:
        spread = s["refresh_spread_s"] or ["-", "-"]
        say(
            f"storm ({s['server']}): {s['secrets']} tokens enter their {s['refresh_margin_s']} s "
            f"margin at +{s['enter_margin_at_s']:.0f} s and expire at +{s['expire_at_s']:.0f} s; "
            f"refresher every {s['refresher_interval_s']} s, max_concurrency "
            f"{s['max_concurrency']}; {s['seconds']} s, ended {s['ended']}"
        )
        say(
            f"  upstream: {s['upstream_calls']} calls ({s['upstream_calls_per_minute']:.0f}/min "
            f"over the run, busiest 10 s at {s['busiest_minute_rate']}/min), per 10 s "
            f"{s['upstream_calls_per_10s']}, first refreshes between +{spread[0]} and "
            f"+{spread[-1]} s, at most {s['upstream_max_in_flight']} in flight, "
            f"{s['refreshed_more_than_once']} refreshed twice"
        )
        say(
            f"  app: {s['app_requests']} requests, {s['app_waited_on_upstream']} waited on an "
            f"upstream call (answered source=upstream), {s['app_slower_than_upstream_latency']} "
            f"took longer than the upstream latency, p99 {fmt(s['app_p99_ms'], 1)} ms, "
            f"{s['app_non_2xx']} non-2xx ({s['app_503']} 503), {s['app_socket_errors']} "
            f"socket errors"
        )
        say(
            f"  tokens expired before their refresh: {s['tokens_expired']} "
            f"(still expired at the end: {s['tokens_expired_at_end']})"
        )
    for server in results["servers"]:
        sizes = server.get("rss_mib") or []
        say(
            f"memory ({server['label']}): {len(sizes)} worker(s), RSS "
            f"{', '.join(fmt(size, 1) for size in sizes)} MiB after the load"
            + (
                f", peak {', '.join(fmt(size, 1) for size in server['peak_rss_mib'])} MiB"
                if server.get("peak_rss_mib")
                else ""
            )
            + (
                "; anonymous (the workers' own) "
                f"{', '.join(fmt(size, 1) for size in server['anon_rss_mib'])} MiB"
                if server.get("anon_rss_mib")
                else ""
            )
            + (
                f" (master {fmt(server['master_rss_mib'], 1)} MiB)"
                if server.get("master_rss_mib")
                else ""
            )
        )
    say()
    failed = [c for c in results["checks"] if not c["ok"]]
    say(f"targets: {len(results['checks']) - len(failed)} of {len(results['checks'])} met")
    for check in results["checks"]:
        value = check["value"]
        shown = fmt(value, 2) if isinstance(value, float) else fmt(value)
        say(f"  {'ok  ' if check['ok'] else 'MISS'} {check['target']}: {shown}")
    if results.get("readme_mismatch"):
        say(f"WARNING: {results['readme_mismatch']}")
    say(f"\n{results['duration_s']:.0f} s; written to {results['output']}")


# --- Main --------------------------------------------------------------------------


class _HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default where it says something (not for flags or empty ones)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, "", True, False, argparse.SUPPRESS) and (
            "%(default)" not in text
        ):
            text += " (default: %(default)s)"
        return text


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=(
            "tokenserver's token endpoint under load (make bench): hot path against the floor, "
            "herd, refresh storm, memory. Loopback only; starts and stops every process it "
            "needs. Uses DATABASE_URL / REDIS_URL when set, else the local MariaDB "
            f"({DEFAULT_DATABASE_URL}) and Redis ({DEFAULT_REDIS_URL}) when they answer, else "
            "SQLite and the local-memory cache (with a note). Installs wrk and apache2-utils "
            "with apt-get when missing. Prints a table and writes --output; about 1.5 minutes "
            "with the defaults."
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--server",
        type=parse_servers,
        default="production",
        metavar="LIST",
        help=SERVER_HELP.replace("%(production)s", PRODUCTION_COMMAND).replace("%", "%%"),
    )
    parser.add_argument(
        "--connections", type=int, default=300, help="concurrent connections of wrk and ab"
    )
    parser.add_argument(
        "--wrk-seconds", type=int, default=10, help="length of each measured wrk run (-d)"
    )
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (-t)")
    parser.add_argument("--ab-seconds", type=int, default=5, help="length of each ab run (-t)")
    parser.add_argument(
        "--warmup-seconds",
        type=int,
        default=2,
        help="a wrk run before each measured one, discarded (every worker warms up)",
    )
    parser.add_argument(
        "--upstream-latency",
        type=float,
        default=0.1,
        help="seconds the simulated upstream takes to answer each token request",
    )
    parser.add_argument(
        "--herd", type=int, default=300, help="concurrent requests for one expired token"
    )
    parser.add_argument(
        "--storm-secrets", type=int, default=1000, help="secrets in the refresh storm"
    )
    parser.add_argument(
        "--storm-seconds",
        type=float,
        default=100.0,
        help="the refresh storm's longest run; at least "
        f"{STORM_LEAD:.0f} s + --storm-margin + 5 s, so every token's expiry falls inside it "
        "(it ends 5 s after every secret has been refreshed, or 5 s after the tokens expire)",
    )
    parser.add_argument(
        "--storm-margin",
        type=int,
        default=90,
        help="the storm realm's refresh_margin in seconds: every token enters it "
        f"{STORM_LEAD:.0f} s into the storm (each comes due between margin and margin/2 "
        "before it expires); with --storm-interval 10, production's schedule (margin 300 s, "
        "refresher every 30 s) run 3.3 times faster",
    )
    parser.add_argument(
        "--storm-interval",
        type=float,
        default=10.0,
        help="the refresher's --interval during the storm (it looks 1.5 intervals ahead)",
    )
    parser.add_argument(
        "--storm-concurrency",
        type=int,
        default=4,
        help="the storm realm's max_concurrency (upstream calls in flight)",
    )
    parser.add_argument(
        "--storm-rps",
        type=int,
        default=200,
        help="app requests per second during the storm, each for a random secret of it",
    )
    parser.add_argument(
        "--skip",
        default="",
        metavar="PARTS",
        help="comma-separated parts to leave out: herd, storm (the floor and the hot path "
        "always run)",
    )
    parser.add_argument(
        "--token-rate",
        default="100000000/min",
        help="TOKENSERVER_TOKEN_RATE for the servers: the per-client limit still runs, but "
        "must not trip",
    )
    parser.add_argument(
        "--no-install",
        dest="install",
        action="store_false",
        help="do not apt-get install wrk / apache2-utils when missing (fail instead)",
    )
    parser.add_argument(
        "--output",
        default=str(Path("bench") / "results.json"),
        help="results file (JSON); a relative path is taken from the repository's root",
    )
    args = parser.parse_args(argv)
    args.output = str(BASE_DIR / args.output)
    args.skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    unknown = args.skip - {"herd", "storm"}
    if unknown:
        parser.error(f"--skip: unknown parts {', '.join(sorted(unknown))}")
    if "storm" not in args.skip and args.storm_seconds < STORM_LEAD + args.storm_margin + 5:
        parser.error(
            f"--storm-seconds must be at least {STORM_LEAD:.0f} + --storm-margin + 5 "
            f"({STORM_LEAD + args.storm_margin + 5:.0f})"
        )
    return args


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    args = parse_args(argv)
    # First, before this process maps any of them (a mapped page is not dropped).
    settled = settle_libraries(Path(sys.executable).parent.parent)
    # A SIGTERM (a CI timeout) unwinds like Ctrl-C, through the finally that stops everything.
    signal.signal(signal.SIGTERM, _interrupted)
    began = time.monotonic()
    started_at = datetime.now(UTC).replace(microsecond=0).isoformat()
    ensure_tools(args.install)
    tmp = tempfile.mkdtemp(prefix="tokenserver-bench-")
    database_url, redis_url, notes = choose_backends(tmp)
    held = lock_database(database_url)  # noqa: F841 - held until the process ends
    for note in notes:
        say(note)
    say(
        f"memory: {settled} shared libraries of the virtualenv dropped from the page cache "
        "first, so RSS counts them as a later start would"
    )

    from cryptography.fernet import Fernet

    prefix = f"tokenserver-bench-{os.getpid()}"
    floor_key = f"{prefix}-floor"
    child_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tokenserver.settings",
        "TOKENSERVER_ENV_FILE": "",  # nothing from a .env: the bench sets what it runs with
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "TOKENSERVER_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "CACHE_KEY_PREFIX": prefix,
        "TOKENSERVER_LOCK_BACKEND": "redis" if redis_url else "database",
        "DEBUG": "off",
        "LOG_LEVEL": "WARNING",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "TOKENSERVER_HTTPS": "off",
        "TOKENSERVER_BEHIND_PROXY": "off",
        "TOKENSERVER_TOKEN_RATE": args.token_rate,
        "TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS": "127.0.0.0/8",
    }
    os.environ.update(child_env)
    venv_bin = Path(sys.executable).parent
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from clients.access_tokens import access_token_issue
    from clients.services import client_create
    from tokens.services import token_get
    from tokens.testing import FakeUpstream

    def prepare_database():
        # Django wraps the driver's errors; while_server_busy looks at the driver's.
        from django.db import OperationalError

        try:
            foreign = foreign_realms()
            if foreign:
                raise SystemExit(
                    f"{database_url.split('@')[-1]} holds realms that are not the benchmark's "
                    f"({', '.join(foreign)}…): the refresher would refresh them. Give the "
                    f"benchmark a database of its own (DATABASE_URL; default "
                    f"{DEFAULT_DATABASE_URL})."
                )
            call_command("migrate", interactive=False, verbosity=0)
        except OperationalError as error:
            connection.close()  # the next try opens a fresh connection
            raise (error.__cause__ or error) from error

    if database_url.startswith("mysql"):
        while_server_busy(prepare_database, "set-up")
    else:
        prepare_database()
    call_command("collectstatic", interactive=False, verbosity=0)
    clean_rows()
    if settings.DATABASES["default"]["ENGINE"].endswith("mysql"):
        with connection.cursor() as cursor:
            cursor.execute("SELECT VERSION()")
            database = f"MariaDB/MySQL {cursor.fetchone()[0].split('-')[0]}"
    else:
        database = "SQLite"

    results = {
        "started_at": started_at,
        "revision": git_revision(),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "backends": {
            "database": database,
            "cache": "Redis" if redis_url else "local-memory",
            "lock": settings.TOKENSERVER_LOCK_BACKEND,
        },
        "notes": notes,
        "production_command": PRODUCTION_COMMAND,
        "readme_mismatch": readme_check(),
        "upstream_latency_s": args.upstream_latency,
        "connections": args.connections,
        "token_rate": args.token_rate,
        "targets": TARGETS,
        "servers": [],
        "output": args.output,
    }
    processes = Processes(tmp)
    upstream = FakeUpstream()
    storm_upstream = FakeUpstream()
    try:
        upstream.reply_with("/cgi-bin/token", upstream_route(args.upstream_latency))
        storm_upstream.reply_with("/cgi-bin/token", upstream_route(args.upstream_latency))
        hot_realm = wechat_realm(
            REALM_HOT, upstream.url("/cgi-bin/token"), margin=300, max_concurrency=4
        )
        from secret_store.models import Secret

        Secret.objects.create(realm=hot_realm, name="hot", key_1="bench-hot", key_2="bench-secret")
        hot = token_get(REALM_HOT, "hot")  # one upstream call: the token the hot path serves

        def new_app():
            """
            An app's bearer credentials: a client of its own for each phase, so the
            per-client rate limit (whose state lives in the cache) starts afresh.
            """
            app, _ = client_create(
                CLIENT_NAME, scopes=["token:read"], allow=["bench-*/*"], comment="make bench"
            )
            access_token, _ = access_token_issue(
                app.client_id, app.scopes, allow=app.allow, ttl=3600
            )
            return f"Bearer {access_token}"

        names = []
        if "storm" not in args.skip:
            storm_realm = wechat_realm(
                REALM_STORM,
                storm_upstream.url("/cgi-bin/token"),
                margin=args.storm_margin,
                max_concurrency=args.storm_concurrency,
            )
            names = storm_fixtures(storm_realm, args.storm_secrets)

        # The floor: bench/floor.py, gunicorn, 4 sync workers.
        document = json.dumps({"token": hot.token, "exp": time.time() + 7200})
        floor_env = {**child_env, "BENCH_FLOOR_KEY": floor_key}
        if redis_url:
            import redis

            redis.Redis.from_url(redis_url).set(floor_key, document, ex=3600)
            floor_env["BENCH_FLOOR_REDIS_URL"] = redis_url
        else:
            floor_env["BENCH_FLOOR_DOCUMENT"] = document
        port = free_port()
        say(f"floor: bench/floor.py on gunicorn, {FLOOR_WORKERS} sync workers, port {port}")
        floor = processes.start(
            "floor",
            [
                venv_bin / "gunicorn",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(FLOOR_WORKERS),
                "--worker-class",
                "sync",
                "--log-level",
                "warning",
                "bench.floor:application",
            ],
            env=floor_env,
        )
        wait_until_serving(floor, port, "/", {})
        results["floor"] = {
            "label": f"floor (gunicorn {FLOOR_WORKERS} sync)",
            "hot_path": hot_path(port, f"Authorization: {new_app()}", args),
            "rss_mib": settled_rss_mib(worker_pids(floor.pid)),
        }
        processes.stop(floor)

        for number, (name, workers, threads) in enumerate(args.server):
            port = free_port()
            label, command, env = server_command(name, workers, threads, port, child_env, venv_bin)
            say(f"{label}: {' '.join(str(part) for part in command)}  (port {port})")
            server = processes.start(label, command, env=env)
            status, body = wait_until_serving(
                server, port, f"/api/token?realm={REALM_HOT}&key=hot", {"Authorization": new_app()}
            )
            if status != 200:
                raise SystemExit(f"{label}: GET /api/token answered {status}: {body[:300]!r}")
            entry = {"name": name, "label": label, "command": command}
            entry["hot_path"] = hot_path(port, f"Authorization: {new_app()}", args)
            for tool in ("wrk", "ab"):
                entry[f"ratio_{tool}"] = ratio(
                    entry["hot_path"][tool], results["floor"]["hot_path"][tool]
                )
            if "herd" not in args.skip:
                appid = f"bench-herd-{number}"
                secret = expired_secret(hot_realm, f"herd-{number}", appid)
                entry["herd"] = herd(port, new_app(), secret, appid, upstream, args.herd)
            if number == 0 and names:
                say(f"storm: {len(names)} secrets, at most {args.storm_seconds:.0f} s")
                results["storm"] = {
                    "server": label,
                    **storm(
                        port,
                        new_app(),
                        names,
                        args,
                        storm_upstream,
                        child_env,
                        processes,
                        str(venv_bin / "python"),
                    ),
                }
            pids = worker_pids(server.pid)
            entry["workers"] = len(pids)
            entry["rss_mib"] = settled_rss_mib(pids)
            entry["peak_rss_mib"] = [rss_mib(pid, "VmHWM") for pid in pids]
            # The workers' own memory (heap, stacks), without the shared file pages.
            entry["anon_rss_mib"] = [rss_mib(pid, "RssAnon") for pid in pids]
            entry["master_rss_mib"] = rss_mib(server.pid) if pids != [server.pid] else None
            results["servers"].append(entry)
            processes.stop(server)
    finally:
        processes.stop_all()
        upstream.close()
        storm_upstream.close()
        try:
            clean_rows()
            clean_cache(redis_url, prefix, floor_key)
        except Exception as error:  # noqa: BLE001 - cleaning up must not hide the real error
            say(f"cleaning up the benchmark's rows failed: {error}")
        shutil.rmtree(tmp, ignore_errors=True)

    results["checks"] = checks(results)
    results["duration_s"] = round(time.monotonic() - began, 1)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    report(results)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt as interrupt:
        say(f"\ninterrupted ({interrupt or 'Ctrl-C'}); every process it started is stopped")
        sys.exit(130)
