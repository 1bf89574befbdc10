"""
URL routes: the API under /api/ (its OpenAPI schema at /api/schema/, its docs at
/api/docs/), the operator console under /admin/, the probes, and a landing page
at / linking them.
"""

from django.contrib import admin
from django.urls import path
from django.views import defaults

from clients.api import AuthTokenView
from realms.api import RealmDetailView, RealmListView
from tokens.api import (
    FetchLogView,
    SecretTokenDetailView,
    SecretTokenListView,
    TestFetchView,
    TokenView,
)
from tokenserver.errors import json_or_default
from tokenserver.health import healthz, readyz
from tokenserver.home import home
from tokenserver.metrics import metrics_view
from tokenserver.openapi import lazy_view

urlpatterns = [
    path("", home, name="home"),
    # Public, like the probes: the description of the API holds no secret. Imported
    # on their first request, not in every worker (tokenserver.openapi).
    path(
        "api/schema/",
        lazy_view("drf_spectacular.views.SpectacularAPIView"),
        name="api-schema",
    ),
    path(
        "api/docs/",
        lazy_view("drf_spectacular.views.SpectacularSwaggerView", url_name="api-schema"),
        name="api-docs",
    ),
    path("api/realm", RealmListView.as_view(), name="realm-list"),
    path("api/realm/<str:realm_id>", RealmDetailView.as_view(), name="realm-detail"),
    path("api/realm/<str:realm_id>/test", TestFetchView.as_view(), name="realm-test"),
    # The secret views with their token's state (tokens.api extends secret_store.api's).
    path("api/secret", SecretTokenListView.as_view(), name="secret-list"),
    path(
        "api/secret/<str:realm_id>/<str:key>",
        SecretTokenDetailView.as_view(),
        name="secret-detail",
    ),
    path("api/token", TokenView.as_view(), name="token"),
    path("api/fetchlog", FetchLogView.as_view(), name="fetchlog"),
    path("api/auth/token", AuthTokenView.as_view(), name="auth-token"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
]

# JSON errors under /api/ even for what never reaches a view.
handler400 = json_or_default(defaults.bad_request, 400, "bad_request", "Bad request.")
handler403 = json_or_default(defaults.permission_denied, 403, "permission_denied", "Forbidden.")
handler404 = json_or_default(defaults.page_not_found, 404, "not_found", "No such endpoint.")
handler500 = json_or_default(defaults.server_error, 500, "server_error", "Internal error.")
