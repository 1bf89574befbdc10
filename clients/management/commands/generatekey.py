from django.core.management.base import BaseCommand

from tokenserver.crypto import generate_key


class Command(BaseCommand):
    help = (
        "Print a new encryption key. Put it first in TOKENSERVER_ENCRYPTION_KEYS (keep the old "
        "ones after it), restart, then run rotatekeys."
    )

    def handle(self, *args, **options):
        self.stdout.write(generate_key())
