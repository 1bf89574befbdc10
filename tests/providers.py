"""
Fakes of the catalogue's token providers (issue 14, item 6), one per preset:
each speaks its provider's wire format on a real local HTTP server (a
tokens.testing.FakeUpstream route) and checks what the real provider requires
of a request (method, path, query, body, HTTP Basic credentials, headers). A
request it would refuse is refused the provider's way, naming what is wrong, so a
preset that sends the wrong thing fails its test.

A fake answers in one of three modes: "ok" (a token), "credentials" (the
provider's answer to a wrong secret) and "rate_limited" (its answer to too
many calls). The wire formats are the providers' documented ones; docs/presets.md
lists what could not be verified.

FAKES maps each preset's name to the fake's class; realms/tests/test_catalogue.py
runs every preset file against its fake, so a new preset file needs a fake here.
"""

import base64
import json
import time
from functools import lru_cache
from urllib.parse import parse_qs, urlsplit, urlunsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from realms.presets import is_chained, preset_get, realm_from_preset
from secret_store.services import secret_upsert

MODES = ("ok", "credentials", "rate_limited")

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@lru_cache(maxsize=1)
def private_key():
    """One RSA key for the JWT presets' fakes (generated once: it costs a fraction of a second)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_key_pem() -> str:
    return (
        private_key()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


class Request:
    """One request the fake received (a FakeUpstream record), with the readers a provider uses."""

    def __init__(self, record: dict):
        self.method = record["method"]
        self.path = record["path"]
        self.query = record["query"]
        self.headers = {name.lower(): value for name, value in record["headers"].items()}
        self.body = record["body"]

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def form(self) -> dict:
        pairs = parse_qs(self.body.decode(), keep_blank_values=True)
        return {name: values[0] if len(values) == 1 else values for name, values in pairs.items()}

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def basic(self) -> tuple[str, str] | None:
        header = self.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user, password


def differences(what: str, actual, expected: dict) -> list[str]:
    """What is wrong with `actual` (a dict of parameters) against exactly `expected`."""
    if not isinstance(actual, dict):
        return [f"{what} is not an object: {actual!r}"]
    problems = [
        f"{what} {name}={actual.get(name)!r}, expected {value!r}"
        for name, value in expected.items()
        if actual.get(name) != value or type(actual.get(name)) is not type(value)
    ]
    extra = sorted(set(actual) - set(expected))
    if extra:
        problems.append(f"{what} has unexpected {', '.join(extra)}")
    return problems


class ProviderFake:
    """
    A provider's token endpoint. Subclasses say what the secret's values are
    (`values`), what a request must look like (`problems`), and how the
    provider answers: a token (`grant`), a wrong secret (`credential_error`), too
    many calls (`rate_limited`), a malformed request (`refuse`).
    """

    #: The secret's values the test sets (key_1 … key_5).
    values: dict = {}
    #: The HTTP method the provider takes.
    method = "POST"

    def __init__(self):
        self.mode = "ok"
        self.delay = 0.0  # seconds before a token is granted (a slow provider)
        self.issued = []  # every token granted, in order
        self.received = []  # every Request, in order

    def install(self, upstream, path: str, mode: str = "ok") -> None:
        """Answer `path` on `upstream` (where the preset's URL now points) in `mode`."""
        assert mode in MODES
        self.upstream, self.path, self.mode = upstream, path, mode
        self.url = upstream.url(path)
        upstream.reply_with(path, self._answer)

    def _answer(self, number):
        request = Request(self.upstream.requests[number - 1])
        self.received.append(request)
        problems = self.problems(request)
        if request.method != self.method:
            problems.insert(0, f"method {request.method}, expected {self.method}")
        if problems:
            return self.refuse("; ".join(problems))
        if self.mode == "credentials":
            return self.credential_error()
        if self.mode == "rate_limited":
            return self.rate_limited()
        status, payload, _ = self.grant(request)
        return status, payload, self.delay

    def new_token(self, prefix="TOKEN") -> str:
        token = f"{prefix}-{len(self.issued) + 1}"
        self.issued.append(token)
        return token

    def request_problems(self) -> list[str]:
        """What was wrong with each request received (empty: all were what the provider takes)."""
        problems = []
        for request in self.received:
            problems += self.problems(request)
            if request.method != self.method:
                problems.append(f"method {request.method}, expected {self.method}")
        return problems

    # What subclasses define.
    def problems(self, request: Request) -> list[str]:
        raise NotImplementedError

    def grant(self, request: Request):
        raise NotImplementedError

    def credential_error(self):
        raise NotImplementedError

    def rate_limited(self):
        raise NotImplementedError

    def refuse(self, why: str):
        raise NotImplementedError


# --- WeChat: errors inside HTTP 200 as errcode/errmsg ------------------------------------

APPID, APPSECRET = "wx1234567890abcdef", "0123456789abcdef0123456789abcdef"


class WeChatFake(ProviderFake):
    values = {"key_1": APPID, "key_2": APPSECRET}

    def credential_error(self):
        return 200, {"errcode": 40125, "errmsg": "invalid appsecret rid: 6650b3f2-1a2b3c4d"}, 0

    def rate_limited(self):
        return 200, {"errcode": 45009, "errmsg": "reach max api daily quota limit rid: 6650b"}, 0

    def refuse(self, why):
        return 200, {"errcode": 47001, "errmsg": f"data format error: {why}"}, 0


class WeChatClassicFake(WeChatFake):
    """GET cgi-bin/token?grant_type=client_credential&appid=…&secret=…: a new token per call."""

    method = "GET"

    def problems(self, request):
        expected = {"grant_type": "client_credential", "appid": APPID, "secret": APPSECRET}
        problems = differences("query", request.query, expected)
        if request.body:
            problems.append("a GET with a body")
        return problems

    def grant(self, request):
        return 200, {"access_token": self.new_token("ACCESS_TOKEN"), "expires_in": 7200}, 0


class WeChatStableFake(WeChatFake):
    """
    POST cgi-bin/stable_token with a JSON body; force_refresh must be a JSON boolean
    (WeChat refuses "false" as a string). The same token for force_refresh false while
    it lives; a new one (the previous one invalidated) for true. `forced` records the
    force_refresh of each request, in order.
    """

    def __init__(self):
        super().__init__()
        self.forced = []
        self.current = None

    def problems(self, request):
        problems = []
        if request.content_type != "application/json":
            problems.append(f"content type {request.content_type!r}, expected application/json")
        body = request.json()
        if not isinstance(body, dict):
            return [*problems, "the body is not a JSON object"]
        force = body.get("force_refresh", False)
        if not isinstance(force, bool):
            problems.append(f"force_refresh is {force!r}, not a JSON boolean")
        expected = {"grant_type": "client_credential", "appid": APPID, "secret": APPSECRET}
        rest = {name: value for name, value in body.items() if name != "force_refresh"}
        problems += differences("body", rest, expected)
        if request.query:
            problems.append(f"a query string {request.query}")
        return problems

    def grant(self, request):
        force = request.json().get("force_refresh", False)
        self.forced.append(force)
        if force or self.current is None:
            self.current = self.new_token("STABLE")
        return 200, {"access_token": self.current, "expires_in": 7200}, 0


# --- WeCom ------------------------------------------------------------------------------


class WeComFake(ProviderFake):
    """GET cgi-bin/gettoken?corpid=…&corpsecret=…; errcode 0 on success too."""

    method = "GET"
    values = {"key_1": "ww0123456789abcdef", "key_2": "corpsecret-0123456789"}

    def problems(self, request):
        expected = {"corpid": self.values["key_1"], "corpsecret": self.values["key_2"]}
        return differences("query", request.query, expected)

    def grant(self, request):
        token = self.new_token("WECOM")
        return 200, {"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200}, 0

    def credential_error(self):
        return 200, {"errcode": 40001, "errmsg": "invalid credential, hint: [1700000000_1_a]"}, 0

    def rate_limited(self):
        return 200, {"errcode": 45009, "errmsg": "api freq out of limit, hint: [1700_2_b]"}, 0

    def refuse(self, why):
        return 200, {"errcode": 41004, "errmsg": f"corpsecret missing: {why}"}, 0


# --- Feishu and Lark ----------------------------------------------------------------------


class FeishuFake(ProviderFake):
    """
    POST auth/v3/<kind>_access_token/internal, JSON {app_id, app_secret}; answers
    code/msg, the token and `expire`. The app token's answer carries a tenant token
    too (the preset must read the right one). The frequency limit is code 99991400,
    HTTP 400 on these older APIs, with x-ogw-ratelimit-reset.
    """

    values = {"key_1": "cli_a1b2c3d4e5f6", "key_2": "feishu-app-secret-0123"}
    kind = "tenant"

    def problems(self, request):
        problems = []
        if request.content_type != "application/json":
            problems.append(f"content type {request.content_type!r}, expected application/json")
        expected = {"app_id": self.values["key_1"], "app_secret": self.values["key_2"]}
        return problems + differences("body", request.json(), expected)

    def grant(self, request):
        answer = {"code": 0, "msg": "ok", "expire": 7200}
        answer[f"{self.kind}_access_token"] = self.new_token(f"t-{self.kind}")
        if self.kind == "app":
            answer["tenant_access_token"] = "t-not-the-app-token"
        return 200, answer, 0

    def credential_error(self):
        return 400, {"code": 10014, "msg": "app secret invalid"}, 0

    def rate_limited(self):
        headers = {"x-ogw-ratelimit-limit": "50", "x-ogw-ratelimit-reset": "1"}
        return 400, {"code": 99991400, "msg": "request trigger frequency limit"}, 0, headers

    def refuse(self, why):
        return 400, {"code": 10003, "msg": f"invalid param: {why}"}, 0


class FeishuAppFake(FeishuFake):
    kind = "app"


# --- DingTalk --------------------------------------------------------------------------


class DingTalkFake(ProviderFake):
    """
    POST v1.0/oauth2/accessToken, JSON {appKey, appSecret} → {accessToken, expireIn};
    errors as HTTP 4xx {code, message, requestid}; the QPS limit as HTTP 403
    Forbidden.AccessDenied.QpsLimitForAppkeyAndApi.
    """

    values = {"key_1": "dingappkey0123", "key_2": "dingappsecret-0123456789"}

    def problems(self, request):
        problems = []
        if request.content_type != "application/json":
            problems.append(f"content type {request.content_type!r}, expected application/json")
        expected = {"appKey": self.values["key_1"], "appSecret": self.values["key_2"]}
        return problems + differences("body", request.json(), expected)

    def grant(self, request):
        return 200, {"accessToken": self.new_token("ding"), "expireIn": 7200}, 0

    def credential_error(self):
        body = {
            "code": "invalidClientIdOrSecret",
            "message": "无效的clientId或者clientSecret",
            "requestid": "0A1B2C3D",
        }
        return 400, body, 0

    def rate_limited(self):
        body = {
            "code": "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
            "message": "应用调用该接口的QPS超限",
            "requestid": "0A1B2C3E",
        }
        return 403, body, 0

    def refuse(self, why):
        return 400, {"code": "MissingParameter", "message": why, "requestid": "0A1B2C3F"}, 0


class DingTalkOldFake(ProviderFake):
    """GET oapi.dingtalk.com/gettoken?appkey=…&appsecret=…; errcode inside HTTP 200."""

    method = "GET"
    values = DingTalkFake.values

    def problems(self, request):
        expected = {"appkey": self.values["key_1"], "appsecret": self.values["key_2"]}
        return differences("query", request.query, expected)

    def grant(self, request):
        token = self.new_token("ding-old")
        return 200, {"errcode": 0, "access_token": token, "errmsg": "ok", "expires_in": 7200}, 0

    def credential_error(self):
        return 200, {"errcode": 40089, "errmsg": "不合法的corpid或corpsecret"}, 0

    def rate_limited(self):
        return 200, {"errcode": 90018, "errmsg": "已达到单个应用调用该接口的QPS上限"}, 0

    def refuse(self, why):
        return 200, {"errcode": 40035, "errmsg": f"不合法的参数: {why}"}, 0


# --- Baidu AI Cloud ---------------------------------------------------------------------


class BaiduFake(ProviderFake):
    """POST oauth/2.0/token with grant_type, client_id, client_secret in the URL; 30-day tokens."""

    values = {"key_1": "Va5yQRHlA4Fq5eR3LT0vuXV4", "key_2": "0rDSjzQ20XUj5itV6WRtznPQSzr5pVw2"}

    def problems(self, request):
        expected = {
            "grant_type": "client_credentials",
            "client_id": self.values["key_1"],
            "client_secret": self.values["key_2"],
        }
        return differences("query", request.query, expected)

    def grant(self, request):
        answer = {
            "refresh_token": "25.b55fe1d287227ca97aab219bb249b8ab.315360000.1798284651.282335",
            "expires_in": 2592000,
            "scope": "public wise_adapt",
            "session_key": "9mzdDZXu3dENdFZQurfg0Vz8slgSgvvOAUebNFzyzcpQ5EnbxbF",
            "access_token": self.new_token("24.6c5e1ff107f0e8bcef8c46d3424a0e78"),
            "session_secret": "dfac94a3489fe9fca7c3221cbf7525ff",
        }
        return 200, answer, 0

    def credential_error(self):
        return (
            401,
            {"error": "invalid_client", "error_description": "Client authentication failed"},
            0,
        )

    def rate_limited(self):
        return 429, {"error_code": 18, "error_msg": "Open api qps request limit reached"}, 0

    def refuse(self, why):
        return 400, {"error": "invalid_request", "error_description": why}, 0


# --- OAuth 2.0 (RFC 6749) token endpoints ------------------------------------------------


class OAuth2Fake(ProviderFake):
    """
    An RFC 6749 token endpoint: a form body, the client authenticated with HTTP
    Basic (`client_auth = "basic"`) or in the body (`"post"`), errors as
    {"error", "error_description"} (RFC 6749 §5.2).
    """

    client_auth = "basic"
    #: What the body must hold besides the client's credentials.
    form: dict = {"grant_type": "client_credentials"}
    #: The provider also takes the parameters as JSON (Auth0).
    accepts_json = False
    lifetime = 3600

    @property
    def client(self) -> tuple[str, str]:
        return self.values["key_1"], self.values["key_2"]

    def params(self, request):
        if self.accepts_json and request.content_type == "application/json":
            return request.json()
        if request.content_type != "application/x-www-form-urlencoded":
            return f"content type {request.content_type!r}"
        return request.form()

    def problems(self, request):
        params = self.params(request)
        if isinstance(params, str):
            return [f"{params}, expected a form body"]
        expected = dict(self.form)
        basic = request.basic()
        if self.client_auth == "basic":
            if basic != self.client:
                return [f"HTTP Basic credentials {basic!r}, expected the client's id and secret"]
        else:
            if basic is not None:
                return ["HTTP Basic credentials, expected client_id and client_secret in the body"]
            expected.update(client_id=self.client[0], client_secret=self.client[1])
        problems = differences("body", params, expected)
        if request.query:
            problems.append(f"a query string {request.query}")
        return problems

    def grant(self, request):
        answer = {
            "access_token": self.new_token("eyJ0eXAiOiJKV1Qi"),
            "token_type": "Bearer",
            "expires_in": self.lifetime,
        }
        return 200, answer, 0

    def credential_error(self):
        return (
            401,
            {"error": "invalid_client", "error_description": "Client authentication failed"},
            0,
        )

    def rate_limited(self):
        return 429, {"error": "temporarily_unavailable"}, 0, {"Retry-After": "2"}

    def refuse(self, why):
        return 400, {"error": "invalid_request", "error_description": why}, 0


class GenericOAuth2Fake(OAuth2Fake):
    values = {"key_1": "s6BhdRkqt3", "key_2": "7Fjfp0ZBr1KtDRbnfVdmIw", "key_3": "read write"}
    form = {"grant_type": "client_credentials", "scope": "read write"}


class ZoomFake(OAuth2Fake):
    """
    POST zoom.us/oauth/token, Basic client_id:client_secret, grant_type=account_credentials
    and account_id (in the body or the query string: Zoom takes either); errors as
    {"reason", "error"}.
    """

    values = {"key_1": "ZoomAccount123", "key_2": "zoomClientId", "key_3": "zoomClientSecret42"}
    form = {"grant_type": "account_credentials", "account_id": "ZoomAccount123"}
    lifetime = 3599

    @property
    def client(self):
        return self.values["key_2"], self.values["key_3"]

    def problems(self, request):
        if request.body and request.content_type != "application/x-www-form-urlencoded":
            return [f"content type {request.content_type!r}, expected a form body"]
        basic = request.basic()
        if basic != self.client:
            return [f"HTTP Basic credentials {basic!r}, expected the client's id and secret"]
        params = {**request.query, **(request.form() if request.body else {})}
        return differences("parameters", params, self.form)

    def grant(self, request):
        answer = {
            "access_token": self.new_token("eyJzdiI6IjAwMDAwMSIs"),
            "token_type": "bearer",
            "expires_in": 3599,
            "scope": "meeting:read:admin user:read:admin",
            "api_url": "https://api.zoom.us",
        }
        return 200, answer, 0

    def credential_error(self):
        return 400, {"reason": "Invalid client_id or client_secret", "error": "invalid_client"}, 0

    def rate_limited(self):
        body = {"code": 429, "message": "You have exceeded the daily rate limit of token requests."}
        return 429, body, 0

    def refuse(self, why):
        return 400, {"reason": why, "error": "invalid_request"}, 0


class PayPalFake(OAuth2Fake):
    """POST v1/oauth2/token, Basic client_id:secret, grant_type=client_credentials."""

    values = {"key_1": "AbCdEfPayPalClientId", "key_2": "EFGHPayPalSecret0123"}
    lifetime = 32400

    def grant(self, request):
        answer = {
            "scope": "https://uri.paypal.com/services/invoicing openid",
            "access_token": self.new_token("A21AAFEpH4PsADK7qSS7pSRsgzfENtu"),
            "token_type": "Bearer",
            "app_id": "APP-80W284485P519543T",
            "expires_in": 32400,
            "nonce": "2020-04-03T15:35:36ZaYZlGvEkV4yVSz8g6bAKFoGSEzuy3CQcz3ljhibkOHg",
        }
        return 200, answer, 0

    def rate_limited(self):
        body = {
            "name": "RATE_LIMIT_REACHED",
            "message": "Too many requests. Blocked due to rate limiting.",
            "debug_id": "b1d1f06c7246c",
        }
        return 429, body, 0


class EntraFake(OAuth2Fake):
    """
    POST login.microsoftonline.com/{tenant}/oauth2/v2.0/token, client_secret_post:
    client_id, scope, client_secret, grant_type in the form body; AADSTS errors.
    """

    client_auth = "post"
    values = {
        "key_1": "535fb089-9ff3-47b6-9bfb-4f1264799865",
        "key_2": "sampleCredentia1s~secret",
        "key_3": "https://graph.microsoft.com/.default",
    }
    form = {"grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default"}
    lifetime = 3599

    def problems(self, request):
        parts = request.path.split("/")
        if len(parts) != 5 or parts[2:] != ["oauth2", "v2.0", "token"] or not parts[1]:
            return [f"path {request.path}, expected /{{tenant}}/oauth2/v2.0/token"]
        return super().problems(request)

    def grant(self, request):
        status, answer, delay = super().grant(request)
        return status, {**answer, "ext_expires_in": 3599}, delay

    def credential_error(self):
        body = {
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the "
            "secret being sent in the request is the client secret value.",
            "error_codes": [7000215],
            "trace_id": "0b1c2d3e",
            "correlation_id": "4f5a6b7c",
        }
        return 401, body, 0


class Auth0Fake(OAuth2Fake):
    """
    POST {domain}/oauth/token, client_id and client_secret in the body (form or JSON),
    audience required for client credentials; a wrong secret is 401 access_denied.
    """

    client_auth = "post"
    accepts_json = True
    values = {
        "key_1": "auth0ClientId123",
        "key_2": "auth0ClientSecret-0123456789",
        "key_3": "https://api.example.com/",
    }
    form = {"grant_type": "client_credentials", "audience": "https://api.example.com/"}
    lifetime = 86400

    def credential_error(self):
        return 401, {"error": "access_denied", "error_description": "Unauthorized"}, 0

    def rate_limited(self):
        headers = {"X-RateLimit-Limit": "30", "X-RateLimit-Remaining": "0"}
        body = {"error": "too_many_requests", "error_description": "Global limit has been reached"}
        return 429, body, 0, headers


class OktaFake(OAuth2Fake):
    """POST {org}/oauth2/{server}/v1/token, Basic client auth, scope required."""

    values = {
        "key_1": "0oa1b2c3d4OktaClient",
        "key_2": "OktaSecret-0123456789",
        "key_3": "orders:read",
    }
    form = {"grant_type": "client_credentials", "scope": "orders:read"}

    def credential_error(self):
        body = {
            "error": "invalid_client",
            "error_description": "The client secret supplied for a confidential client is invalid.",
        }
        return 401, body, 0

    def rate_limited(self):
        body = {
            "errorCode": "E0000047",
            "errorSummary": "API call exceeded rate limit due to too many requests.",
            "errorLink": "E0000047",
            "errorId": "sampleQPivGUj_ND5v78vbYWW",
            "errorCauses": [],
        }
        return 429, body, 0, {"X-Rate-Limit-Reset": str(int(time.time()) + 2)}


class KeycloakFake(OAuth2Fake):
    """POST /realms/{realm}/protocol/openid-connect/token, client_id and secret in the body."""

    client_auth = "post"
    values = {"key_1": "billing-service", "key_2": "kc-secret-0123456789"}
    lifetime = 300

    def problems(self, request):
        parts = request.path.split("/")
        if (
            len(parts) != 6
            or parts[1] != "realms"
            or parts[3:]
            != [
                "protocol",
                "openid-connect",
                "token",
            ]
        ):
            return [
                f"path {request.path}, expected /realms/{{realm}}/protocol/openid-connect/token"
            ]
        return super().problems(request)

    def grant(self, request):
        answer = {
            "access_token": self.new_token("eyJhbGciOiJSUzI1NiIs"),
            "expires_in": 300,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": "profile email",
        }
        return 200, answer, 0

    def credential_error(self):
        # Keycloak ≥ 12: 401 (earlier: 400 with "Invalid client secret").
        body = {
            "error": "unauthorized_client",
            "error_description": "Invalid client or Invalid client credentials",
        }
        return 401, body, 0


class SalesforceFake(OAuth2Fake):
    """POST {my domain}/services/oauth2/token, client_id and secret in the body; no expires_in."""

    client_auth = "post"
    values = {"key_1": "3MVG9SalesforceConsumerKey", "key_2": "SalesforceConsumerSecret0123"}

    def grant(self, request):
        answer = {
            "access_token": self.new_token("00D5e000000XXXX!AR8AQ"),
            "signature": "d/SxeYBxH0GSVko0HMgcUxuZy0PA2cDDz1u7g7JtDHw=",
            "scope": "api",
            "instance_url": "https://mydomain.my.salesforce.com",
            "id": "https://login.salesforce.com/id/00D5e000000XXXX/0055e000000YYYY",
            "token_type": "Bearer",
            "issued_at": str(int(time.time() * 1000)),
        }
        return 200, answer, 0

    def credential_error(self):
        return (
            400,
            {"error": "invalid_client", "error_description": "invalid client credentials"},
            0,
        )


# --- JWT (RFC 7523) ---------------------------------------------------------------------


class JwtBearerFake(OAuth2Fake):
    """
    The JWT-bearer grant: grant_type=urn:…:jwt-bearer and assertion=<JWT> in a form
    body; the assertion's signature checked with the public key, aud the endpoint's URL,
    iss and sub as configured, at most an hour long.
    """

    values = {
        "key_1": "robot@project-1234.iam.gserviceaccount.com",
        "key_3": "https://www.googleapis.com/auth/cloud-platform",
    }
    field = "assertion"
    expected_sub = None
    expected_scope = "https://www.googleapis.com/auth/cloud-platform"

    def __init__(self):
        super().__init__()
        self.values = {**self.values, "key_2": private_key_pem()}

    def expected_form(self) -> dict:
        return {"grant_type": JWT_BEARER}

    def problems(self, request):
        if request.content_type != "application/x-www-form-urlencoded":
            return [f"content type {request.content_type!r}, expected a form body"]
        form = request.form()
        assertion = form.pop(self.field, "")
        problems = differences("body", form, self.expected_form())
        try:
            claims = jwt.decode(
                assertion,
                private_key().public_key(),
                algorithms=["RS256"],
                audience=self.url,
                issuer=self.values["key_1"],
                options={"require": ["iss", "aud", "iat", "exp"]},
            )
        except jwt.InvalidTokenError as error:
            return [*problems, f"assertion: {type(error).__name__}: {error}"]
        if claims.get("sub") != self.expected_sub:
            problems.append(f"assertion sub {claims.get('sub')!r}, expected {self.expected_sub!r}")
        if claims.get("scope") != self.expected_scope:
            problems.append(f"assertion scope {claims.get('scope')!r}")
        if not 0 < claims["exp"] - claims["iat"] <= 3600:
            problems.append("assertion longer than an hour")
        return problems

    def grant(self, request):
        answer = {
            "access_token": self.new_token("ya29.c"),
            "expires_in": 3599,
            "token_type": "Bearer",
        }
        return 200, answer, 0

    def credential_error(self):
        return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, 0

    def rate_limited(self):
        body = {"error": "rate_limit_exceeded", "error_description": "Rate limit exceeded"}
        return 429, body, 0


class GenericJwtBearerFake(JwtBearerFake):
    values = {"key_1": "3MVG9ConnectedAppKey", "key_3": "integration@example.com"}
    expected_sub = "integration@example.com"
    expected_scope = None


class PrivateKeyJwtFake(JwtBearerFake):
    """Client credentials with private_key_jwt: iss = sub = client_id, no client secret."""

    values = {"key_1": "private-key-client", "key_3": "orders:read"}
    field = "client_assertion"
    expected_sub = "private-key-client"
    expected_scope = None

    def expected_form(self):
        return {
            "grant_type": "client_credentials",
            "client_id": self.values["key_1"],
            "client_assertion_type": CLIENT_ASSERTION,
            "scope": "orders:read",
        }

    def problems(self, request):
        if request.basic() is not None:
            return ["HTTP Basic credentials, expected a client assertion"]
        return super().problems(request)

    def credential_error(self):
        return 401, {"error": "invalid_client", "error_description": "Invalid client assertion"}, 0


#: Each preset's fake, by the preset's name (its file's name).
# --- Tickets made with a token (chained realms: tokens.chains) -------------------------------


class TicketFake(ProviderFake):
    """
    WeChat's and WeCom's JS-SDK tickets: GET with the parent's current access token in
    `access_token` (and a `type` where the API takes one); errcode 0 and the ticket.
    The child secret has no values of its own. `parent` is the parent preset's fake,
    whose latest token is the only one accepted; `kind` the `type` expected (None: none).
    """

    method = "GET"
    values = {}
    kind = None

    def __init__(self):
        super().__init__()
        self.parent = None  # set by preset_on_fake

    def problems(self, request):
        expected = {"access_token": self.parent.issued[-1] if self.parent.issued else "(none)"}
        if self.kind:
            expected["type"] = self.kind
        return differences("query", request.query, expected)

    def grant(self, request):
        ticket = self.new_token("TICKET")
        return 200, {"errcode": 0, "errmsg": "ok", "ticket": ticket, "expires_in": 7200}, 0

    def credential_error(self):
        # The ticket's own "credential": the access token it was fetched with.
        return 200, {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid"}, 0

    def rate_limited(self):
        return 200, {"errcode": 45009, "errmsg": "reach max api daily quota limit"}, 0

    def refuse(self, why):
        return 200, {"errcode": 40014, "errmsg": f"invalid access_token: {why}"}, 0


class WeChatJsapiTicketFake(TicketFake):
    kind = "jsapi"


class WeChatCardTicketFake(TicketFake):
    kind = "wx_card"


class WeComJsapiTicketFake(TicketFake):
    kind = None  # cgi-bin/get_jsapi_ticket takes no type


class WeComAgentTicketFake(TicketFake):
    kind = "agent_config"


FAKES = {
    "wechat_official_account": WeChatClassicFake,
    "wechat_mini_program": WeChatClassicFake,
    "wechat_official_account_stable": WeChatStableFake,
    "wechat_mini_program_stable": WeChatStableFake,
    "wecom": WeComFake,
    "wechat_jsapi_ticket": WeChatJsapiTicketFake,
    "wechat_card_ticket": WeChatCardTicketFake,
    "wecom_jsapi_ticket": WeComJsapiTicketFake,
    "wecom_agent_ticket": WeComAgentTicketFake,
    "feishu_tenant": FeishuFake,
    "feishu_app": FeishuAppFake,
    "lark_tenant": FeishuFake,
    "lark_app": FeishuAppFake,
    "dingtalk": DingTalkFake,
    "dingtalk_gettoken": DingTalkOldFake,
    "baidu_ai_cloud": BaiduFake,
    "zoom_server_to_server": ZoomFake,
    "paypal": PayPalFake,
    "microsoft_entra_client_credentials": EntraFake,
    "auth0": Auth0Fake,
    "okta": OktaFake,
    "keycloak": KeycloakFake,
    "salesforce_client_credentials": SalesforceFake,
    "google_service_account": JwtBearerFake,
    "oauth2_client_credentials": GenericOAuth2Fake,
    "oauth2_jwt_bearer": GenericJwtBearerFake,
    "oauth2_private_key_jwt": PrivateKeyJwtFake,
}


def preset_on_fake(name, upstream, mode="ok", *, realm_id=None, key="app"):
    """
    The preset's realm (id: the name with dashes, or `realm_id`) with its URL's scheme
    and host rewritten to the fake's loopback origin (path and query kept: the fake
    answers there), a secret `key` with the fake's values (through the secret service,
    as the API saves it), and the preset's fake answering in `mode`. A chained preset
    (a ticket) gets its parent preset's realm first, on the same fake server, answering
    "ok", with a secret of the same key. Returns (realm, fake).
    """
    fake = FAKES[name]()
    preset = preset_get(name)
    parts = urlsplit(preset["realm"]["config"]["url"])
    url = urlunsplit(("http", f"127.0.0.1:{upstream.port}", parts.path, parts.query, ""))
    parent = None
    if is_chained(preset):
        parent_realm, fake.parent = preset_on_fake(
            preset["realm"]["config"]["parent"], upstream, key=key
        )
        parent = parent_realm.id
    realm = realm_from_preset(name, realm_id or name.replace("_", "-"), url=url, parent=parent)
    secret_upsert(realm.id, key, fake.values)
    fake.install(upstream, parts.path, mode)
    return realm, fake
