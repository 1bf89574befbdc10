"""
tokens.upstream: building the request from templates, reading the answer,
each error, and the one deadline a call has (name resolution, headers, body).
"""

import base64
import json
import threading
import time
from datetime import UTC, datetime

import pytest

from tests.factories import ArgumentFactory, RealmFactory, SecretFactory
from tokens.upstream import UpstreamFailure, build_request, fetch

pytestmark = pytest.mark.django_db


def realm_with(upstream, arguments=(), **fields):
    realm = RealmFactory(url=upstream.url(), **fields)
    for order, (place, name, value) in enumerate(arguments):
        ArgumentFactory(realm=realm, place=place, name=name, value=value, order=order)
    return realm


@pytest.fixture
def secret_values():
    return {"key_1": "client-id", "key_2": "client-secret-value", "key_3": "scope-a"}


def test_arguments_go_to_query_headers_and_json_body(upstream, secret_values):
    realm = realm_with(
        upstream,
        [
            ("url", "appid", "$key_1"),
            ("header", "Authorization", "Bearer ${key_2}"),
            ("body", "scope", "$key_3"),
            ("body", "literal", "fixed value with $$ sign"),
        ],
        method="POST",
        content_type="json",
    )
    secret = SecretFactory(realm=realm, **secret_values)
    upstream.reply("/token", {"access_token": "T", "expires_in": 60})

    fetch(realm, secret)

    call = upstream.calls()[0]
    assert call["method"] == "POST"
    assert call["query"] == {"appid": "client-id"}
    assert call["headers"]["Authorization"] == "Bearer client-secret-value"
    assert json.loads(call["body"]) == {"scope": "scope-a", "literal": "fixed value with $ sign"}


