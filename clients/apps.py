from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class ClientsConfig(AppConfig):
    name = "clients"
    verbose_name = "Clients (apps allowed to call the API)"
    default = True

    def ready(self):
        from clients import (
            checks,  # noqa: F401 - registers the console access checks
            schema,  # noqa: F401 - registers the API's security schemes
        )


class ConsoleAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with the console's site (sign-ins limited) as `admin.site`."""

    default = False
    default_site = "clients.console.ConsoleSite"
