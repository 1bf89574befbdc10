import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from tokens.models import FetchLog

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if not match:
        raise CommandError(
            f"--older-than takes a number and a unit (s, m, h, d, w), e.g. 90d; got {text!r}."
        )
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


class Command(BaseCommand):
    help = "Delete FetchLog rows older than an age (e.g. --older-than 90d), in batches."

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than", required=True, help="age such as 90d, 12h, 2w (units s, m, h, d, w)"
        )
        parser.add_argument(
            "--batch-size", type=int, default=5000, help="rows deleted per statement (default 5000)"
        )

    def handle(self, *args, older_than, batch_size, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        deleted = FetchLog.objects.prune(parse_age(older_than), batch_size=batch_size)
        self.stdout.write(f"prune_fetchlog: deleted {deleted} rows older than {older_than}")
