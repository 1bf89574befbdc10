"""
The console's door (/admin/): an address allow-list, and an optional external
sign-in (SSO) through the organisation's user service.

ConsoleAllowList (first in MIDDLEWARE): a console request from an address
outside TOKENSERVER_CONSOLE_ALLOWED_IPS is refused (403) before anything else.

ConsoleSSO (after AuthenticationMiddleware), on when TOKENSERVER_SSO_LOGIN_URL
is set: the user service's `uid` and `ticket` cookies are POSTed as JSON to
TOKENSERVER_SSO_VALIDATE_URL; the answer signs the uid's staff user in when
every TOKENSERVER_SSO_MATCH rule holds (the realms' success-condition rules,
tokenserver.jsonpaths). A valid (uid, ticket) is cached for
TOKENSERVER_SSO_CACHE_TTL seconds under a digest, never the ticket itself. A
console request with no valid cookies is redirected (307) to the login URL.
Unless TOKENSERVER_SSO_EXCLUSIVE is on, a session signed in with a console
password stays valid and Django's own sign-in page stays reachable.

The validate URL is not passed through tokenserver.netguard: netguard guards
the token endpoints that API and console users may enter, while this URL is
deployment configuration (like DATABASE_URL), usually on a private network
netguard would refuse.
"""

import hashlib
import ipaddress
import logging
from functools import lru_cache
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from django.conf import settings
from django.contrib import auth
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from tokenserver.addresses import client_address
from tokenserver.cache import CACHE_ERRORS
from tokenserver.jsonpaths import condition_holds

log = logging.getLogger(__name__)

#: Where tokenserver/urls.py mounts the console.
CONSOLE_PREFIX = "/admin/"

#: Session key: the uid a session was signed in for through the user service.
SESSION_UID = "_sso_uid"

#: How Django signs in a user the user service vouched for.
BACKEND = "django.contrib.auth.backends.ModelBackend"


def is_console(request) -> bool:
    return request.path_info.startswith(CONSOLE_PREFIX)


# --- Address allow-list ------------------------------------------------------------


@lru_cache(maxsize=8)
def parse_networks(entries: tuple[str, ...]) -> list:
    """Addresses and CIDRs (ValueError on a malformed one: the system check reports it)."""
    return [ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip()]


def address_allowed(address: str) -> bool:
    """Whether TOKENSERVER_CONSOLE_ALLOWED_IPS lets `address` reach the console (empty: all)."""
    networks = parse_networks(tuple(settings.TOKENSERVER_CONSOLE_ALLOWED_IPS))
    if not networks:
        return True
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])  # without an IPv6 zone
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped:  # ::ffff:10.1.2.3 is 10.1.2.3
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def refused_page(request, status: int, title: str, message: str, *, password_sign_in=False):
    """A plain console page saying why the request went no further."""
    context = {"title": title, "message": message}
    if password_sign_in:
        context["password_sign_in"] = reverse("admin:login")
    return render(request, "clients/console_refused.html", context, status=status)


