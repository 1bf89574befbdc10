from django.core.management.base import BaseCommand, CommandError

from clients.access_tokens import InvalidAccessToken, access_token_revoke


class Command(BaseCommand):
    help = "Revoke one access token; every worker refuses it within a second."

    def add_arguments(self, parser):
        parser.add_argument("token")

    def handle(self, *args, token, **options):
        try:
            claims = access_token_revoke(token.strip())
        except InvalidAccessToken as error:
            raise CommandError(f"not a token of this server: {error.reason}") from None
        self.stdout.write(f"revoked token {claims.token_id} of client {claims.client_id}")
