from django.apps import AppConfig


class TokensConfig(AppConfig):
    name = "tokens"
    verbose_name = "Tokens and fetch log"

    def ready(self):
        from tokens import chains, checks, signals  # noqa: F401 - registers handlers and checks
        from tokens.collectors import TokenFacts
        from tokens.services import token_get
        from tokenserver.metrics import register_collector

        # /metrics: the token facts the database and the cache hold, at scrape time.
        register_collector(TokenFacts())
        # A chained realm's fetch (in the single flight) asks the token path for its
        # parent's token: the token path calls the single flight, so it is handed over
        # here rather than imported there (tokens.chains).
        chains.connect(token_get)