class ConsoleAllowList:
    """Refuse (403) console requests from outside TOKENSERVER_CONSOLE_ALLOWED_IPS."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if is_console(request):
            address = client_address(request)
            if not address_allowed(address):
                log.warning("console request from %s refused: not an allowed address", address)
                return refused_page(
                    request,
                    403,
                    "Not allowed from this address",
                    "The console is not reachable from your network address.",
                )
        return self.get_response(request)


# --- External sign-in ------------------------------------------------------------------


class SSOUnavailable(Exception):
    """The user service gave no usable answer (unreachable, timeout, 5xx, not JSON)."""


class SignInRefused(Exception):
    """The user service vouched for a uid that may not use the console."""


def sso_enabled() -> bool:
    return bool(settings.TOKENSERVER_SSO_LOGIN_URL)


def _cache_key(uid: str, ticket: str) -> str:
    # A digest of both: neither the ticket nor an unbounded uid ever becomes a key.
    ticket_digest = hashlib.sha256(ticket.encode("utf-8", "surrogatepass")).hexdigest()
    pair = f"{uid}\0{ticket_digest}".encode("utf-8", "surrogatepass")
    return "sso:valid:" + hashlib.sha256(pair).hexdigest()


def _failed_rules(document) -> list[str]:
    """The TOKENSERVER_SSO_MATCH rules the answer does not satisfy, as `path == value`."""
    failed = []
    for path, expected in settings.TOKENSERVER_SSO_MATCH:
        try:
            holds = condition_holds(path, expected, document)
        except Exception:  # noqa: BLE001 - jsonpath-ng raises anything on odd documents
            holds = False
        if not holds:
            failed.append(f"{path} == {expected!r}")
    return failed


def ticket_valid(uid: str, ticket: str) -> bool:
    """
    Whether the user service vouches for (uid, ticket): True when every match
    rule holds on its answer, False when one does not. Raises SSOUnavailable
    when the service gives no usable answer. Only a True is cached.
    """
    key = _cache_key(uid, ticket)
    try:
        if cache.get(key) is not None:
            return True
    except CACHE_ERRORS:
        pass  # no cache: ask the service
    fields = settings.TOKENSERVER_SSO_UID_FIELD, settings.TOKENSERVER_SSO_TICKET_FIELD
    timeout = settings.TOKENSERVER_SSO_TIMEOUT
    try:
        response = requests.post(
            settings.TOKENSERVER_SSO_VALIDATE_URL,
            json={fields[0]: uid, fields[1]: ticket},
            timeout=timeout,
            allow_redirects=False,
        )
    except requests.Timeout:
        raise SSOUnavailable(f"did not answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        # The exception's text may quote the request; its type says enough.
        raise SSOUnavailable(f"could not be reached ({type(exc).__name__})") from None
    if response.status_code >= 500:
        raise SSOUnavailable(f"answered HTTP {response.status_code}")
    try:
        document = response.json()
    except ValueError:
        raise SSOUnavailable(
            f"answered HTTP {response.status_code} with something that is not JSON"
        ) from None
    failed = _failed_rules(document)
    if failed:
        log.info(
            "console sign-in refused for uid %r: the user service's answer (HTTP %s) fails %s",
            uid,
            response.status_code,
            "; ".join(failed),
        )
        return False
    try:
        cache.set(key, uid, timeout=settings.TOKENSERVER_SSO_CACHE_TTL)
    except CACHE_ERRORS:
        pass  # the next request asks the service again
    return True


def forget_ticket(uid: str, ticket: str) -> None:
    """Drop a cached validation (on sign-out: the ticket is not honoured from the cache)."""
    try:
        cache.delete(_cache_key(uid, ticket))
    except CACHE_ERRORS:
        pass


def sso_user(uid: str):
    """
    The staff user a validated uid signs in as: an existing active staff user
    with that username, or (TOKENSERVER_SSO_CREATE_USERS) a new staff user in
    TOKENSERVER_SSO_GROUP. Raises SignInRefused otherwise.
    """
    users = get_user_model()
    try:
        UnicodeUsernameValidator()(uid)
        if len(uid) > users._meta.get_field(users.USERNAME_FIELD).max_length:
            raise ValidationError("too long")
    except ValidationError:
        raise SignInRefused("the user service's uid is not a usable username") from None
    user = users._default_manager.filter(**{users.USERNAME_FIELD: uid}).first()
    if user is None:
        if not settings.TOKENSERVER_SSO_CREATE_USERS:
            raise SignInRefused("no console account for this user")
        user, created = users._default_manager.get_or_create(
            **{users.USERNAME_FIELD: uid}, defaults={"is_staff": True}
        )
        if created:
            user.set_unusable_password()  # signs in through the user service only
            user.save(update_fields=["password"])
            if settings.TOKENSERVER_SSO_GROUP:
                group, _ = Group.objects.get_or_create(name=settings.TOKENSERVER_SSO_GROUP)
                user.groups.add(group)
            log.info("console user %r created on first sign-in through the user service", uid)
    if not (user.is_active and user.is_staff):
        raise SignInRefused("this account may not use the console")
    return user


def login_redirect(request) -> HttpResponseRedirect:
    """307 to the user service's login page, which sends the browser back here afterwards."""
    parts = urlsplit(settings.TOKENSERVER_SSO_LOGIN_URL)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.append((settings.TOKENSERVER_SSO_REDIRECT_PARAM, request.build_absolute_uri()))
    response = HttpResponseRedirect(urlunsplit(parts._replace(query=urlencode(query))))
    response.status_code = 307  # the method and body are kept (a POST stays a POST)
    return response


