from rest_framework.throttling import SimpleRateThrottle

from clients.authentication import ClientUser
from tokenserver.cache import CACHE_ERRORS, cache_available, health


class ClientTokenRateThrottle(SimpleRateThrottle):
    """
    Requests per client on the token endpoint (TOKENSERVER_TOKEN_RATE); staff
    are not limited. While the cache is down the limit is not enforced: apps
    keep getting their tokens.
    """

    scope = "token"

    def get_cache_key(self, request, view):
        if not isinstance(request.user, ClientUser):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.get_username()}

    def allow_request(self, request, view):
        if not cache_available():
            return True
        try:
            return super().allow_request(request, view)
        except CACHE_ERRORS as error:
            health.failed(error)
            return True
