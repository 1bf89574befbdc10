import logging
import time

from django.core.management.base import BaseCommand, CommandError

from clients.access_tokens import revocations_prune
from tokens import quota
from tokens.background import tokens_refresh_due, wait_for_background_refreshes
from tokens.notifications import (
    notifications_prune,
    notifications_resume,
    notifications_send_due,
)

logger = logging.getLogger("tokens.refresher")


class Command(BaseCommand):
    help = (
        "Refresh every enabled secret's token that comes due for refresh before the next run "
        "(each token's due time has its own jitter inside its realm's margin), so apps "
        "normally never wait on an upstream; also drops revocations of access tokens that "
        "have all expired, sends failure notifications left pending (by a process that "
        "stopped, or waiting for a retry) and deletes the daily-budget counts of days long "
        "gone. Chained realms (tickets fetched with an access token) come after their "
        "parents, and are refreshed as well when their parent's token changed. Logs one "
        "line per run."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--loop", action="store_true", help="keep running, one pass every --interval seconds"
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=30.0,
            help="seconds between passes; a pass also refreshes tokens due within it (default 30)",
        )
        parser.add_argument(
            "--workers", type=int, default=4, help="refreshes run in parallel (default 4)"
        )

    def handle(self, *args, loop=False, interval=30.0, workers=4, **options):
        if interval <= 0:
            raise CommandError("--interval must be positive.")
        if workers < 1:
            raise CommandError("--workers must be at least 1.")
        while True:
            started = time.monotonic()
            # Look a little past the next pass so nothing comes due in between.
            report = tokens_refresh_due(lookahead=interval * 1.5, workers=workers)
            # Housekeeping that needs a schedule, and the refresher has one.
            pruned = revocations_prune()
            # Failure notifications left pending (their process stopped, the database
            # did not answer it, or a retry is due): this process's sender thread
            # sends them; a single run (cron) gives each due one a try before it exits.
            if loop:
                notifications_resume()
            else:
                notifications_send_due()
                # Chained tokens refreshed ahead by this pass's refreshes: done before exit.
                wait_for_background_refreshes(timeout=60)
            notifications_prune()
            quota.prune()  # the database counter's rows of days long gone
            logger.info(
                "refresh_tokens: %s, %d expired revocations dropped in %.2f s",
                report,
                pruned,
                time.monotonic() - started,
            )
            if not loop:
                return
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
