"""
The console's index page (the dashboard, issue 12) on a big database: how
long it takes and how many queries it makes. Not a unit test: it fills the
database it is given, measures, and cleans up.

    DATABASE_URL=mysql://root@127.0.0.1:3306/tokenserver_console_bench \\
        .venv/bin/python bench/console_bench.py [--secrets 10000] [--fetchlog 1000000]

What it fills (rows named `bench-console-*`): `--realms` realms, `--secrets`
secrets spread over them, a stored token for most (valid, inside the refresh
margin, expired; a tenth never fetched), `--fetchlog` fetch-log rows over the
last 30 days (a twentieth of them errors; the latest row of one secret in
fifty a failure), and a superuser to sign in with. It times each service
function of tokens/dashboard.py and then `GET /admin/` (the median of
`--runs` after one warm-up), and prints the query count.

DATABASE_URL is required (a MySQL database is created when missing). It
refuses a database holding rows that are not its own (realms or fetch-log
rows outside `bench-console-*`): its clean-up deletes by that name. The cache
is local memory (the breaker and backoff flags cost one round trip; this
measures the database). `--keep` leaves the rows for another run, which
then reuses them when the sizes match.
"""

import argparse
import os
import random
import secrets
import statistics
import sys
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from token_bench import ensure_mysql_database  # noqa: E402 - bench/ is not a package

PREFIX = "bench-console-"
USERNAME = "bench-console"
BATCH = 5000


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--realms", type=int, default=20)
    parser.add_argument("--secrets", type=int, default=10_000)
    parser.add_argument("--fetchlog", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5, help="timed page loads (after a warm-up)")
    parser.add_argument("--keep", action="store_true", help="leave the rows for the next run")
    parser.add_argument("--seed", type=int, default=12)
    return parser.parse_args(argv)


def say(text):
    print(text, flush=True)


def foreign_rows():
    """Realm ids and fetch-log realms in this database that are not the benchmark's."""
    from django.db import connection

    from realms.models import Realm
    from tokens.models import FetchLog

    tables = connection.introspection.table_names()
    found = []
    if Realm._meta.db_table in tables:
        found += Realm.objects.exclude(id__startswith=PREFIX).values_list("id", flat=True)[:5]
    if FetchLog._meta.db_table in tables:
        found += (
            FetchLog.objects.exclude(realm__startswith=PREFIX)
            .values_list("realm", flat=True)
            .distinct()[:5]
        )
    return found


def bench_sizes():
    from realms.models import Realm
    from secret_store.models import Secret
    from tokens.models import FetchLog

    return (
        Realm.objects.filter(id__startswith=PREFIX).count(),
        Secret.objects.filter(realm__id__startswith=PREFIX).count(),
        FetchLog.objects.filter(realm__startswith=PREFIX).count(),
    )


def clean_rows():
    """Delete every bench row, the fetch log in id ranges (short transactions)."""
    from django.contrib.auth import get_user_model
    from django.db.models import Max, Min

    from realms.models import Realm
    from secret_store.models import Secret
    from tokens.models import FetchLog, StoredToken

    rows = FetchLog.objects.filter(realm__startswith=PREFIX)
    bounds = rows.aggregate(low=Min("id"), high=Max("id"))
    if bounds["low"] is not None:
        for low in range(bounds["low"], bounds["high"] + 1, 50_000):
            rows.filter(id__gte=low, id__lt=low + 50_000)._raw_delete(rows.db)
    StoredToken.objects.filter(secret__realm__id__startswith=PREFIX).delete()  # noqa: S106
    Secret.objects.filter(realm__id__startswith=PREFIX).only("id", "realm_id", "name").delete()
    Realm.objects.filter(id__startswith=PREFIX).delete()
    get_user_model().objects.filter(username=USERNAME).delete()


