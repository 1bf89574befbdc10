"""
The upstream client: builds a realm's token request from a secret's values,
sends it, and reads the token and its lifetime from the answer.

Nothing here touches the database or the cache; `fetch()` either returns a
`Fetched` or raises `UpstreamFailure`, whose `detail` is safe to show an app:
it names the upstream's status and error code/message, never a secret value,
and never the request URL with its query (WeChat sends credentials there).
"""

import base64
import json
import socket
import string
import threading
import time
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, quote_plus, urlsplit

import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from realms.assertions import KeyUnreadable, sign_assertion
from realms.models import Argument, Realm
from realms.validators import (
    FORCE_REFRESH_NAME,
    JWT_NAME,
    PARENT_TOKEN_NAME,
    boolean_reference,
    compile_jsonpath,
    references_jwt,
    references_parent_token,
    render_template,
)
from secret_store.models import Secret
from tokens.models import FetchLog
from tokenserver import netguard
from tokenserver.jsonpaths import same_value

Outcome = FetchLog.Outcome

#: Largest answer read from an upstream; a token answer is a few KB.
MAX_RESPONSE_BYTES = 1_000_000

#: Longest lifetime believed (one year): a bigger one is capped to it.
MAX_LIFETIME = 365 * 86400.0

#: Where an error code / message usually is, when the realm names no path.
ERROR_CODE_FIELDS = ("errcode", "code", "error_code", "error")
ERROR_MESSAGE_FIELDS = ("errmsg", "msg", "message", "error_description", "error_msg")

_sessions = threading.local()


@dataclass(frozen=True)
class Fetched:
    """A token the upstream granted."""

    token: str
    lifetime: float  # seconds, counted from when the request was sent
    http_status: int
    duration_ms: int


class UpstreamFailure(Exception):
    """The upstream did not grant a token; `outcome` is a FetchLog outcome."""

    def __init__(
        self,
        outcome: str,
        detail: str,
        *,
        http_status: int | None = None,
        error_code: str = "",
        error_message: str = "",
        duration_ms: int = 0,
        retry_after: float | None = None,
        secret_fault: bool = False,
    ):
        super().__init__(detail)
        #: Caused by the secret's own values (nothing was sent): that secret's error
        #: only, never retried, never counted toward the realm's breaker.
        self.secret_fault = secret_fault
        self.retry_after = retry_after  # the upstream's Retry-After header, in seconds
        self.outcome = outcome
        self.detail = detail
        self.http_status = http_status
        self.error_code = error_code
        self.error_message = error_message
        self.duration_ms = duration_ms


@dataclass(frozen=True)
class TokenRequest:
    """Everything `requests` needs for one token call, plus how to read the answer."""

    method: str
    url: str
    params: dict
    headers: dict
    body: dict
    content_type: str
    auth: tuple | None
    timeout: float
    #: The JWT assertion signed for this request ($jwt), cut out of anything logged.
    assertion: str = ""
    #: A chained realm's parent token ($parent_token), cut out of anything logged.
    parent_token: str = ""


# --- One deadline for the whole call -------------------------------------------------
#
# requests' timeouts bound each connect and each read, not the call: a slow
# DNS answer or headers dripped a byte at a time could hold a fetch (and the
# secret's lock) far longer. Within `deadline()`, resolving is abandoned and
# the socket shut down when the deadline passes; every connection goes to
# the address tokenserver.netguard checked.

_state = threading.local()


@contextmanager
def deadline(at: float):
    """Bound the connections opened in this block to time.monotonic() `at`."""
    _state.deadline, _state.timers = at, []
    try:
        yield
    finally:
        for timer in _state.timers:
            timer.cancel()
        _state.deadline, _state.timers = None, []


def _remaining() -> float | None:
    at = getattr(_state, "deadline", None)
    return None if at is None else at - time.monotonic()


