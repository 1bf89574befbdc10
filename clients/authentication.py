"""DRF authentication and permissions for clients (bearer access tokens) and staff."""

import base64
import binascii
from dataclasses import dataclass

from rest_framework import authentication, exceptions, permissions

from clients.access_tokens import Claims, InvalidAccessToken, access_token_verify
from clients.failures import SignInLocked, staff_sign_in
from clients.scopes import pattern_allows


def _authorization_header(request) -> bytes:
    """
    DRF's get_authorization_header, with text that is not latin-1 a 401: real
    servers hand headers over as latin-1, only Django's test client can pass
    other text (which DRF's encode() turned into a 500).
    """
    try:
        return authentication.get_authorization_header(request)
    except UnicodeEncodeError:
        raise exceptions.AuthenticationFailed("Malformed authorization header.") from None


@dataclass(frozen=True)
class ClientUser:
    """The principal of a request made with a client's access token."""

    claims: Claims
    is_authenticated: bool = True
    is_active: bool = True
    is_staff: bool = False
    is_anonymous: bool = False

    def get_username(self) -> str:
        return self.claims.client_id

    def has_scope(self, scope: str) -> bool:
        return scope in self.claims.scopes

    def may_read(self, realm_id: str, key: str) -> bool:
        return pattern_allows(self.claims.allow, realm_id, key)

    @property
    def pk(self):  # DRF's throttles and logging look for it
        return self.claims.client_id


class BearerAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <access token>`, verified without a database query."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = _authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Bearer authorization header.")
        try:
            claims = access_token_verify(header[1].decode("latin-1"))
        except InvalidAccessToken as error:
            raise exceptions.AuthenticationFailed(f"Access token {error.reason}.") from None
        return ClientUser(claims), claims

    def authenticate_header(self, request):
        return f'{self.keyword} realm="api"'


class ThrottledBasicAuthentication(authentication.BasicAuthentication):
    """
    Staff HTTP Basic through clients.failures.staff_sign_in, as the console
    signs in: failures are counted per address and username, and per
    address; while locked out, 429. A header that cannot be read is a failed
    sign-in too (of no username).
    """

    def authenticate(self, request):
        header = _authorization_header(request).split()
        if not header or header[0].lower() != b"basic":
            return None
        username, password = _basic_pair(header)
        try:
            user = staff_sign_in(request, username, password)
        except SignInLocked as locked:
            # `wait` set apart: given to the constructor, DRF adds a second sentence.
            throttled = exceptions.Throttled(detail=locked.lockout.message())
            throttled.wait = locked.lockout.retry_after  # → Retry-After
            raise throttled from None
        if user is None:
            if username is None:
                raise exceptions.AuthenticationFailed("Malformed HTTP Basic credentials.")
            raise exceptions.AuthenticationFailed("Invalid username/password.")
        return user, None


def _basic_pair(header: list[bytes]) -> tuple[str | None, str | None]:
    """(username, password) of `Basic <base64>`, read as DRF does; (None, None) if unreadable."""
    if len(header) != 2:
        return None, None
    try:
        raw = base64.b64decode(header[1], validate=True)
    except (binascii.Error, ValueError):
        return None, None
    try:
        decoded = raw.decode()
    except UnicodeDecodeError:
        decoded = raw.decode("latin-1")
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else (None, None)


class StaffOrScope(permissions.BasePermission):
    """
    Staff users (console session or HTTP Basic) may call everything; a client
    needs the scope the view names for the method (`view.required_scope(request)`).
    """

    message = "Staff or client credentials with the right scope are required."

    def has_permission(self, request, view):
        user = request.user
        if not user or not user.is_authenticated:
            return False
        if isinstance(user, ClientUser):
            scope = view.required_scope(request)
            if scope and not user.has_scope(scope):
                raise exceptions.PermissionDenied(f"This call needs the scope {scope}.")
            return True
        return bool(user.is_staff)
