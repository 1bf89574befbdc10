"""WSGI entry point (gunicorn tokenserver.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

from tokenserver.lean_imports import import_drf_without_optional_extras

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokenserver.settings")

# Before the apps load DRF: about 5 MiB less per worker (tokenserver.lean_imports).
import_drf_without_optional_extras()

application = get_wsgi_application()

from tokenserver import metrics  # noqa: E402 - imports DRF, which needs the settings

# A serving worker: counted in tokenserver_processes{kind="web"} while it lives.
metrics.process_started("web")
