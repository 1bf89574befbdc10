"""
Issue 13, the API description: the OpenAPI schema at /api/schema/ is generated
from the views without a warning (so nothing is left undescribed), is public,
describes every API route with its parameters, answers, errors and
authentication, and carries the seed's requests; the landing page at / links
the console, the docs, the schema and the probes.

The live conformance of the answers to the schema is tests/test_schemathesis.py.
"""

import json
import re
import subprocess
import sys

import pytest
import requests
import yaml
from django.conf import settings
from django.core.management import call_command
from django.urls import get_resolver

from clients.access_tokens import access_token_issue
from clients.scopes import SCOPES
from clients.services import client_create
from tests.helpers import child_env, production_server

pytestmark = pytest.mark.django_db

METHODS = {"get", "post", "put", "patch", "delete"}
#: Routes under /api/ that are not the API itself.
NOT_THE_API = {"/api/schema/", "/api/docs/"}


@pytest.fixture
def schema(anonymous_api):
    response = anonymous_api.get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def test_the_schema_is_generated_without_a_warning(tmp_path):
    # --fail-on-warn: a view, parameter or answer drf-spectacular cannot describe fails here.
    target = tmp_path / "openapi.yaml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))

    assert yaml.safe_load(target.read_text())["openapi"].startswith("3.")


def test_the_schema_and_the_docs_are_public(anonymous_api):
    yaml_schema = anonymous_api.get("/api/schema/")
    docs = anonymous_api.get("/api/docs/")

    assert yaml_schema.status_code == 200
    assert yaml.safe_load(yaml_schema.content)["info"]["title"] == "tokenserver API"
    assert docs.status_code == 200 and b"swagger-ui" in docs.content


def test_every_api_route_is_described(schema):
    routes = set()
    for pattern in get_resolver().url_patterns:
        route = "/" + str(pattern.pattern)
        if route.startswith("/api/") and route not in NOT_THE_API:
            routes.add(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route))

    assert routes == set(schema["paths"])


