"""Proof that a request into the sidebar really came from Zendesk or Help Scout.

Zendesk posts an RS256 JWT signed with the app's key pair (``signedUrls: true``); Help Scout
signs with HMAC-SHA1 over the raw body (legacy Dynamic App) or over the query parameters (App
Platform). Every failure raises ``Unauthorized`` whose ``str()`` says why, for the logs only.
The claims prove the request came from the app; who the agent is and what they may do is
decided from our own records, never from these claims. The one claim we read for identity is
``sub``, the user running the app: the user's API URL on this subdomain
(``https://{subdomain}.zendesk.com/api/v2/users/{id}.json``) or that user's bare id. Both are
Zendesk's signed word (the documentation we could read types ``sub`` as a string without
showing its form), so both are taken; a URL on another subdomain or anything else is not, and
nothing the browser sends ever is.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from core.errors import Unauthorized
from core.helpdesks.base import signed_by_any

ZENDESK_ALGORITHM = "RS256"
ZENDESK_LOCATION = "ticket_sidebar"
HELPSCOUT_SIGNATURE = "X-HelpScout-Signature"


@dataclass(frozen=True)
class ZendeskClaims:
    """What a verified Zendesk sidebar token says about where it came from."""

    subdomain: str
    installation_id: str
    # The Zendesk user id from `sub`; None when `sub` is missing or not this subdomain's user URL.
    user_id: str | None
    location: str
    expires_at: int


def verify_zendesk_token(
    token: str,
    *,
    public_key_pem: str,
    subdomain: str,
    installation_id: str | None = None,
    now: float | None = None,
    leeway: int = 30,
) -> ZendeskClaims:
    """Verify a Zendesk signed-URL JWT and return its claims, or raise Unauthorized."""
    if not isinstance(token, str) or not token:
        raise Unauthorized("zendesk token missing")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"zendesk token malformed: {exc}") from exc
    # Checked before any key is used: "none" and HS256-with-the-public-key are the classic
    # forgeries, and refusing them by name keeps that independent of the library's defaults.
    if header.get("alg") != ZENDESK_ALGORITHM:
        raise Unauthorized(f"zendesk token alg {header.get('alg')!r} is not RS256")
    try:
        payload = jwt.decode(
            token,
            _rsa_public_key(public_key_pem),
            algorithms=[ZENDESK_ALGORITHM],
            options={
                "require": ["exp", "iat", "aud", "iss"],
                # Times, audience and issuer are checked below, against `now` and with the
                # installation id possibly unknown; PyJWT only checks the signature here.
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "verify_aud": False,
                "verify_iss": False,
                "verify_sub": False,
            },
        )
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"zendesk token rejected: {exc}") from exc

    _check_times(payload, time.time() if now is None else now, leeway)
    found_installation = _check_audience(payload.get("aud"), subdomain, installation_id)
    issuer = payload.get("iss")
    if issuer not in (f"{subdomain}.zendesk.com", f"https://{subdomain}.zendesk.com"):
        raise Unauthorized(f"zendesk token issuer {issuer!r} is not {subdomain}.zendesk.com")
    context = payload.get("context")
    location = context.get("location") if isinstance(context, dict) else None
    if location != ZENDESK_LOCATION:
        raise Unauthorized(f"zendesk token location {location!r} is not {ZENDESK_LOCATION}")
    return ZendeskClaims(
        subdomain=subdomain,
        installation_id=found_installation,
        user_id=_user_from_subject(payload.get("sub"), subdomain),
        location=location,
        expires_at=int(payload["exp"]),
    )


def verify_helpscout_body(raw_body: bytes, signature: str | None, secret: str) -> None:
    """Check a legacy Dynamic App request: base64 HMAC-SHA1 of the raw body, or Unauthorized."""
    _check_hmac(raw_body, signature, secret)


def verify_helpscout_params(
    params: Sequence[tuple[str, str]] | Mapping[str, str],
    secret: str,
    own_params: Collection[str] = (),
) -> None:
    """Check an App Platform request: HMAC-SHA1 over the other query params as PHP JSON."""
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    signatures = [value for name, value in pairs if name == HELPSCOUT_SIGNATURE]
    if len(signatures) != 1:
        raise Unauthorized(f"helpscout request has {len(signatures)} signature params")
    # A dict built from the pairs behaves like PHP's $_GET: a repeated name keeps its first
    # position and its last value.
    signed = {
        name: value
        for name, value in pairs
        if name != HELPSCOUT_SIGNATURE and name not in own_params
    }
    # Help Scout's example computes the HMAC over PHP's json_encode (``/`` and non-ASCII
    # escaped); apps in production compare it with a plain JSON encoder's output (nothing but
    # quotes, backslashes and control characters escaped). The two differ only for values with
    # ``/`` or non-ASCII characters, and either is an HMAC under our secret: both are taken.
    plain = json.dumps(signed, ensure_ascii=False, separators=(",", ":")) if signed else "[]"
    try:
        _check_hmac(_php_json_encode(signed).encode("ascii"), signatures[0], secret)
    except Unauthorized:
        _check_hmac(plain.encode("utf-8"), signatures[0], secret)


def _rsa_public_key(pem: str) -> RSAPublicKey:
    try:
        key = load_pem_public_key(pem.encode("utf-8"))
    except (ValueError, TypeError) as exc:
        raise Unauthorized("zendesk public key is not a PEM public key") from exc
    if not isinstance(key, RSAPublicKey):
        raise Unauthorized("zendesk public key is not an RSA key")
    return key


def _numeric_claim(payload: dict[str, Any], name: str) -> float:
    value = payload[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthorized(f"zendesk token {name} is not a number")
    return float(value)


def _check_times(payload: dict[str, Any], now: float, leeway: int) -> None:
    if _numeric_claim(payload, "exp") + leeway <= now:
        raise Unauthorized("zendesk token expired")
    if _numeric_claim(payload, "iat") - leeway > now:
        raise Unauthorized("zendesk token issued in the future")
    if "nbf" in payload and _numeric_claim(payload, "nbf") - leeway > now:
        raise Unauthorized("zendesk token not yet valid")


def _check_audience(audience: Any, subdomain: str, installation_id: str | None) -> str:
    """The installation id from `aud`, which must name this subdomain's installation."""
    pattern = (
        rf"https://{re.escape(subdomain)}\.zendesk\.com/api/v2/apps/installations/([0-9]+)\.json"
    )
    match = re.fullmatch(pattern, audience) if isinstance(audience, str) else None
    if match is None:
        raise Unauthorized(
            f"zendesk token audience {audience!r} is not an installation on {subdomain}.zendesk.com"
        )
    if installation_id is not None and match.group(1) != installation_id:
        raise Unauthorized(f"zendesk token is for installation {match.group(1)}")
    return match.group(1)


