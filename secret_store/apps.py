from django.apps import AppConfig


class SecretStoreConfig(AppConfig):
    # The package is secret_store because a top-level package named `secrets`
    # would shadow Python's standard `secrets` module; the label stays.
    name = "secret_store"
    label = "secrets"
    verbose_name = "Secrets (app credentials)"
