import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from clients.scopes import SCOPES
from clients.services import client_create


class Command(BaseCommand):
    help = (
        "Create an API client (an app) and print its client id and secret. The secret is "
        "shown once: only a digest of it is kept."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="what the app is called")
        parser.add_argument(
            "--scope",
            action="append",
            default=[],
            metavar="SCOPE",
            help=f"a right to grant, repeatable ({', '.join(SCOPES)})",
        )
        parser.add_argument(
            "--allow",
            action="append",
            default=[],
            metavar="PATTERN",
            help="realm/key pattern whose tokens it may read, repeatable (e.g. 'wxgzh/*')",
        )
        parser.add_argument("--comment", default="", help="free text for operators")
        parser.add_argument(
            "--json",
            dest="as_json",
            action="store_true",
            help='print {"client_id", "client_secret"} as JSON',
        )

    def handle(self, *args, name, scope, allow, comment, as_json: bool, **options):
        if not scope:
            raise CommandError(f"Grant at least one --scope ({', '.join(SCOPES)}).")
        scopes = [part for value in scope for part in value.replace(",", " ").split()]
        try:
            client, secret = client_create(name, scopes=scopes, allow=allow, comment=comment)
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        if as_json:
            self.stdout.write(json.dumps({"client_id": client.client_id, "client_secret": secret}))
            return
        self.stdout.write(f"client_id:     {client.client_id}")
        self.stdout.write(f"client_secret: {secret}")
        self.stdout.write(f"scopes:        {' '.join(client.scopes)}")
        self.stdout.write(f"allowed:       {' '.join(client.allow) or '(no tokens)'}")
        self.stdout.write("Keep the secret now: it is not stored and cannot be shown again.")