def _shutdown(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _GuardedConnectionMixin:
    def _new_conn(self):
        # Connect to the address that was checked, not to a second lookup.
        checked = netguard.resolve_checked(self._dns_host, self.port, timeout=_remaining())
        original, self._dns_host = self._dns_host, checked
        try:
            sock = super()._new_conn()
        finally:
            self._dns_host = original
        remaining = _remaining()
        if remaining is not None:
            timer = threading.Timer(max(0.0, remaining), _shutdown, args=(sock,))
            timer.daemon = True
            timer.start()
            _state.timers.append(timer)
        return sock


class GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections go only to allowed addresses (tokenserver.netguard)."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": GuardedHTTPConnectionPool,
            "https": GuardedHTTPSConnectionPool,
        }


def _session() -> requests.Session:
    # One pooled session per thread: requests' Session is not documented as
    # thread-safe, and keep-alive to the upstream saves a TLS handshake.
    session = getattr(_sessions, "session", None)
    if session is None:
        session = _sessions.session = requests.Session()
        session.trust_env = False  # no proxy or .netrc surprises from the environment
        # Connections go only to allowed addresses, within the call's deadline.
        session.mount("http://", GuardedAdapter())
        session.mount("https://", GuardedAdapter())
    return session


def build_request(
    realm: Realm,
    secret: Secret,
    parent_token: str | None = None,
    *,
    force_refresh: bool = False,
) -> TokenRequest:
    """
    Render the realm's arguments with the secret's values (and a chained realm's
    parent token, `$parent_token`). `force_refresh` is what `$force_refresh` stands
    for: true only when this fetch answers a token reported rejected
    (tokens.single_flight.Need.forces_new_token); an argument that is
    `$force_refresh` alone goes into a JSON body as the JSON boolean. Raises
    UpstreamFailure (`rejected`, a secret fault) when a value cannot be sent where the
    realm puts it.
    """
    values = secret.values()
    if realm.kind == Realm.Kind.CODE:
        # The operator's function gets the secret's values as JSON.
        for name, value in values.items():
            _check_sendable(value, name, "the request body", _utf8_fault)
        body = {"realm": realm.id, "key": secret.name, **values}
        return TokenRequest("POST", realm.code_url, {}, {}, body, "json", None, realm.timeout)

    params, headers, body, auth = {}, {}, {}, None
    arguments = list(realm.arguments.all())
    values = {**values, FORCE_REFRESH_NAME: "true" if force_refresh else "false"}
    json_body = realm.content_type == Realm.ContentType.JSON
    assertion = ""
    if any(references_jwt(argument.value) for argument in arguments):
        assertion = _assertion(realm, values)
        values = {**values, JWT_NAME: assertion}
    if any(references_parent_token(argument.value) for argument in arguments):
        if parent_token is None:
            # Realm.clean and realm_upsert refuse this; a realm changed by other means.
            _refuse("an argument sends $parent_token but the realm has no parent")
        values = {**values, PARENT_TOKEN_NAME: parent_token}
    for argument in arguments:
        if argument.is_optional_for(values):
            continue
        _check_argument(argument, values)
        rendered = render_template(argument.value, values)
        if argument.place == Argument.Place.URL:
            params[argument.name] = rendered
        elif argument.place == Argument.Place.HEADER:
            headers[argument.name] = rendered
        elif argument.place == Argument.Place.BODY:
            if json_body and boolean_reference(argument.value):
                body[argument.name] = force_refresh  # a JSON boolean, not "false"
            else:
                body[argument.name] = rendered
        elif argument.place == Argument.Place.BASIC:
            user, _, password = rendered.partition(":")
            auth = (user, password)
    return TokenRequest(
        realm.method,
        realm.url,
        params,
        headers,
        body,
        realm.content_type,
        auth,
        realm.timeout,
        assertion,
        parent_token or "",
    )


def _assertion(realm: Realm, values: dict) -> str:
    """
    The JWT assertion `$jwt` renders to, signed now with the secret's private key
    (realms.assertions). A key that cannot be used is the secret's fault, reported
    naming the value (key_2), never showing it; nothing is sent.
    """
    if not realm.jwt:
        _refuse("an argument sends $jwt but the realm has no jwt settings")
    try:
        return sign_assertion(realm.jwt, values, realm.url)
    except KeyUnreadable as exc:
        _refuse(f"the JWT assertion cannot be signed: {exc}")
    except Exception as exc:  # noqa: BLE001 - PyJWT/cryptography: name the kind only
        _refuse(f"the JWT assertion cannot be signed ({type(exc).__name__})")