def _user_from_subject(subject: Any, subdomain: str) -> str | None:
    """The user id in `sub`: that user's API URL on this subdomain, or the bare id."""
    url = rf"https://{re.escape(subdomain)}\.zendesk\.com/api/v2/users/([0-9]+)\.json"
    if not isinstance(subject, str):
        return None
    match = re.fullmatch(url, subject, re.ASCII) or re.fullmatch(r"([0-9]+)", subject, re.ASCII)
    return match.group(1) if match else None


def _check_hmac(message: bytes, signature: str | None, secret: str) -> None:
    if not secret:
        raise Unauthorized("helpscout secret is not configured")
    if not signature:
        raise Unauthorized("helpscout signature missing")
    if not signed_by_any(message, signature, [secret], hashlib.sha1):
        raise Unauthorized("helpscout signature mismatch")


_PHP_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f"}
_PHP_SHORT_ESCAPES |= {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _php_json_string(text: str) -> str:
    """`text` as PHP's json_encode writes it by default: `/` and non-ASCII escaped."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _PHP_SHORT_ESCAPES:
            out.append(_PHP_SHORT_ESCAPES[char])
        elif code < 0x20:
            out.append(f"\\u{code:04x}")
        elif code < 0x80:
            out.append(char)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
    out.append('"')
    return "".join(out)


def _php_json_encode(params: Mapping[str, str]) -> str:
    # PHP encodes an empty array as a list, so no params signs "[]", not "{}".
    if not params:
        return "[]"
    members = (f"{_php_json_string(k)}:{_php_json_string(v)}" for k, v in params.items())
    return "{" + ",".join(members) + "}"
