from django.apps import AppConfig


class TokensConfig(AppConfig):
    name = "tokens"
    verbose_name = "Tokens and fetch log"

    def ready(self):
        from tokens import checks, signals  # noqa: F401 - registers handlers and checks
