import threading

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from tokens.demo import DEMO_KEY, DEMO_REALM, DemoProvider, demo_setup
from tokenserver.netguard import address_refusal


class Command(BaseCommand):
    help = (
        "The offline demo: serve a WeChat-format token provider on 127.0.0.1, set up a "
        f"realm ({DEMO_REALM}), a secret ({DEMO_KEY}) and an app client for it, print how to "
        "fetch a token, then run the development server (unless --no-serve) until Ctrl-C. "
        "The server must be allowed to fetch from loopback: `make demo` starts it with "
        "TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS=127.0.0.1/32."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--provider-port",
            type=int,
            default=8090,
            help="port of the demo provider on 127.0.0.1 (default 8090; 0: any free port)",
        )
        parser.add_argument(
            "--serve",
            default="127.0.0.1:8000",
            metavar="ADDRPORT",
            help="where the development server listens (default 127.0.0.1:8000)",
        )
        parser.add_argument(
            "--no-serve",
            action="store_true",
            help="only the provider and the set-up; for a server you run yourself, started "
            "with TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS=127.0.0.1/32",
        )

    def handle(self, *args, provider_port, serve, no_serve, **options):
        refusal = address_refusal("127.0.0.1")
        if refusal and not no_serve:
            raise CommandError(
                "The demo provider listens on 127.0.0.1, which this server may not fetch from: "
                "start it with TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS=127.0.0.1/32 (in the "
                "environment or .env), as `make demo` does."
            )
        try:
            provider = DemoProvider(provider_port)
        except OSError as error:
            raise CommandError(
                f"The demo provider cannot listen on 127.0.0.1:{provider_port} ({error}); "
                "choose another port with --provider-port."
            ) from None
        with provider:
            client, client_secret = demo_setup(provider.url)
            self.stdout.write(self.walkthrough(provider.url, serve, client, client_secret))
            if no_serve:
                self.stdout.write(
                    "Serving the demo provider until Ctrl-C. The server that fetches from it "
                    "needs TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS=127.0.0.1/32 (environment or "
                    ".env; restart it after setting it)."
                )
                try:
                    threading.Event().wait()
                except KeyboardInterrupt:
                    pass
                return
            call_command("runserver", serve, use_reloader=False, use_threading=True)

    def walkthrough(self, provider_url, serve, client, client_secret):
        base = f"http://{serve}"
        lines = [
            "",
            self.style.SUCCESS("tokenserver demo, offline"),
            f"  provider:  {provider_url} (WeChat's wire format; the README's example app)",
            f"  realm:     {DEMO_REALM}, secret: {DEMO_KEY}",
            f"  client:    {client.name}, scopes {' '.join(client.scopes)}, "
            f"allowed {' '.join(client.allow)}",
            f"  client_id:     {client.client_id}",
            f"  client_secret: {client_secret}   (shown once; run the demo again for a new one)",
            "",
            "An app's first calls (in another shell):",
            f"  CLIENT_ID={client.client_id} CLIENT_SECRET={client_secret}",
            '  ACCESS_TOKEN=$(curl -s -u "$CLIENT_ID:$CLIENT_SECRET" '
            f"-d grant_type=client_credentials {base}/api/auth/token "
            "| python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
            '  curl -H "Authorization: Bearer $ACCESS_TOKEN" '
            f"'{base}/api/token?realm={DEMO_REALM}&key={DEMO_KEY}'",
            "",
            "The README's walkthrough works against this provider too: in its realm, use "
            f'"url": "{provider_url}".',
            f"The console: {base}/admin/ (a user: manage.py createsuperuser).",
        ]
        return "\n".join(lines) + "\n\n"