def test_form_body_and_basic_auth(upstream, secret_values):
    realm = realm_with(
        upstream,
        [("basic", "", "${key_1}:${key_2}"), ("body", "grant_type", "client_credentials")],
        method="POST",
        content_type="form",
    )
    secret = SecretFactory(realm=realm, **secret_values)
    upstream.reply("/token", {"access_token": "T", "expires_in": 60})

    fetch(realm, secret)

    call = upstream.calls()[0]
    assert call["body"] == b"grant_type=client_credentials"
    assert call["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    expected = base64.b64encode(b"client-id:client-secret-value").decode()
    assert call["headers"]["Authorization"] == f"Basic {expected}"


def test_query_arguments_join_a_query_already_in_the_url(upstream):
    realm = RealmFactory(url=upstream.url("/token") + "?version=2")
    ArgumentFactory(realm=realm, place="url", name="appid", value="$key_1")
    secret = SecretFactory(realm=realm, key_1="abc")
    upstream.reply("/token", {"access_token": "T", "expires_in": 60})

    fetch(realm, secret)

    assert upstream.calls()[0]["query"] == {"version": "2", "appid": "abc"}


def test_argument_of_an_unset_value_alone_is_left_out(upstream):
    # An optional OAuth2 scope: not sent at all when the secret has none.
    realm = realm_with(
        upstream,
        [("url", "scope", "$key_4"), ("url", "also", "${key_5}"), ("url", "prefix", "p-${key_4}")],
    )
    secret = SecretFactory(realm=realm)

    request = build_request(realm, secret)

    assert request.params == {"prefix": "p-"}


def test_argument_of_a_set_value_is_sent(upstream):
    realm = realm_with(upstream, [("url", "scope", "$key_4")])
    secret = SecretFactory(realm=realm, key_4="read")

    assert build_request(realm, secret).params == {"scope": "read"}


@pytest.mark.parametrize(
    ("answer", "token_path", "expires_in_path", "unit", "lifetime"),
    [
        ({"access_token": "T", "expires_in": 7200}, "access_token", "expires_in", "s", 7200),
        ({"data": {"token": "T", "ttl": 5000}}, "$.data.token", "data.ttl", "ms", 5),
        (
            {"tenant_access_token": "T", "expire": "7140"},
            "tenant_access_token",
            "expire",
            "s",
            7140,
        ),
        ({"list": [{"t": "T"}]}, "$.list[0].t", "", "s", 1234),  # no lifetime: default_ttl
    ],
)
def test_jsonpath_extraction(upstream, answer, token_path, expires_in_path, unit, lifetime):
    realm = realm_with(
        upstream,
        token_path=token_path,
        expires_in_path=expires_in_path,
        expires_in_unit=unit,
        default_ttl=1234,
    )
    upstream.reply("/token", answer)

    fetched = fetch(realm, SecretFactory(realm=realm))

    assert fetched.token == "T"
    assert fetched.lifetime == lifetime
    assert fetched.http_status == 200


def test_success_conditions_must_all_hold(upstream):
    realm = realm_with(upstream, success_conditions=[["code", 0], ["$.ok", True]])
    upstream.reply("/token", {"code": 99, "msg": "app not found", "ok": True, "access_token": "T"})

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    failure = raised.value
    assert failure.outcome == "upstream_error"
    assert failure.detail == (
        "upstream answered HTTP 200 with code 99: app not found "
        "(success condition code == 0 does not hold)"
    )
    assert (failure.error_code, failure.error_message) == ("99", "app not found")


def test_success_condition_holding_lets_the_token_through(upstream):
    realm = realm_with(upstream, success_conditions=[["errcode", 0]])
    upstream.reply(
        "/token", {"errcode": 0, "errmsg": "ok", "access_token": "T", "expires_in": 7200}
    )

    assert fetch(realm, SecretFactory(realm=realm)).token == "T"


def test_wechat_error_inside_http_200(upstream):
    realm = realm_with(upstream)
    upstream.reply("/token", {"errcode": 40013, "errmsg": "invalid appid"})

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert raised.value.outcome == "upstream_error"
    assert raised.value.http_status == 200
    assert raised.value.detail == "upstream answered HTTP 200 with errcode 40013: invalid appid"


def test_non_2xx_status(upstream):
    realm = realm_with(upstream)
    upstream.reply(
        "/token",
        {"error": "invalid_client", "error_description": "bad credentials"},
        status=401,
    )

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert raised.value.outcome == "upstream_error"
    assert raised.value.http_status == 401
    assert (
        raised.value.detail
        == "upstream answered HTTP 401 with error invalid_client: bad credentials"
    )


def test_non_2xx_without_json(upstream):
    realm = realm_with(upstream)
    upstream.reply("/token", b"<html>bad gateway</html>", status=502)

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert raised.value.detail == "upstream answered HTTP 502 (body is not JSON)"


def test_body_that_is_not_json(upstream):
    realm = realm_with(upstream)
    upstream.reply("/token", b"access_token=T&expires_in=7200")

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert raised.value.outcome == "invalid_response"
    assert raised.value.detail == "upstream answered HTTP 200 (body is not JSON)"


def test_missing_token(upstream):
    realm = realm_with(upstream, token_path="$.data.token")
    upstream.reply("/token", {"data": {}})

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert raised.value.outcome == "invalid_response"
    assert "token_path $.data.token found no token" in raised.value.detail


@pytest.mark.parametrize("expires_in", [None, "soon", 0, -5])
def test_missing_or_bad_lifetime(upstream, expires_in):
    realm = realm_with(upstream)
    answer = {"access_token": "T"}
    if expires_in is not None:
        answer["expires_in"] = expires_in
    upstream.reply("/token", answer)

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert raised.value.outcome == "invalid_response"


@pytest.mark.django_db
@pytest.mark.parametrize("lifetime", [b"NaN", b"Infinity", b"1e999", b'"nan"'])
def test_a_lifetime_that_is_not_finite_is_refused(upstream, lifetime):
    # Finding: NaN or infinite lifetimes crashed after a successful fetch.
    realm = RealmFactory(url=upstream.url())
    upstream.reply("/token", b'{"access_token": "T", "expires_in": ' + lifetime + b"}")

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert raised.value.outcome == "invalid_response"


@pytest.mark.django_db
def test_a_huge_lifetime_is_capped_at_a_year(upstream):
    realm = RealmFactory(url=upstream.url())
    upstream.reply("/token", {"access_token": "T", "expires_in": 1e300})

    assert fetch(realm, SecretFactory(realm=realm)).lifetime == 365 * 86400


def test_redirect_is_not_followed(upstream):
    realm = realm_with(upstream)
    upstream.reply("/token", {"location": "elsewhere"}, status=302)

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert raised.value.http_status == 302
    assert len(upstream.requests) == 1


def test_timeout(upstream):
    realm = realm_with(upstream, timeout=0.2)
    upstream.reply("/token", {"access_token": "T", "expires_in": 60}, delay=1)

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert raised.value.outcome == "timeout"
    assert raised.value.detail == "upstream 127.0.0.1 did not answer within 0.2 s"


@pytest.fixture
def dripping_upstream():
    """
    start(chunks, pause): a server on 127.0.0.1 that answers one request with
    `chunks`, `pause` seconds apart; returns its URL. Stopped after the test.
    """
    import socket

    stop = threading.Event()
    started = []

    def start(chunks, pause):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.05)  # to notice `stop` while nobody connects

        def drip():
            with listener:
                while not stop.is_set():
                    try:
                        conn, _ = listener.accept()
                        break
                    except TimeoutError:
                        continue
                else:
                    return
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    for chunk in chunks:
                        conn.sendall(chunk)
                        if stop.wait(pause):
                            return
                except OSError:
                    pass

        thread = threading.Thread(target=drip, daemon=True)
        thread.start()
        started.append(thread)
        return f"http://127.0.0.1:{listener.getsockname()[1]}/token"

    yield start
    stop.set()
    for thread in started:
        thread.join(5)
        assert not thread.is_alive(), "the dripping upstream did not stop"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("chunks", "pause"),
    [
        # Review of issues 2-4: a body dripping in (each read is quick enough).
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"] + [b"x" * 10] * 40, 0.1),
        # Review of issue 5: headers sent a byte at a time.
        ([bytes([b]) for b in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 200], 0.2),
    ],
    ids=["body", "headers"],
)
def test_an_answer_dripping_past_the_deadline_times_out(dripping_upstream, chunks, pause):
    # requests' read timeout bounds each read, not the whole answer: the
    # call has one deadline, so it cannot hold the secret's lock past its lease.
    realm = RealmFactory(url=dripping_upstream(chunks, pause), timeout=0.5)
    started = time.monotonic()

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert raised.value.outcome == "timeout"
    assert time.monotonic() - started < 2.0