def test_every_operation_names_its_authentication_and_scope(schema):
    for path, method, operation in operations(schema):
        security = operation["security"]
        if path == "/api/auth/token":
            assert security == [{}]  # the exchange itself: credentials in the request
            continue
        schemes = {name: scopes for requirement in security for name, scopes in requirement.items()}
        assert set(schemes) == {"client", "staff", "console"}, (path, method)
        assert len(schemes["client"]) == 1 and schemes["client"][0] in SCOPES, (path, method)

    client_scheme = schema["components"]["securitySchemes"]["client"]
    flow = client_scheme["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == "/api/auth/token"
    assert set(flow["scopes"]) == set(SCOPES)
    assert schema["components"]["securitySchemes"]["staff"]["scheme"] == "basic"


def test_every_operation_describes_its_errors_in_the_error_shape(schema):
    error = schema["components"]["schemas"]["Error"]
    assert {"error", "detail"} <= set(error["required"])
    assert {"fields", "error_description"} <= set(error["properties"])

    for path, method, operation in operations(schema):
        answers = operation["responses"]
        errors = {int(status) for status in answers if int(status) >= 400}
        expected = {400, 401, 429} if path == "/api/auth/token" else {401, 403, 429}
        assert expected <= errors, (path, method, errors)
        for status in errors - {414}:  # 414: the HTTP server's own answer, no body
            content = answers[str(status)]["content"]["application/json"]["schema"]
            assert content == {"$ref": "#/components/schemas/Error"}, (path, method, status)
        if "requestBody" in operation:
            assert {400, 415} <= errors, (path, method)


def test_the_token_endpoint_describes_the_seed_request_and_the_ways_to_report(schema):
    get = schema["paths"]["/api/token"]["get"]
    post = schema["paths"]["/api/token"]["post"]
    query = {p["name"] for p in get["parameters"] if p["in"] == "query"}
    headers = {p["name"] for p in get["parameters"] if p["in"] == "header"}

    assert query == {"realm", "key", "flush", "rejected"}
    assert headers == {"X-Rejected-Token"}
    assert {p["name"] for p in post["parameters"]} == {"X-Rejected-Token"}
    assert set(post["requestBody"]["content"]) >= {
        "application/json",
        "application/x-www-form-urlencoded",
    }
    token = schema["components"]["schemas"]["Token"]
    assert set(token["required"]) == {"token", "expires_in", "source"}
    assert {404, 502, 503} <= {int(status) for status in get["responses"]}


def test_the_seeds_realm_and_secret_requests_are_the_examples(schema):
    realm_post = schema["paths"]["/api/realm"]["post"]["requestBody"]["content"]
    secret_post = schema["paths"]["/api/secret"]["post"]["requestBody"]["content"]
    realm_examples = [e["value"] for e in realm_post["application/json"]["examples"].values()]
    secret_examples = [e["value"] for e in secret_post["application/json"]["examples"].values()]

    assert {example["id"] for example in realm_examples} == {"qywx_qynbkf", "wxgzh"}
    assert secret_examples[0]["key"] == "wxgzh_secret"
    # The seed's envelopes are described: {"data": …, "success": "ok"}, lists with total.
    components = schema["components"]["schemas"]
    assert set(components["RealmPage"]["properties"]) == {"data", "success"}
    assert set(components["RealmPageData"]["properties"]) == {"list", "total"}
    assert set(components["SecretSaved"]["properties"]) == {"data", "success"}
    assert "token_state" in components["Secret"]["required"]


@pytest.mark.django_db(transaction=True)
def test_the_docs_page_works_offline_under_the_production_server(tmp_path):
    # DEBUG off, static files collected by serve.py and served by whitenoise: every
    # script and stylesheet the page loads comes from tokenserver itself, no CDN.
    with production_server([sys.executable, "serve.py"], tmp_path) as server:
        html = requests.get(f"{server.base}/api/docs/", timeout=10)
        assets = re.findall(r'(?:href|src)="([^"]+\.(?:js|css|png))"', html.text)
        answers = {asset: requests.get(f"{server.base}{asset}", timeout=10) for asset in assets}
        schema = requests.get(f"{server.base}/api/schema/", timeout=10)

    assert html.status_code == 200
    assert assets and all(asset.startswith("/static/") for asset in assets), assets
    assert not re.search(r'(?:href|src)="(?:https?:)?//', html.text)
    assert {asset: answer.status_code for asset, answer in answers.items()} == dict.fromkeys(
        assets, 200
    )
    assert schema.status_code == 200


# --- Loaded when asked for, not in every worker (issue 10, issue 13) -------------------

#: What drf-spectacular's generator brings along: ~2.3 MiB a worker never needs
#: unless it serves the schema (issue 10: RSS ≤ 80 MiB per worker).
SCHEMA_MACHINERY = (
    "drf_spectacular.plumbing",
    "rest_framework.test",
    "django.test",
    "unittest",
    # rest_framework.compat probes for these when installed (tokenserver.lean_imports);
    # only drf-spectacular needs them, for the schema.
    "yaml",
    "uritemplate",
)

# Run in a fresh interpreter, as a production worker starts: the WSGI entry point, the
# URLconf, a token request (the hot path), then the schema and the docs. Prints what
# of SCHEMA_MACHINERY was loaded after each step, and the answers.
WORKER_PROBE = """
import io, json, sys

from tokenserver.wsgi import application
import tokenserver.urls  # noqa: F401

MACHINERY = %r


def loaded():
    return sorted(name for name in MACHINERY if name in sys.modules)


def get(path, query="", **headers):
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr,
        **headers,
    }
    status = []
    response = application(environ, lambda line, headers, exc_info=None: status.append(line))
    try:
        body = b"".join(response)
    finally:
        response.close()
    return int(status[0].split()[0]), body.decode()


report = {"started": loaded()}
token = get("/api/token", "realm=wxgzh&key=wxgzh_secret", HTTP_AUTHORIZATION=sys.argv[1])
report["token"] = [token[0], json.loads(token[1])]
report["after_token"] = loaded()
schema = get("/api/schema/", "format=json")
report["schema"] = [schema[0], sorted(json.loads(schema[1])["paths"])]
report["docs"] = get("/api/docs/")[0]
report["after_schema"] = loaded()
# Syntax highlighting for DRF's browsable API, which a worker does not serve.
report["pygments"] = "pygments" in sys.modules
print(json.dumps(report))
"""


@pytest.mark.django_db(transaction=True)
def test_a_worker_loads_the_schema_machinery_only_when_the_schema_is_asked_for(
    wechat_secret, upstream
):
    # Issue 10 / issue 13: drf-spectacular's views and @extend_schema annotations imported
    # its generator (and with it rest_framework.test, django.test, unittest) into every
    # worker at start: RSS over the 80 MiB target. Now the schema routes import their
    # views on first request and the descriptions load with the generator. Later: DRF's
    # compat module imported PyYAML, uritemplate and Pygments into every worker (~2 MiB).
    upstream.reply("/cgi-bin/token", {"access_token": "WX-TOKEN", "expires_in": 7200})
    client, _ = client_create("probe", scopes=["token:read"], allow=["wxgzh/*"])
    token, _ = access_token_issue(client.client_id, client.scopes, allow=client.allow)

    probe = subprocess.run(
        [sys.executable, "-c", WORKER_PROBE % (SCHEMA_MACHINERY,), f"Bearer {token}"],
        cwd=settings.BASE_DIR,
        env=child_env(
            ALLOWED_HOSTS="127.0.0.1", DEBUG="off", TOKENSERVER_HTTPS="off", LOG_LEVEL="WARNING"
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    report = json.loads(probe.stdout.splitlines()[-1])

    status, answer = report["token"]
    assert (status, answer["token"], answer["source"]) == (200, "WX-TOKEN", "upstream")
    assert report["started"] == report["after_token"] == []
    # The schema and its docs still answer, with every route; only now the machinery is in.
    assert report["schema"][0] == 200 and "/api/token" in report["schema"][1]
    assert report["docs"] == 200
    assert report["after_schema"] == sorted(SCHEMA_MACHINERY)
    assert report["pygments"] is False


# --- The landing page -----------------------------------------------------------------


def test_the_landing_page_links_the_console_the_docs_the_schema_and_the_probes(client):
    page = client.get("/")

    assert page.status_code == 200
    links = set(re.findall(r'<a href="([^"?]+)', page.content.decode()))
    assert {"/admin/", "/api/docs/", "/api/schema/", "/healthz", "/readyz"} <= links
    for link in links:
        assert client.get(link).status_code in (200, 302), link  # the console: to its sign-in


def test_the_consoles_view_site_link_leads_to_the_landing_page(console):
    index = console.get("/admin/")

    assert index.status_code == 200
    assert re.search(r'<a href="/">\s*View site\s*</a>', index.content.decode())
