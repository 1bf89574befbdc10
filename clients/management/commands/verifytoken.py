from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from clients.access_tokens import InvalidAccessToken, access_token_verify


class Command(BaseCommand):
    help = (
        "Say whether an access token is valid, and if not why: malformed, wrong key, "
        "bad signature, expired or revoked. Exits 1 when it is not valid."
    )

    def add_arguments(self, parser):
        parser.add_argument("token")

    def handle(self, *args, token, **options):
        try:
            claims = access_token_verify(token.strip())
        except InvalidAccessToken as error:
            raise CommandError(f"invalid: {error.reason}") from None
        expires = datetime.fromtimestamp(claims.expires_at, tz=UTC).isoformat()
        self.stdout.write(
            f"valid: client {claims.client_id}, scopes {' '.join(claims.scopes) or '-'}, "
            f"expires {expires} (in {claims.expires_in()} s), id {claims.token_id}"
        )