def fill(args, now):
    """The bench rows, bulk-created in batches."""
    from django.contrib.auth import get_user_model

    from realms.models import Realm
    from secret_store.models import Secret
    from tokens.models import FetchLog, StoredToken

    rng = random.Random(args.seed)
    realms = Realm.objects.bulk_create(
        Realm(
            id=f"{PREFIX}{number:03d}",
            url="https://api.example.com/token",
            token_path="access_token",  # noqa: S106 - a JSONPath
            expires_in_path="expires_in",
            refresh_margin=rng.choice([120, 300, 600]),
        )
        for number in range(args.realms)
    )
    say(f"  {len(realms)} realms")
    for start in range(0, args.secrets, BATCH):
        Secret.objects.bulk_create(
            Secret(
                realm=realms[number % len(realms)],
                name=f"app{number:06d}",
                key_1=f"wxbench{number:06d}",
                key_2="bench-secret",
            )
            for number in range(start, min(start + BATCH, args.secrets))
        )
    names = list(
        Secret.objects.filter(realm__id__startswith=PREFIX).values_list("id", "realm_id", "name")
    )
    say(f"  {len(names)} secrets")

    tokens = []
    for secret_id, _, _ in names:
        draw = rng.random()
        if draw < 0.1:
            continue  # never fetched
        left = (
            rng.uniform(-3600, -1)
            if draw < 0.2
            else rng.uniform(1, 600)
            if draw < 0.3
            else rng.uniform(600, 7200)
        )
        expires_at = now + timedelta(seconds=left)
        tokens.append(
            StoredToken(
                secret_id=secret_id,
                token=f"bench-{secret_id}",  # noqa: S106
                fetched_at=expires_at - timedelta(seconds=7200),
                expires_at=expires_at,
            )
        )
    StoredToken.objects.bulk_create(tokens, batch_size=BATCH)
    say(f"  {len(tokens)} stored tokens")

    failing = {secret_id for secret_id, _, _ in names if rng.random() < 0.02}
    latest = {}  # (realm, key) → (created_at, secret id): the newest row of each secret
    span = timedelta(days=30).total_seconds()
    made = 0
    began = time.monotonic()
    while made < args.fetchlog:
        batch = []
        for _ in range(min(BATCH, args.fetchlog - made)):
            secret_id, realm, key = names[rng.randrange(len(names))]
            created_at = now - timedelta(seconds=rng.random() * span)
            bad = rng.random() < 0.05
            batch.append(
                FetchLog(
                    realm=realm,
                    key=key,
                    trigger=FetchLog.Trigger.REQUEST,
                    outcome=FetchLog.Outcome.UPSTREAM_ERROR if bad else FetchLog.Outcome.OK,
                    http_status=200,
                    error_code="40013" if bad else "",
                    error_message="invalid appid" if bad else "",
                    duration_ms=rng.randrange(20, 400),
                    lifetime=None if bad else 7200,
                    created_at=created_at,
                )
            )
            if created_at > latest.get((realm, key), (now - timedelta(days=365), 0))[0]:
                latest[(realm, key)] = (created_at, secret_id)
        FetchLog.objects.bulk_create(batch)
        made += len(batch)
        if made % 100_000 == 0:
            say(f"  {made} fetch-log rows ({time.monotonic() - began:.0f} s)")
    # The chosen secrets fail last: a newer failed row after their newest.
    FetchLog.objects.bulk_create(
        (
            FetchLog(
                realm=realm,
                key=key,
                trigger=FetchLog.Trigger.REFRESHER,
                outcome=FetchLog.Outcome.TIMEOUT,
                error_message="upstream did not answer in 2 s",
                created_at=at + timedelta(seconds=1),
            )
            for (realm, key), (at, secret_id) in latest.items()
            if secret_id in failing
        ),
        batch_size=BATCH,
    )
    get_user_model().objects.create_superuser(USERNAME, password=secrets.token_urlsafe(20))


def timed(function):
    began = time.perf_counter()
    result = function()
    return result, time.perf_counter() - began