@pytest.mark.django_db
def test_slow_name_resolution_times_out(monkeypatch, request):
    import socket

    real = socket.getaddrinfo
    answer_now = threading.Event()
    request.addfinalizer(answer_now.set)  # the lookup thread ends with the test

    def slow(host, *args, **kwargs):
        if host == "slow-dns.example.test":
            answer_now.wait(3)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    realm = RealmFactory(url="http://slow-dns.example.test/token", timeout=0.3)
    started = time.monotonic()

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert raised.value.outcome == "timeout"
    assert time.monotonic() - started < 1.5


def test_unreachable_never_names_the_url_or_query():
    realm = RealmFactory(url="http://127.0.0.1:9/token")
    ArgumentFactory(realm=realm, name="secret", value="$key_2")
    secret = SecretFactory(realm=realm, key_2="super-secret-in-the-query")

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, secret)

    assert raised.value.outcome == "unreachable"
    assert "super-secret" not in raised.value.detail
    assert "/token" not in raised.value.detail


def test_upstream_echoing_a_secret_is_scrubbed(upstream):
    realm = realm_with(upstream, [("url", "secret", "$key_2")])
    secret = SecretFactory(realm=realm, key_2="s3cr3t-value-123")
    upstream.reply("/token", {"errcode": 40125, "errmsg": "invalid appsecret s3cr3t-value-123"})

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, secret)

    assert "s3cr3t-value-123" not in raised.value.detail
    assert "s3cr3t-value-123" not in raised.value.error_message
    assert raised.value.error_message == "invalid appsecret ***"


def test_code_realm_posts_the_values_to_the_operators_function(upstream):
    realm = RealmFactory(kind="code", url="", code_url=upstream.url("/fn"))
    secret = SecretFactory(realm=realm, name="app", key_1="one", key_2="two")
    upstream.reply("/fn", {"token": "FROM-CODE", "expires_in": 600})

    fetched = fetch(realm, secret)

    assert (fetched.token, fetched.lifetime) == ("FROM-CODE", 600)
    assert json.loads(upstream.calls("/fn")[0]["body"]) == {
        "realm": realm.id,
        "key": "app",
        "key_1": "one",
        "key_2": "two",
        "key_3": "",
        "key_4": "",
        "key_5": "",
    }


