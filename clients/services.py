"""Clients: create, exchange credentials for access tokens, revoke."""

import hmac

from django.core.exceptions import ValidationError
from django.db import transaction

from clients.access_tokens import access_token_issue, client_revoke_tokens
from clients.failures import auth_failure_record, auth_lockout
from clients.models import Client
from clients.scopes import validate_pattern, validate_scopes
from tokenserver.errors import NotFound, ServiceError

#: Compared against when the client does not exist, so a wrong id costs
#: the same work as a wrong secret.
_DUMMY_DIGEST = Client.digest("no such client")


class InvalidClient(ServiceError):
    status_code = 401
    code = "invalid_client"


class InvalidScope(ServiceError):
    status_code = 400
    code = "invalid_scope"


class TooManyFailures(ServiceError):
    status_code = 429
    code = "too_many_failures"


@transaction.atomic
def client_create(name: str, *, scopes, allow=(), comment: str = "") -> tuple[Client, str]:
    """A new client; returns it and its secret (shown once: only a digest is kept)."""
    try:
        scopes = validate_scopes(scopes)
        allow = [validate_pattern(pattern) for pattern in allow]
    except ValueError as error:
        raise ValidationError(str(error)) from None
    client = Client(name=name, scopes=scopes, allow=allow, comment=comment)
    secret = client.set_secret()
    client.full_clean(exclude=["client_id", "secret_digest"])
    client.save()
    return client, secret


@transaction.atomic
def client_save(client: Client) -> Client:
    """
    Save a client's changes (the console's form, the commands). Access tokens
    carry the rights they were issued with, so changed rights (scopes,
    patterns, or a disabled client) revoke the tokens issued before, once the
    change is committed.
    """
    revoke = client.rights_changed()
    client.full_clean(exclude=["client_id", "secret_digest"])
    client.save()
    if revoke:
        transaction.on_commit(lambda: client_revoke_tokens(client.client_id))
    return client


def client_delete(client: Client) -> None:
    """
    Delete a client and revoke its tokens: they verify without the
    database, so they would otherwise live until they expire.
    """
    client_id = client.client_id
    client.delete()
    client_revoke_tokens(client_id)


def client_get(client_id: str) -> Client:
    client = Client.objects.filter(client_id=client_id).first()
    if client is None:
        raise NotFound(f"No client {client_id!r}.")
    return client


def client_token_exchange(
    client_id: str | None, client_secret: str | None, *, scope: str | None, address: str
):
    """
    The client credentials grant: an access token for a client that proves
    its secret, with the scopes it asks for (a subset of its own; all of
    them when it asks for none). Wrong credentials raise InvalidClient, the
    same whether the client exists or not, and so do unreadable ones (None:
    the caller could not read them; text that is no UTF-8). Each counts as a
    failed sign-in of the client id from `address`; past the limits
    (clients.failures) TooManyFailures is raised without looking at the secret.
    """
    lockout = auth_lockout(address, client_id or "")
    if lockout is not None:
        raise TooManyFailures(
            lockout.message(account="client", attempts="attempts"),
            retry_after=lockout.retry_after,
        )
    if client_id is None or client_secret is None:
        auth_failure_record(address, client_id or "")
        raise InvalidClient("Malformed client credentials.")
    readable = client_id and _is_text(client_id)  # else no client has it: no query
    client = Client.objects.filter(client_id=client_id).first() if readable else None
    digest = client.secret_digest if client is not None else _DUMMY_DIGEST
    matches = _is_text(client_secret) and hmac.compare_digest(digest, Client.digest(client_secret))
    if client is None or not matches or not client.enabled:
        auth_failure_record(address, client_id or "")
        raise InvalidClient("Client authentication failed.")
    granted = list(client.scopes)
    if scope and not _is_text(scope):
        raise InvalidScope("scope must be text.")
    if scope:
        asked = scope.split()
        extra = sorted(set(asked) - set(granted))
        if extra:
            raise InvalidScope(f"This client may not have scope(s): {', '.join(extra)}.")
        granted = [s for s in granted if s in asked]
    return access_token_issue(client.client_id, granted, allow=client.allow)


def _is_text(value: str | None) -> bool:
    """
    Whether `value` is text the database and the digest can take: JSON lets a
    lone surrogate through ("\\ud800"), which no UTF-8 encoder accepts.
    """
    if value is None:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def client_revoke(client_id: str, *, disable: bool = False) -> Client:
    """Revoke every access token a client holds now; with `disable`, it gets no new ones."""
    client = client_get(client_id)
    client_revoke_tokens(client.client_id)
    if disable and client.enabled:
        client.enabled = False
        client.save(update_fields=["enabled", "updated_at"])
    return client
