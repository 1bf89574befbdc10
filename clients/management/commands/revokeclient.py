from django.core.management.base import BaseCommand, CommandError

from clients.services import client_revoke
from tokenserver.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Revoke every access token a client holds now (within a second on every worker). "
        "It can get new ones unless it is also disabled (--disable)."
    )

    def add_arguments(self, parser):
        parser.add_argument("client_id")
        parser.add_argument("--disable", action="store_true", help="also disable the client")

    def handle(self, *args, client_id, disable, **options):
        try:
            client = client_revoke(client_id, disable=disable)
        except ServiceError as error:
            raise CommandError(error.detail) from None
        self.stdout.write(
            f"revoked the tokens of {client}" + (", and disabled it" if disable else "")
        )
