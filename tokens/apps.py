from django.apps import AppConfig


class TokensConfig(AppConfig):
    name = "tokens"
    verbose_name = "Tokens and fetch log"

    def ready(self):
        from tokens import checks, signals  # noqa: F401 - registers handlers and checks
        from tokens.collectors import TokenFacts
        from tokenserver.metrics import register_collector

        # /metrics: the token facts the database and the cache hold, at scrape time.
        register_collector(TokenFacts())
