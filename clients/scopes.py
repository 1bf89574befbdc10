"""The rights a client can hold, and the realm/key patterns it may read."""

from fnmatch import fnmatchcase

TOKEN_READ = "token:read"
TOKEN_FLUSH = "token:flush"
REALM_READ = "realm:read"
REALM_WRITE = "realm:write"
SECRET_WRITE = "secret:write"
LOG_READ = "log:read"

#: Every scope, in the order they are listed.
SCOPES = (TOKEN_READ, TOKEN_FLUSH, REALM_READ, REALM_WRITE, SECRET_WRITE, LOG_READ)


def pattern_allows(patterns, realm_id: str, key: str) -> bool:
    """
    Whether one of `patterns` ("wxgzh/*", "*/billing-*", "wxgzh/app") matches
    `realm_id/key` (shell-style wildcards, case-sensitive).
    """
    target = f"{realm_id}/{key}"
    return any(fnmatchcase(target, pattern) for pattern in patterns)


def validate_scopes(scopes) -> list[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"Unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}.")
    return [scope for scope in SCOPES if scope in set(scopes)]


def validate_pattern(pattern: str) -> str:
    if pattern.count("/") != 1 or not all(pattern.split("/")):
        raise ValueError(f"Pattern {pattern!r} must be REALM/KEY, e.g. wxgzh/* or */billing-*.")
    return pattern
