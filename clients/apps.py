from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class ClientsConfig(AppConfig):
    name = "clients"
    verbose_name = "Clients (apps allowed to call the API)"
    default = True

    def ready(self):
        # Not clients.schema: the OpenAPI descriptions load only when a schema is
        # generated (tokens.schema.load_descriptions; tokenserver/openapi.py says why).
        from clients import checks  # noqa: F401 - registers the console access checks


class ConsoleAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with the console's site (sign-ins limited) as `admin.site`."""

    default = False
    default_site = "clients.console.ConsoleSite"
