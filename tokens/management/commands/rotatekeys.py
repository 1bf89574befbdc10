from django.core.management.base import BaseCommand

from tokens.keys import keys_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret value and cached token under the newest key of "
        "TOKENSERVER_ENCRYPTION_KEYS. Old keys keep decrypting until they are removed; "
        "remove them only after this has run."
    )

    def handle(self, *args, **options):
        counts = keys_rotate()
        self.stdout.write(
            "re-encrypted " + ", ".join(f"{count} {name}" for name, count in counts.items())
        )
