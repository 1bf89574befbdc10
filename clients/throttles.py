from rest_framework.throttling import SimpleRateThrottle

from clients.authentication import ClientUser


class ClientTokenRateThrottle(SimpleRateThrottle):
    """Requests per client on the token endpoint (TOKENSERVER_TOKEN_RATE); staff are not limited."""

    scope = "token"

    def get_cache_key(self, request, view):
        if not isinstance(request.user, ClientUser):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.get_username()}
