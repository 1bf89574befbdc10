"""
JWT assertions (RFC 7523): what a realm's `jwt` settings sign with a secret's
private key, for the JWT-bearer grant (`assertion=$jwt`) and for `private_key_jwt`
client authentication (`client_assertion=$jwt`).

Pure functions of the realm's settings and the secret's values: no I/O. The
upstream client calls `sign_assertion` once per fetch; a key that cannot be read
raises `KeyUnreadable`, whose message names the value (key_2) and never shows it.
"""

import base64
import binascii
import re
import time
import uuid
from importlib import import_module

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_der_private_key

from realms.validators import JWT_MAX_LIFETIME, render_template

#: A PEM block: its label and its base64 body (line breaks, if any, anywhere).
_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)

#: The curve each ECDSA algorithm signs on.
_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1}


class KeyUnreadable(ValueError):
    """The secret's private key cannot be used; the message never holds the key."""


def load_private_key(text: str, *, name: str = "the key"):
    """
    A private key from a secret value, in whichever form it was pasted: PEM with
    line breaks (the API, a JSON file's `private_key`), PEM whose line breaks were
    lost (a console password input drops them) or written as literal `\\n` escapes
    (copied from a service-account JSON file as text), or bare base64 DER. PKCS#8,
    PKCS#1 (RSA) and SEC1 (EC); no passphrase.
    """
    text = text.strip().replace("\\n", "\n")
    match = _PEM.search(text)
    if match:
        if "ENCRYPTED" in match.group(1) or "Proc-Type:" in match.group(2):
            raise KeyUnreadable(
                f"the private key in {name} is encrypted; store it without a passphrase"
            )
        body = match.group(2)
    else:
        body = text
    try:
        der = base64.b64decode(re.sub(r"\s+", "", body), validate=True)
    except (binascii.Error, ValueError):
        raise KeyUnreadable(f"the private key in {name} is not PEM or base64") from None
    try:
        return load_der_private_key(der, password=None)
    except (ValueError, TypeError):  # cryptography's words for "not a key"
        raise KeyUnreadable(f"the private key in {name} cannot be read") from None
    except Exception:  # noqa: BLE001 - an unsupported key type raises its own class
        raise KeyUnreadable(f"the private key in {name} is of an unsupported type") from None


def _check_key_fits(key, alg: str, name: str) -> None:
    if alg.startswith(("RS", "PS")):
        if not isinstance(key, rsa.RSAPrivateKey):
            raise KeyUnreadable(f"{alg} needs an RSA private key; {name} holds another kind")
        if key.key_size < 2048:
            raise KeyUnreadable(f"the RSA key in {name} has {key.key_size} bits; use 2048 or more")
    else:
        curve = _CURVES.get(alg)
        if curve is None:
            return  # an unknown alg is the settings' error (validate_jwt_config), not the key's
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, curve):
            raise KeyUnreadable(
                f"{alg} needs an EC private key on {curve.name}; {name} holds another"
            )


def key_refusal(config: dict, values: dict[str, str]) -> tuple[str, str] | None:
    """
    Why the private key the `jwt` settings name cannot sign, as (value name,
    message), or None: a key that is set but unreadable or of the wrong kind for
    `alg`. For save-time checks of a secret; an unset key is no error there.
    """
    name = key_value_name(config)
    key_text = render_template(config.get("key") or "", values)
    if not key_text.strip():
        return None
    try:
        _check_key_fits(load_private_key(key_text, name=name), config.get("alg", ""), name)
    except KeyUnreadable as refusal:
        return name, str(refusal)
    return None


def key_value_name(config: dict) -> str:
    """Which secret value the key template names (`key_2`), for messages."""
    names = re.findall(r"\$\{?(key_[1-5])", config.get("key", ""))
    return names[0] if names else "the key"


def sign_assertion(config: dict, values: dict[str, str], token_url: str, now=None) -> str:
    """
    The signed assertion for one fetch: claims `iss`, `sub` (when set), `aud`
    (default `token_url`), `scope` (when set), `iat`, `exp` (iat + lifetime, at
    most an hour), `jti` (fresh each time, so a provider that remembers them
    accepts each fetch once); header `kid` when set. Raises KeyUnreadable.
    """
    alg = config["alg"]
    name = key_value_name(config)
    key_text = render_template(config["key"], values)
    if not key_text.strip():
        raise KeyUnreadable(f"the private key ({name}) is not set")
    key = load_private_key(key_text, name=name)
    _check_key_fits(key, alg, name)

    issued = int(now if now is not None else time.time())
    lifetime = min(int(config.get("lifetime") or JWT_MAX_LIFETIME), JWT_MAX_LIFETIME)
    claims = {
        "iss": render_template(config["iss"], values),
        "aud": render_template(config.get("aud") or "", values) or token_url,
        "iat": issued,
        "exp": issued + lifetime,
        "jti": uuid.uuid4().hex,
    }
    for optional in ("sub", "scope"):
        rendered = render_template(config.get(optional) or "", values)
        if rendered:
            claims[optional] = rendered
    kid = render_template(config.get("kid") or "", values)
    # PyJWT is imported on the first signature, not with this module: it brings
    # cryptography's other algorithms along (several MiB), and every worker imports
    # this module (secret checks) while few installations have a JWT realm.
    jwt = import_module("jwt")
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None)
