from django.core.management.base import BaseCommand, CommandError

from clients.access_tokens import access_token_issue
from clients.services import client_get
from tokenserver.errors import ServiceError


class Command(BaseCommand):
    help = "Issue an access token for a client (for scripts and tests), and print it."

    def add_arguments(self, parser):
        parser.add_argument("client_id")
        parser.add_argument("--ttl", type=int, help="lifetime in seconds (default: the setting)")
        parser.add_argument(
            "--scope",
            action="append",
            default=[],
            metavar="SCOPE",
            help="a subset of the client's scopes, repeatable (default: all of them)",
        )

    def handle(self, *args, client_id, ttl, scope, **options):
        try:
            client = client_get(client_id)
        except ServiceError as error:
            raise CommandError(error.detail) from None
        if not client.enabled:
            raise CommandError(f"Client {client_id} is disabled.")
        if ttl is not None and ttl < 1:
            raise CommandError("--ttl must be at least 1.")
        scopes = [part for value in scope for part in value.replace(",", " ").split()]
        extra = sorted(set(scopes) - set(client.scopes))
        if extra:
            raise CommandError(f"Client {client_id} does not have scope(s): {', '.join(extra)}.")
        token, claims = access_token_issue(
            client.client_id, scopes or client.scopes, allow=client.allow, ttl=ttl
        )
        self.stdout.write(token)
        self.stderr.write(f"expires in {claims.expires_in()} s; scopes: {' '.join(claims.scopes)}")