def measure(args, now):
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from tokens.dashboard import dashboard_summary, fetches_per_hour, needs_attention

    for name, function in [
        ("dashboard_summary", dashboard_summary),
        ("fetches_per_hour", fetches_per_hour),
        ("needs_attention", needs_attention),
    ]:
        function(now)  # warm
        times = [timed(lambda f=function: f(now))[1] for _ in range(args.runs)]
        say(f"  {name:<20} median {statistics.median(times) * 1000:7.1f} ms")
    summary = dashboard_summary(now)
    attention = needs_attention(now)
    say(
        f"  summary: {summary.secrets} secrets; tokens valid {summary.tokens_valid}, "
        f"in margin {summary.tokens_in_margin}, expired {summary.tokens_expired}, never fetched "
        f"{summary.never_fetched}; last 24 h: {summary.fetches} fetches, "
        f"{summary.fetch_errors} errors; failing {attention.failing.total}, expiring soon "
        f"{attention.expiring.total}"
    )

    client = Client()
    client.force_login(get_user_model().objects.get(username=USERNAME))
    client.get("/admin/")  # warm: the session, templates, connections
    times = []
    for _ in range(args.runs):
        with CaptureQueriesContext(connection) as queries:
            response, seconds = timed(lambda: client.get("/admin/"))
        assert response.status_code == 200, response.status_code
        times.append(seconds)
    say(
        f"  GET /admin/            median {statistics.median(times) * 1000:7.1f} ms "
        f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}), "
        f"{len(queries)} queries, {len(response.content) // 1024} KiB"
    )
    slowest = sorted(queries.captured_queries, key=lambda q: -float(q["time"]))[:3]
    for query in slowest:
        say(f"    {float(query['time']) * 1000:6.1f} ms  {query['sql'][:110]}…")


def main(argv=None):
    args = parse_args(argv)
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        raise SystemExit("Give the benchmark a database of its own: DATABASE_URL=mysql://…")
    if database_url.startswith("mysql"):
        ensure_mysql_database(database_url)

    from cryptography.fernet import Fernet

    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "tokenserver.settings",
            "TOKENSERVER_ENV_FILE": "",
            "REDIS_URL": "",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "TOKENSERVER_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "DEBUG": "off",
            "LOG_LEVEL": "WARNING",
            "ALLOWED_HOSTS": "testserver",
            "TOKENSERVER_HTTPS": "off",
        }
    )
    # No collectstatic here: whitenoise's warning about it is noise for a timing.
    warnings.filterwarnings("ignore", message="No directory at")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from secret_store.models import Secret
    from tokens.models import FetchLog, StoredToken

    foreign = foreign_rows()
    if foreign:
        raise SystemExit(
            f"{database_url.split('@')[-1]} holds rows that are not the benchmark's "
            f"({', '.join(foreign)}…): give it a database of its own."
        )
    call_command("migrate", interactive=False, verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT VERSION()" if connection.vendor == "mysql" else "SELECT 1")
        version = cursor.fetchone()[0]
    say(f"database: {connection.vendor} {version}")

    now = datetime.now(UTC)
    realms, secret_count, fetchlog = bench_sizes()
    try:
        reuse = (realms, secret_count) == (args.realms, args.secrets) and fetchlog >= args.fetchlog
        if not reuse:
            clean_rows()
            say("filling:")
            _, seconds = timed(lambda: fill(args, now))
            say(f"  filled in {seconds:.0f} s")
        else:
            say(f"reusing {secret_count} secrets and {fetchlog} fetch-log rows")
        if connection.vendor == "mysql":
            tables = ", ".join(m._meta.db_table for m in (FetchLog, StoredToken, Secret))
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE TABLE {tables}")
                cursor.fetchall()
        say("measuring:")
        measure(args, now)
    finally:
        if not args.keep:
            _, seconds = timed(clean_rows)
            say(f"cleaned up in {seconds:.0f} s")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit("interrupted") from None
