"""
Benchmark of the token path: `make bench` (or `python bench/token_bench.py --help`).

Runs against a throw-away SQLite database by default (or --database-url), with
the local-memory cache, or Redis when REDIS_URL is set. Measures:

1. in-process `token_get` on a cached token (the hot path without HTTP);
2. `GET /api/token` over HTTP against gunicorn (cache hits), with C client
   threads on keep-alive connections;
3. a cold herd: C concurrent requests for a token nobody has → upstream calls;
4. resident memory of the gunicorn workers afterwards.

All traffic stays on 127.0.0.1 (the upstream is a local fake).
"""

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))


def percentile(samples, fraction):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def summary(name, latencies, elapsed):
    ms = [s * 1000 for s in latencies]
    return (
        f"{name:<38} {len(ms):>7} req  {len(ms) / elapsed:>9.0f} req/s  "
        f"p50 {statistics.median(ms):7.3f} ms  p99 {percentile(ms, 0.99):7.3f} ms  "
        f"max {max(ms):7.2f} ms"
    )


def ensure_mysql_database(url):
    import MySQLdb

    parts = urlsplit(url)
    connection = MySQLdb.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
    )
    name = parts.path.lstrip("/")
    connection.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
    connection.close()


def rss_kib(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def children(pid):
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def http_load(port, path, headers, threads, per_thread):
    """`threads` clients, each sending `per_thread` requests on one keep-alive connection."""
    latencies, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        barrier.wait()
        for _ in range(per_thread):
            started = time.perf_counter()
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            if response.status != 200:
                with lock:
                    errors.append(response.status)
        connection.close()
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=client) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return latencies, time.perf_counter() - started, errors


def main():
    parser = argparse.ArgumentParser(description="Benchmark the token path (see module docstring).")
    parser.add_argument("--database-url", help="default: a temporary SQLite file")
    parser.add_argument("--inprocess", type=int, default=20000, help="in-process cache hits")
    parser.add_argument("--concurrency", type=int, default=16, help="HTTP client threads")
    parser.add_argument("--per-thread", type=int, default=300, help="HTTP requests per thread")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="tokenserver-bench-")
    database_url = args.database_url or f"sqlite:///{tmp}/bench.sqlite3"
    if database_url.startswith("mysql"):
        ensure_mysql_database(database_url)
    os.environ.update(
        {
            "DATABASE_URL": database_url,
            "CACHE_KEY_PREFIX": f"tokenserver-bench-{os.getpid()}",
            "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "tokenserver.settings",
            # The fake upstream listens on the loopback.
            "TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS": "127.0.0.0/8",
        }
    )
    for command in (["migrate"], ["collectstatic"]):
        subprocess.run(
            [sys.executable, "manage.py", *command, "--noinput", "--verbosity", "0"],
            cwd=BASE_DIR,
            check=True,
        )

    import django

    django.setup()
    from django.conf import settings
    from django.utils import timezone

    from clients.access_tokens import access_token_issue
    from clients.services import client_create
    from realms.models import Argument, Realm
    from secret_store.models import Secret
    from tokens.models import FetchLog
    from tokens.services import token_get
    from tokens.testing import FakeUpstream, gunicorn_command, numbered_tokens

    upstream = FakeUpstream()
    upstream.reply_with("/token", numbered_tokens(delay=0.2))
    realm, _ = Realm.objects.update_or_create(
        id="bench", defaults={"url": upstream.url("/token"), "timeout": 5}
    )
    Argument.objects.get_or_create(realm=realm, name="appid", place="url", value="$key_1")
    for name in ("hot", "cold"):
        Secret.objects.filter(realm=realm, name=name).delete()
        Secret.objects.create(realm=realm, name=name, key_1="bench-app-id")
    # An app's bearer access token, as apps call it (verified without a query).
    app, _ = client_create("bench", scopes=["token:read", "realm:read"], allow=["bench/*"])
    access_token, _ = access_token_issue(app.client_id, app.scopes, allow=app.allow, ttl=3600)
    headers = {"Authorization": f"Bearer {access_token}"}

    print(
        f"tokenserver bench: database {settings.DATABASES['default']['ENGINE'].split('.')[-1]}, "
        f"cache {'redis' if settings.REDIS_URL else 'local-memory'}, "
        f"lock {settings.TOKENSERVER_LOCK_BACKEND}, {os.cpu_count()} cores"
    )

    # 1. In-process hot path.
    token_get("bench", "hot")
    latencies = []
    started = time.perf_counter()
    for _ in range(args.inprocess):
        t0 = time.perf_counter()
        token_get("bench", "hot")
        latencies.append(time.perf_counter() - t0)
    print(summary("token_get, cached (in-process)", latencies, time.perf_counter() - started))

    # 2. Over HTTP against gunicorn.
    port = 18000 + os.getpid() % 1000
    env = {
        **os.environ,
        "ALLOWED_HOSTS": "127.0.0.1",
        "TOKENSERVER_ENV_FILE": str(BASE_DIR / ".env"),
    }
    server = subprocess.Popen(
        [
            *gunicorn_command(port, workers=args.workers, threads=args.threads),
            "--log-level",
            "warning",
        ],
        cwd=BASE_DIR,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                probe.request("GET", "/api/realm/bench", headers=headers)
                probe.getresponse().read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("gunicorn did not start") from None
                time.sleep(0.2)
        http_load(port, "/api/token?realm=bench&key=hot", headers, args.concurrency, 20)  # warm-up
        latencies, elapsed, errors = http_load(
            port, "/api/token?realm=bench&key=hot", headers, args.concurrency, args.per_thread
        )
        print(
            summary(
                f"GET /api/token, cached, bearer ({args.concurrency} clients)", latencies, elapsed
            )
        )
        if errors:
            print(f"  errors: {len(errors)} (statuses {sorted(set(errors))})")

        # 3. Cold herd.
        calls_before = len(upstream.calls("/token"))
        herd_started = timezone.now()
        latencies, elapsed, errors = http_load(
            port, "/api/token?realm=bench&key=cold", headers, 100, 1
        )
        calls = len(upstream.calls("/token")) - calls_before
        print(summary("cold herd, 100 concurrent requests", latencies, elapsed))
        logged = FetchLog.objects.filter(
            realm="bench", key="cold", outcome="ok", created_at__gte=herd_started
        ).count()
        print(
            f"  upstream calls for the herd: {calls}  (fetch log ok rows: {logged}, "
            f"errors: {len(errors)})"
        )

        # 4. Memory.
        workers = children(server.pid)
        sizes = [rss_kib(pid) for pid in workers]
        if sizes:
            print(
                f"gunicorn worker RSS: {', '.join(f'{s / 1024:.1f}' for s in sizes)} MiB "
                f"(master {rss_kib(server.pid) / 1024:.1f} MiB)"
            )
    finally:
        server.terminate()
        server.wait(timeout=10)
        upstream.close()


if __name__ == "__main__":
    main()
