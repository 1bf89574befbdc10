from django.apps import AppConfig


class ClientsConfig(AppConfig):
    name = "clients"
    verbose_name = "Clients (apps allowed to call the API)"

    def ready(self):
        from django.db.models.signals import post_delete

        from clients.models import Client

        def revoke_on_delete(sender, instance, **kwargs):
            # Tokens verify without the database: a deleted client's tokens
            # must be revoked, or they would live until they expire.
            from clients.access_tokens import client_revoke_tokens

            client_revoke_tokens(instance.client_id)

        post_delete.connect(revoke_on_delete, sender=Client, weak=False)
