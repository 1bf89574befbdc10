"""WSGI entry point (gunicorn tokenserver.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokenserver.settings")

application = get_wsgi_application()

from tokenserver import metrics  # noqa: E402 - imports DRF, which needs the settings

# A serving worker: counted in tokenserver_processes{kind="web"} while it lives.
metrics.process_started("web")
