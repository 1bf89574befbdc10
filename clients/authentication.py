"""DRF authentication and permissions for clients (bearer access tokens) and staff."""

from dataclasses import dataclass

from django.conf import settings
from rest_framework import authentication, exceptions, permissions

from clients.access_tokens import Claims, InvalidAccessToken, access_token_verify
from clients.failures import auth_failure_record, auth_failures_exceeded
from clients.scopes import pattern_allows


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
        header = authentication.get_authorization_header(request).split()
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
    Staff HTTP Basic, with failures counted per address like the client
    credentials exchange: past TOKENSERVER_AUTH_FAILURES_PER_MINUTE, 429.
    """

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != b"basic":
            return None
        address = request.META.get("REMOTE_ADDR", "")
        if auth_failures_exceeded(address, settings.TOKENSERVER_AUTH_FAILURES_PER_MINUTE):
            raise exceptions.Throttled(wait=60, detail="Too many failed attempts.")
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            auth_failure_record(address)
            raise


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