# --- Values that cannot be sent ------------------------------------------------------
#
# The HTTP library refuses some values (a line break in a header: InvalidHeader) or
# cannot encode them (a character outside Latin-1 in a header or Basic credentials, a
# lone surrogate anywhere). That is the secret's own problem: caught here, before
# anything is sent, and reported naming the value at fault.


def _utf8_fault(value: str) -> str | None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid Unicode (a lone surrogate)"
    return None


def _header_fault(value: str) -> str | None:
    fault = _utf8_fault(value)
    if fault:
        return fault
    if "\n" in value or "\r" in value:
        return "it holds a line break"
    if any(unicodedata.category(char) == "Cc" and char != "\t" for char in value):
        return "it holds a control character"
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return "it holds a character HTTP headers cannot carry (outside Latin-1)"
    return None


def _basic_fault(value: str) -> str | None:
    fault = _utf8_fault(value)
    if fault:
        return fault
    try:
        value.encode("latin-1")  # requests encodes Basic credentials as Latin-1
    except UnicodeEncodeError:
        return "it holds a character Basic credentials cannot carry (outside Latin-1)"
    return None


_FAULTS = {
    Argument.Place.URL: ("the URL", _utf8_fault),
    Argument.Place.BODY: ("the request body", _utf8_fault),
    Argument.Place.HEADER: ("a header", _header_fault),
    Argument.Place.BASIC: ("Basic credentials", _basic_fault),
}


def _check_argument(argument: Argument, values: dict) -> None:
    where, fault_of = _FAULTS[argument.place]
    for name in string.Template(argument.value).get_identifiers():
        _check_sendable(values.get(name) or "", name, where, fault_of)
    # The literal parts too (the realm's own text), e.g. a header "Bearer ${key_1}".
    rendered = render_template(argument.value, values)
    if argument.place == Argument.Place.HEADER and rendered != rendered.lstrip():
        _refuse(f"the header {argument.name} cannot be sent: it starts with a space")
    fault = fault_of(rendered)
    if fault:
        _refuse(f"argument {argument.name} cannot be sent in {where}: {fault}")


def _check_sendable(value: str, name: str, where: str, fault_of) -> None:
    fault = fault_of(value)
    if fault:
        _refuse(f"the value of {name} cannot be sent in {where}: {fault}")


def _refuse(detail: str):
    # The detail names the value (key_1), never shows it: it goes to the fetch log too.
    raise UpstreamFailure(
        FetchLog.Outcome.REJECTED, detail, error_message=detail, secret_fault=True
    )


class _PathFailed(ValueError):
    """A JSONPath could not be applied to the answer (e.g. sorting met a string)."""


def _find(path: str, document):
    """Values a JSONPath finds in a document (empty list when none)."""
    if not path:
        return []
    try:
        return [match.value for match in compile_jsonpath(path).find(document)]
    except Exception as exc:  # noqa: BLE001 - jsonpath-ng raises anything on odd input
        raise _PathFailed(f"{path} could not be applied to the answer") from exc


def _first(paths, document):
    if not isinstance(document, (dict, list)):
        return None
    for path in paths:
        try:
            found = _find(path, document)
        except _PathFailed:
            continue
        if found and found[0] not in (None, ""):
            return found[0]
    return None


def _printable(text: str) -> str:
    """
    Upstream text made safe to log, store and show: a lone surrogate (JSON can spell
    one, `\\ud800`, but no database or UTF-8 encoder takes it) becomes U+FFFD, and
    control characters a space.
    """
    text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return "".join(" " if unicodedata.category(char) == "Cc" else char for char in text)


def token_fault(token: str) -> str | None:
    """Why `token` is not something tokenserver can store and hand out (None: it is)."""
    try:
        size = len(token.encode("utf-8"))
    except UnicodeEncodeError:
        return "the token is not valid text (a lone surrogate)"
    if any(unicodedata.category(char) == "Cc" for char in token):
        return "the token is not valid text (a control character)"
    if size > settings.TOKENSERVER_MAX_TOKEN_BYTES:
        return (
            f"the token is {size} bytes, more than TOKENSERVER_MAX_TOKEN_BYTES "
            f"({settings.TOKENSERVER_MAX_TOKEN_BYTES})"
        )
    return None


