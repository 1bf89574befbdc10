"""System checks for the console's access settings (clients.sso): errors at start-up."""

from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, register
from django.core.exceptions import ValidationError

from clients.sso import parse_networks
from tokenserver.jsonpaths import validate_success_conditions


def _url_error(name: str, value: str, id: str) -> list[Error]:
    # Not Django's URLValidator: an internal host name without a dot
    # (http://users:8080/validate) is a fine address for the user service.
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.hostname:
        return []
    return [Error(f"{name} is {value!r}, not an http or https URL.", id=id)]


@register()
def console_allow_list_check(app_configs, **kwargs):
    errors = []
    for position, entry in enumerate(settings.TOKENSERVER_CONSOLE_ALLOWED_IPS, start=1):
        try:
            parse_networks((entry,))
        except ValueError:
            errors.append(
                Error(
                    f"TOKENSERVER_CONSOLE_ALLOWED_IPS entry {position} ({entry!r}) is not an "
                    "IP address or CIDR.",
                    hint="Write addresses and networks: 10.0.0.0/8, 192.0.2.7, 2001:db8::/32.",
                    id="clients.E001",
                )
            )
    return errors


@register()
def console_sso_check(app_configs, **kwargs):
    if not settings.TOKENSERVER_SSO_LOGIN_URL:
        if settings.TOKENSERVER_SSO_EXCLUSIVE:
            return [
                Error(
                    "TOKENSERVER_SSO_EXCLUSIVE is on but TOKENSERVER_SSO_LOGIN_URL is not set: "
                    "nobody could sign in to the console.",
                    id="clients.E002",
                )
            ]
        return []
    errors = _url_error(
        "TOKENSERVER_SSO_LOGIN_URL", settings.TOKENSERVER_SSO_LOGIN_URL, "clients.E003"
    )
    if not settings.TOKENSERVER_SSO_VALIDATE_URL:
        errors.append(
            Error(
                "TOKENSERVER_SSO_LOGIN_URL is set but TOKENSERVER_SSO_VALIDATE_URL is not: "
                "the console cannot check who signed in.",
                id="clients.E004",
            )
        )
    else:
        errors += _url_error(
            "TOKENSERVER_SSO_VALIDATE_URL", settings.TOKENSERVER_SSO_VALIDATE_URL, "clients.E003"
        )
    if settings.TOKENSERVER_SSO_LOGOUT_URL:
        errors += _url_error(
            "TOKENSERVER_SSO_LOGOUT_URL", settings.TOKENSERVER_SSO_LOGOUT_URL, "clients.E003"
        )
    rules = settings.TOKENSERVER_SSO_MATCH
    try:
        validate_success_conditions(rules)
    except ValidationError as exc:
        errors.append(Error(f"TOKENSERVER_SSO_MATCH: {' '.join(exc.messages)}", id="clients.E005"))
    else:
        if not rules:
            errors.append(
                Error(
                    "TOKENSERVER_SSO_MATCH is empty: any JSON answer of the user service "
                    "would sign its uid in.",
                    hint='Give the rules a valid answer meets, e.g. [["code", 0]].',
                    id="clients.E005",
                )
            )
    for name in ("TOKENSERVER_SSO_TIMEOUT", "TOKENSERVER_SSO_CACHE_TTL"):
        if not getattr(settings, name) > 0:
            errors.append(Error(f"{name} must be a positive number of seconds.", id="clients.E006"))
    return errors