# --- Absolute expiry ------------------------------------------------------------------


@pytest.mark.parametrize(
    "expires_at",
    [
        lambda now: now + 3600,  # epoch seconds
        lambda now: str(int(now + 3600)),  # as text
        lambda now: int((now + 3600) * 1000),  # epoch milliseconds
        lambda now: datetime.fromtimestamp(now + 3600, tz=UTC).isoformat(),
        lambda now: datetime.fromtimestamp(now + 3600, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    ],
    ids=["epoch", "epoch-text", "epoch-ms", "iso-offset", "iso-z"],
)
def test_expires_at_path_gives_the_lifetime(upstream, expires_at):
    realm = realm_with(upstream, expires_at_path="$.data.expires_at")
    upstream.reply("/token", {"access_token": "T", "data": {"expires_at": expires_at(time.time())}})

    fetched = fetch(realm, SecretFactory(realm=realm))

    assert 3590 < fetched.lifetime <= 3600


def test_expires_at_in_the_past_is_refused(upstream):
    realm = realm_with(upstream, expires_at_path="expires_at")
    upstream.reply("/token", {"access_token": "T", "expires_at": "2001-01-01T00:00:00Z"})

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert raised.value.outcome == "invalid_response"
    assert "expires_at 2001-01-01T00:00:00Z is in the past" in raised.value.detail


@pytest.mark.parametrize("value", ["next tuesday", None, True, {"a": 1}])
def test_expires_at_that_is_not_a_time_is_refused(upstream, value):
    realm = realm_with(upstream, expires_at_path="expires_at")
    upstream.reply("/token", {"access_token": "T", "expires_at": value})

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert "expires_at_path expires_at found no time" in raised.value.detail


def test_path_that_compiles_but_finds_nothing_is_named(upstream):
    realm = realm_with(upstream, expires_in_path="$.data.ttl")
    upstream.reply("/token", {"access_token": "T", "expires_in": 7200})

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert raised.value.detail == (
        "upstream answered HTTP 200 (expires_in_path $.data.ttl found no number)"
    )


# --- Success conditions with alternatives ---------------------------------------------


@pytest.mark.parametrize(
    ("answer", "ok"),
    [
        ({"access_token": "T", "expires_in": 60}, True),  # no errcode at all
        ({"errcode": 0, "access_token": "T", "expires_in": 60}, True),
        ({"errcode": "0", "access_token": "T", "expires_in": 60}, True),
        ({"errcode": 40001, "access_token": "T", "expires_in": 60}, False),
    ],
)
def test_condition_any_of_with_null_for_missing(upstream, answer, ok):
    realm = realm_with(upstream, success_conditions=[["errcode", [0, None]]])
    upstream.reply("/token", answer)

    if ok:
        assert fetch(realm, SecretFactory(realm=realm)).token == "T"
    else:
        with pytest.raises(UpstreamFailure):
            fetch(realm, SecretFactory(realm=realm))


def test_error_message_path_builds_the_detail(upstream):
    realm = realm_with(
        upstream,
        success_conditions=[["$.status.ok", True]],
        error_code_path="$.status.reason",
        error_message_path="$.status.text",
    )
    upstream.reply("/token", {"status": {"ok": False, "reason": "E42", "text": "app frozen"}})

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert raised.value.detail.startswith(
        "upstream answered HTTP 200 with $.status.reason E42: app frozen"
    )


# --- Kind code: garbage answers -----------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"<html>oops</html>", "body is not JSON"),
        ({"tok": "x"}, "token_path token found no token"),
        ({"token": "x"}, "expires_in_path expires_in found no number"),
        ({"token": "x", "expires_in": "soon"}, "expires_in_path expires_in found no number"),
        ([1, 2, 3], "token_path token found no token"),
    ],
)
def test_code_url_answering_garbage(upstream, answer, reason):
    realm = RealmFactory(kind="code", url="", code_url=upstream.url("/fn"))
    upstream.reply("/fn", answer)

    with pytest.raises(UpstreamFailure) as raised:
        fetch(realm, SecretFactory(realm=realm))

    assert raised.value.outcome == "invalid_response"
    assert reason in raised.value.detail