def _sent_forms(secret: Secret, request: "TokenRequest | None") -> list[str]:
    """
    Every form in which the request carried a secret value (or a chained realm's
    parent token), longest first: as is, percent-encoded (`quote`, `quote_plus`),
    JSON-escaped, and the Basic credentials' base64. Some upstreams echo what they
    got, in any of these.
    """
    forms = set()
    values = list(secret.values().values())
    if request is not None and request.parent_token:
        values.append(request.parent_token)
    for value in values:
        if not value or len(value) < 4:
            continue
        forms.update(
            {
                value,
                quote(value, safe=""),
                quote(value),
                quote_plus(value),
                json.dumps(value)[1:-1],
                json.dumps(value, ensure_ascii=False)[1:-1],
            }
        )
    if request is not None and request.assertion:
        # The assertion is a credential for its lifetime; its signature alone too.
        forms.update({request.assertion, request.assertion.rpartition(".")[2]})
    if request is not None and request.auth is not None:
        user, password = request.auth
        raw = f"{user}:{password}".encode("utf-8", "surrogatepass")
        forms.add(base64.b64encode(raw).decode())
    return sorted(forms, key=len, reverse=True)


def _scrub(text: str, forms: list[str]) -> str:
    """Cut secret values (`_sent_forms`) out of upstream text."""
    for form in forms:
        text = text.replace(form, "***")
    return _printable(text)[:300]


class _Reader:
    """Reads one realm's answer: success conditions, token, lifetime, errors."""

    def __init__(self, realm: Realm, secret: Secret, request: "TokenRequest | None" = None):
        self.realm = realm
        self.secret = secret
        self.sent_forms = _sent_forms(secret, request)
        if realm.kind == Realm.Kind.CODE:
            # The operator's function answers {"token", "expires_in"} (seconds).
            self.token_path, self.expires_in_path, self.unit = "token", "expires_in", "s"
            self.expires_at_path = ""
            self.conditions = []
        else:
            self.token_path = realm.token_path
            self.expires_in_path = realm.expires_in_path
            self.expires_at_path = realm.expires_at_path
            self.unit = realm.expires_in_unit
            self.conditions = realm.success_conditions or []

    def error_fields(self, document) -> tuple[str, str]:
        code_paths = (
            [self.realm.error_code_path] if self.realm.error_code_path else ERROR_CODE_FIELDS
        )
        message_paths = (
            [self.realm.error_message_path]
            if self.realm.error_message_path
            else ERROR_MESSAGE_FIELDS
        )
        code = _first(code_paths, document)
        message = _first(message_paths, document)
        code_text = "" if code is None else _scrub(str(code), self.sent_forms)[:100]
        message_text = "" if message is None else _scrub(str(message), self.sent_forms)
        return code_text, message_text

    def check_conditions(self, document, status, duration_ms) -> None:
        """
        Every success condition must hold. A condition holds when the path finds
        a value equal to the expected one; an expected list means any of its
        values, and None (null) matches a missing field.
        """
        for path, expected in self.conditions:
            alternatives = expected if isinstance(expected, list) else [expected]
            found = _find(path, document) or [None]
            if not any(same_value(value, wanted) for value in found for wanted in alternatives):
                reason = f"success condition {path} == {json.dumps(expected)} does not hold"
                raise self.failure(Outcome.UPSTREAM_ERROR, reason, status, document, duration_ms)

    def token(self, document, status, duration_ms) -> str:
        tokens = _find(self.token_path, document)
        token = tokens[0] if tokens else None
        if isinstance(token, (int, float)) and not isinstance(token, bool):
            token = str(token)
        if isinstance(token, str) and token:
            fault = token_fault(token)
            if fault:
                raise self.failure(Outcome.INVALID_RESPONSE, fault, status, document, duration_ms)
            return token
        code, message = self.error_fields(document)
        if code or message:
            # The usual shape of a refusal inside HTTP 200 (WeChat's errcode).
            raise self.failure(Outcome.UPSTREAM_ERROR, "", status, document, duration_ms)
        reason = f"token_path {self.token_path} found no token"
        raise self.failure(Outcome.INVALID_RESPONSE, reason, status, document, duration_ms)

    def lifetime(self, document, status, duration_ms, sent_at) -> float:
        """Seconds the token lives, counted from `sent_at` (when the request left)."""
        if self.expires_at_path:
            found = _find(self.expires_at_path, document)
            try:
                lifetime = _finite(_parse_moment(found[0]) - sent_at)
            except (IndexError, TypeError, ValueError, OverflowError):
                reason = f"expires_at_path {self.expires_at_path} found no time"
                raise self.failure(
                    Outcome.INVALID_RESPONSE, reason, status, document, duration_ms
                ) from None
            if lifetime <= 0:
                reason = f"expires_at {found[0]} is in the past"
                raise self.failure(Outcome.INVALID_RESPONSE, reason, status, document, duration_ms)
            return lifetime
        if not self.expires_in_path:
            return float(self.realm.default_ttl)
        found = _find(self.expires_in_path, document)
        try:
            lifetime = float(found[0])
            if self.unit == Realm.ExpiresInUnit.MILLISECONDS:
                lifetime /= 1000
            lifetime = _finite(lifetime)
        except (IndexError, TypeError, ValueError, OverflowError):
            reason = f"expires_in_path {self.expires_in_path} found no number"
            raise self.failure(
                Outcome.INVALID_RESPONSE, reason, status, document, duration_ms
            ) from None
        if lifetime <= 0:
            reason = f"lifetime {found[0]} is not positive"
            raise self.failure(Outcome.INVALID_RESPONSE, reason, status, document, duration_ms)
        return lifetime

    def failure(self, outcome, reason, status, document=None, duration_ms=0) -> UpstreamFailure:
        code, message = self.error_fields(document) if document is not None else ("", "")
        detail = f"upstream answered HTTP {status}"
        if code:
            detail += f" with {code_label(self.realm, document)} {code}"
        if message:
            detail += f": {message}"
        if reason:
            # Reasons may quote the answer (an expires_in it could not read).
            detail += f" ({_scrub(reason, self.sent_forms)})"
        return UpstreamFailure(
            outcome,
            detail,
            http_status=status,
            error_code=code,
            error_message=message,
            duration_ms=duration_ms,
        )