def sso_sign_out(request, response):
    """
    After the console's sign-out: the user service's cookies cleared (on their
    domain), their cached validation dropped, and the browser sent on to
    TOKENSERVER_SSO_LOGOUT_URL when set.
    """
    if not sso_enabled():
        return response
    uid = request.COOKIES.get(settings.TOKENSERVER_SSO_UID_COOKIE)
    ticket = request.COOKIES.get(settings.TOKENSERVER_SSO_TICKET_COOKIE)
    if uid is not None and ticket is not None:
        forget_ticket(uid, ticket)
    if settings.TOKENSERVER_SSO_LOGOUT_URL:
        response = HttpResponseRedirect(settings.TOKENSERVER_SSO_LOGOUT_URL)
    for name in (settings.TOKENSERVER_SSO_UID_COOKIE, settings.TOKENSERVER_SSO_TICKET_COOKIE):
        response.delete_cookie(name, domain=settings.TOKENSERVER_SSO_COOKIE_DOMAIN)
    return response


class ConsoleSSO:
    """Sign console requests in through the user service (see the module's docstring)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if sso_enabled() and is_console(request) and not self.ignored(request):
            answer = self.sign_in(request)
            if answer is not None:
                return answer
        return self.get_response(request)

    @staticmethod
    def ignored(request) -> bool:
        path = request.path_info
        if path == reverse("admin:logout"):  # sign-out works whatever the cookies say
            return True
        return any(path.startswith(prefix) for prefix in settings.TOKENSERVER_SSO_IGNORE_PATHS)

    def sign_in(self, request):
        """None to go on to the view, or the answer that replaces it."""
        exclusive = settings.TOKENSERVER_SSO_EXCLUSIVE
        user = request.user
        session_uid = request.session.get(SESSION_UID) if user.is_authenticated else None
        if user.is_authenticated and session_uid is None and not exclusive:
            return None  # signed in with a console password, which stays allowed
        # Unless SSO is exclusive, Django's own sign-in page stays reachable: the
        # user service is tried when its cookies are there, the password form otherwise.
        fallback = not exclusive and request.path_info == reverse("admin:login")

        uid = request.COOKIES.get(settings.TOKENSERVER_SSO_UID_COOKIE)
        ticket = request.COOKIES.get(settings.TOKENSERVER_SSO_TICKET_COOKIE)
        if uid is None or ticket is None:
            if fallback and uid is None and ticket is None:
                return None
            if settings.TOKENSERVER_SSO_MISSING_COOKIE_REDIRECTS:
                return self.not_signed_in(request, fallback)
        missing = settings.TOKENSERVER_SSO_MISSING_COOKIE
        try:
            valid = ticket_valid(
                missing if uid is None else uid, missing if ticket is None else ticket
            )
        except SSOUnavailable as exc:
            log.warning("console sign-in: the user service %s; nobody signed in", exc)
            if fallback:
                return None  # the password form, which the page below links to
            return refused_page(
                request,
                503,
                "Sign-in service unavailable",
                "The sign-in service did not answer properly, so nobody can be signed in "
                "right now. Try again in a moment.",
                password_sign_in=not exclusive,
            )
        # "Absent" stands for no user, whatever the service makes of it.
        if not valid or uid is None or ticket is None:
            if user.is_authenticated:
                auth.logout(request)
            return self.not_signed_in(request, fallback)
        if session_uid == uid:
            return None  # still the same, still valid
        try:
            account = sso_user(uid)
        except SignInRefused as exc:
            log.warning("console sign-in refused for uid %r: %s", uid, exc)
            if user.is_authenticated:
                auth.logout(request)
            return refused_page(
                request,
                403,
                "No console access",
                "You are signed in with the organisation, but this account may not use "
                "the console. Ask an administrator for access.",
            )
        auth.login(request, account, backend=BACKEND)
        request.session[SESSION_UID] = uid
        if exclusive and request.path_info == reverse("admin:login"):
            # The password form is not offered: on to where the sign-in was asked from.
            target = request.GET.get("next", "")
            safe = url_has_allowed_host_and_scheme(
                target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
            )
            return HttpResponseRedirect(target if safe else reverse("admin:index"))
        return None

    @staticmethod
    def not_signed_in(request, fallback: bool):
        return None if fallback else login_redirect(request)
