"""WSGI entry point (gunicorn tokenserver.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokenserver.settings")

application = get_wsgi_application()