def code_label(realm: Realm, document) -> str:
    """How the answer names its error code (errcode, code, error), for messages."""
    if realm.error_code_path:
        return realm.error_code_path
    if isinstance(document, dict):
        for name in ERROR_CODE_FIELDS:
            if document.get(name) not in (None, ""):
                return name
    return "error"


def _read_body(response: requests.Response, deadline: float, timeout: float) -> bytes:
    """
    The answer's body, at most MAX_RESPONSE_BYTES, read before `deadline`
    (requests' read timeout bounds each read, not the whole answer: an
    upstream dripping bytes would otherwise hold the call, and the lock).
    """
    body = b""
    while True:
        # read1: what has arrived (one socket read), so the deadline is checked
        # between reads; iter_content would wait for a whole chunk.
        try:
            chunk = response.raw.read1(65536, decode_content=True)
        except urllib3.exceptions.ReadTimeoutError:
            raise requests.Timeout("read timed out") from None
        except urllib3.exceptions.HTTPError:
            raise requests.ConnectionError("connection broken") from None
        if not chunk:
            return body
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            raise ValueError("answer larger than 1 MB")
        if time.monotonic() > deadline:
            raise requests.Timeout(f"answer not complete within {2 * timeout:g} s")


def _parse_moment(value) -> float:
    """An absolute expiry: epoch seconds (or milliseconds, when that large) or ISO 8601."""
    if isinstance(value, bool):
        raise ValueError("not a time")
    if isinstance(value, (int, float)) or (isinstance(value, str) and _is_number(value)):
        number = float(value)
        return number / 1000 if number > 100_000_000_000 else number
    if isinstance(value, str):
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    raise ValueError("not a time")


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite(lifetime: float) -> float:
    """A lifetime the token path can work with: finite, capped at MAX_LIFETIME."""
    if lifetime != lifetime or lifetime in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return min(lifetime, MAX_LIFETIME)


def _retry_after(header: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is rare for token endpoints: ignored)."""
    try:
        return max(0.0, float(header)) if header else None
    except ValueError:
        return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def fetch(
    realm: Realm,
    secret: Secret,
    *,
    force_refresh: bool = False,
    parent_token: str | None = None,
) -> Fetched:
    """
    Ask the upstream for a token for `secret` (a chained realm's with its parent's
    token; `$force_refresh` true when `force_refresh`: see build_request). Raises
    UpstreamFailure with an outcome of upstream_error, invalid_response, timeout or
    unreachable.
    """
    request = build_request(realm, secret, parent_token, force_refresh=force_refresh)
    reader = _Reader(realm, secret, request)
    host = urlsplit(request.url).hostname or "upstream"
    sent_at = time.time()
    started = time.monotonic()

    def elapsed_ms():
        return int((time.monotonic() - started) * 1000)

    call_deadline = started + 2 * request.timeout
    try:
        with deadline(call_deadline):
            response = _session().request(
                request.method,
                request.url,
                params=request.params or None,
                # A new connection per fetch, so the deadline guards it (fetches are rare).
                headers={**request.headers, "Connection": "close"},
                json=request.body if request.body and request.content_type == "json" else None,
                data=request.body if request.body and request.content_type == "form" else None,
                auth=request.auth,
                timeout=(request.timeout, request.timeout),
                allow_redirects=False,  # a redirect would carry credentials elsewhere
                stream=True,
            )
            with response:
                raw = _read_body(response, call_deadline, request.timeout)
    except requests.Timeout:
        raise UpstreamFailure(
            Outcome.TIMEOUT,
            f"upstream {host} did not answer within {request.timeout:g} s",
            duration_ms=elapsed_ms(),
        ) from None
    except (requests.exceptions.InvalidHeader, UnicodeError) as exc:
        # build_request checks every value first; this is the library's own word.
        raise UpstreamFailure(
            Outcome.REJECTED,
            f"the request to {host} cannot be sent ({type(exc).__name__})",
            error_message=f"the request cannot be sent ({type(exc).__name__})",
            duration_ms=elapsed_ms(),
            secret_fault=True,
        ) from None
    except requests.RequestException as exc:
        refusal = netguard.find_refusal(exc)
        if refusal is not None:
            raise UpstreamFailure(
                Outcome.REJECTED, str(refusal), duration_ms=elapsed_ms()
            ) from None
        if time.monotonic() >= call_deadline - 0.05:
            # The deadline cut the call short (slow DNS, dripping headers).
            raise UpstreamFailure(
                Outcome.TIMEOUT,
                f"upstream {host} did not answer within {2 * request.timeout:g} s",
                duration_ms=elapsed_ms(),
            ) from None
        # str(exc) can hold the URL with its query string: name the kind only.
        raise UpstreamFailure(
            Outcome.UNREACHABLE,
            f"upstream {host} is unreachable ({type(exc).__name__})",
            duration_ms=elapsed_ms(),
        ) from None
    except ValueError as exc:
        raise UpstreamFailure(
            Outcome.INVALID_RESPONSE, f"upstream {host}: {exc}", duration_ms=elapsed_ms()
        ) from None

    duration_ms = elapsed_ms()
    status = response.status_code
    try:
        document = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        document = None

    if not 200 <= status < 300:
        reason = "" if document is not None else "body is not JSON"
        failure = reader.failure(Outcome.UPSTREAM_ERROR, reason, status, document, duration_ms)
        failure.retry_after = _retry_after(response.headers.get("Retry-After"))
        raise failure
    if document is None:
        raise reader.failure(
            Outcome.INVALID_RESPONSE, "body is not JSON", status, None, duration_ms
        )

    try:
        reader.check_conditions(document, status, duration_ms)
        token = reader.token(document, status, duration_ms)
        lifetime = reader.lifetime(document, status, duration_ms, sent_at)
    except _PathFailed as exc:
        raise reader.failure(
            Outcome.INVALID_RESPONSE, str(exc), status, document, duration_ms
        ) from None
    return Fetched(token=token, lifetime=lifetime, http_status=status, duration_ms=duration_ms)
