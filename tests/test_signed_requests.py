"""Signed requests from Zendesk and Help Scout: only genuine ones get through."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from core.errors import Unauthorized
from helpdesk_app.signed_requests import (
    ZendeskClaims,
    verify_helpscout_body,
    verify_helpscout_params,
    verify_zendesk_token,
)

NOW = 1_700_000_000
SUBDOMAIN = "acme"
INSTALLATION = "360001234567"
AUDIENCE = f"https://acme.zendesk.com/api/v2/apps/installations/{INSTALLATION}.json"
# Zendesk's documented form of `sub`: the API URL of the user running the app.
USER_URL = "https://acme.zendesk.com/api/v2/users/9001.json"


def _private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


APP_KEY = _private_key()
APP_PUBLIC_PEM = _public_pem(APP_KEY)
OTHER_KEY = _private_key()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(document: dict) -> str:
    return _b64url(json.dumps(document, separators=(",", ":")).encode())


def _claims(**changes) -> dict:
    claims = {
        "iss": "acme.zendesk.com",
        "aud": AUDIENCE,
        "iat": NOW - 5,
        "exp": NOW + 300,
        "sub": USER_URL,
        "context": {"product": "support", "location": "ticket_sidebar"},
        "qsh": "ignored",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(claims: dict | None = None, key: rsa.RSAPrivateKey = APP_KEY) -> str:
    return jwt.encode(_claims() if claims is None else claims, key, algorithm="RS256")


def _alg_none() -> str:
    return f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(_claims())}."


def _hs256_with_public_pem() -> str:
    """The algorithm-confusion forgery PyJWT refuses to mint: HMAC keyed with the public PEM."""
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{_segment(_claims())}"
    mac = hmac.new(APP_PUBLIC_PEM.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(mac)}"


def _payload_swapped() -> str:
    header, _, signature = _signed().split(".")
    return f"{header}.{_segment(_claims(sub=USER_URL.replace('9001', '1')))}.{signature}"


def test_valid_zendesk_token_gives_its_claims():
    claims = verify_zendesk_token(
        _signed(), public_key_pem=APP_PUBLIC_PEM, subdomain=SUBDOMAIN, now=NOW
    )
    assert claims == ZendeskClaims(
        subdomain="acme",
        installation_id=INSTALLATION,
        user_id="9001",
        location="ticket_sidebar",
        expires_at=NOW + 300,
    )


@pytest.mark.parametrize(
    ("claims", "installation_id"),
    [
        pytest.param(_claims(), INSTALLATION, id="installation-given"),
        pytest.param(_claims(iss="https://acme.zendesk.com"), None, id="https-issuer"),
        pytest.param(_claims(sub=None), None, id="no-subject"),
        pytest.param(_claims(exp=NOW - 10), None, id="expired-within-leeway"),
    ],
)
def test_zendesk_token_variants_that_are_accepted(claims, installation_id):
    verify_zendesk_token(
        _signed(claims),
        public_key_pem=APP_PUBLIC_PEM,
        subdomain=SUBDOMAIN,
        installation_id=installation_id,
        now=NOW,
    )


@pytest.mark.parametrize(
    ("subject", "user_id"),
    [
        pytest.param(USER_URL, "9001", id="user-url"),
        pytest.param(None, None, id="missing"),
        pytest.param("9001", "9001", id="bare-id"),
        pytest.param("٩٠٠١", None, id="bare-non-ascii-digits"),
        pytest.param("9001 ", None, id="bare-id-and-space"),
        pytest.param(9001, None, id="number"),
        pytest.param("", None, id="empty"),
        pytest.param(USER_URL.replace("acme", "evil"), None, id="other-subdomain"),
        pytest.param(USER_URL.replace("https://", "http://"), None, id="plain-http"),
        pytest.param(USER_URL + "?as=1", None, id="suffix"),
        pytest.param("x" + USER_URL, None, id="prefix"),
        pytest.param(USER_URL.replace("9001", "9001/../1"), None, id="path-tricks"),
        pytest.param(USER_URL.replace("9001", "٩٠٠١"), None, id="non-ascii-digits"),
        pytest.param(USER_URL.replace("users", "apps/installations"), None, id="not-a-user"),
        pytest.param([USER_URL], None, id="list"),
    ],
)
def test_the_agent_is_the_user_in_sub_and_only_in_its_documented_form(subject, user_id):
    """`sub` names the Zendesk user as this subdomain's user API URL or the bare id; else no one."""
    claims = verify_zendesk_token(
        _signed(_claims(sub=subject)), public_key_pem=APP_PUBLIC_PEM, subdomain=SUBDOMAIN, now=NOW
    )
    assert claims.user_id == user_id


@pytest.mark.parametrize(
    ("token", "installation_id"),
    [
        pytest.param(_signed(_claims(exp=NOW - 60)), None, id="expired"),
        pytest.param(_signed(_claims(iat=NOW + 120)), None, id="issued-in-future"),
        pytest.param(_signed(_claims(nbf=NOW + 120)), None, id="not-before-in-future"),
        pytest.param(_signed(_claims(exp=None)), None, id="no-exp"),
        pytest.param(_signed(_claims(iat=None)), None, id="no-iat"),
        pytest.param(_signed(_claims(aud=None)), None, id="no-aud"),
        pytest.param(_signed(_claims(iss=None)), None, id="no-iss"),
        pytest.param(
            _signed(_claims(aud=AUDIENCE.replace("acme", "evil"))), None, id="other-subdomain-aud"
        ),
        pytest.param(
            _signed(_claims(aud=AUDIENCE.replace(".json", ".json.evil"))), None, id="aud-suffix"
        ),
        pytest.param(_signed(_claims(aud=[AUDIENCE])), None, id="aud-list"),
        pytest.param(_signed(), "360009999999", id="other-installation"),
        pytest.param(_signed(_claims(iss="evil.zendesk.com")), None, id="wrong-issuer"),
        pytest.param(
            _signed(_claims(context={"product": "support", "location": "top_bar"})),
            None,
            id="wrong-location",
        ),
        pytest.param(_signed(_claims(context="ticket_sidebar")), None, id="context-not-dict"),
        pytest.param(_alg_none(), None, id="alg-none"),
        pytest.param(_hs256_with_public_pem(), None, id="hs256-with-public-pem"),
        pytest.param(_signed(key=OTHER_KEY), None, id="other-key"),
        pytest.param(_payload_swapped(), None, id="tampered-payload"),
        pytest.param("not-a-jwt", None, id="garbage"),
        pytest.param("", None, id="empty"),
    ],
)
def test_zendesk_tokens_that_are_refused(token, installation_id):
    with pytest.raises(Unauthorized):
        verify_zendesk_token(
            token,
            public_key_pem=APP_PUBLIC_PEM,
            subdomain=SUBDOMAIN,
            installation_id=installation_id,
            now=NOW,
        )


def test_unusable_public_key_is_refused_not_crashed():
    with pytest.raises(Unauthorized, match="PEM"):
        verify_zendesk_token(_signed(), public_key_pem="not a key", subdomain=SUBDOMAIN, now=NOW)


def test_refusal_keeps_the_reason_out_of_the_public_message():
    with pytest.raises(Unauthorized) as caught:
        verify_zendesk_token(_alg_none(), public_key_pem=APP_PUBLIC_PEM, subdomain=SUBDOMAIN)
    assert "none" in str(caught.value)
    assert "none" not in caught.value.public_message


# --- Help Scout ---------------------------------------------------------------------------

SECRET = "helpscout-app-secret"
BODY = b'{"ticket":{"id":123,"number":42,"subject":"Refund"},"customer":{"id":7}}'


def _hs_signature(message: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha1).digest()).decode()


def test_helpscout_body_with_valid_signature_passes():
    verify_helpscout_body(BODY, _hs_signature(BODY), SECRET)


@pytest.mark.parametrize(
    ("body", "signature", "secret"),
    [
        pytest.param(BODY.replace(b"42", b"43"), _hs_signature(BODY), SECRET, id="tampered-body"),
        pytest.param(BODY, _hs_signature(BODY, "other-secret"), SECRET, id="wrong-secret"),
        pytest.param(BODY, None, SECRET, id="missing-header"),
        pytest.param(BODY, "", SECRET, id="empty-header"),
        pytest.param(BODY, _hs_signature(BODY, ""), "", id="no-secret-configured"),
        pytest.param(BODY, "é-not-base64", SECRET, id="non-ascii-header"),
    ],
)
def test_helpscout_bodies_that_are_refused(body, signature, secret):
    with pytest.raises(Unauthorized):
        verify_helpscout_body(body, signature, secret)


# Written out by hand as PHP's json_encode would: no spaces, "/" as "\/", "é" as "\u00e9",
# in the order received, without the signature or our own "tenant" parameter.
PARAMS_JSON = (
    r'{"conversationId":"123","customerEmail":"ren\u00e9@example.com",'
    r'"returnUrl":"https:\/\/secure.helpscout.net\/conversation\/123","quote":"say \"hi\""}'
)
PARAMS_SIGNATURE = _hs_signature(PARAMS_JSON.encode())


def _params(signature: str = PARAMS_SIGNATURE, **changes: str) -> list[tuple[str, str]]:
    params = {
        "conversationId": "123",
        "tenant": "t_42",
        "customerEmail": "rené@example.com",
        "X-HelpScout-Signature": signature,
        "returnUrl": "https://secure.helpscout.net/conversation/123",
        "quote": 'say "hi"',
    }
    params.update(changes)
    return list(params.items())


@pytest.mark.parametrize("as_mapping", [False, True], ids=["pairs", "mapping"])
def test_helpscout_params_with_valid_signature_pass(as_mapping):
    params = dict(_params()) if as_mapping else _params()
    verify_helpscout_params(params, SECRET, own_params={"tenant"})


@pytest.mark.parametrize(
    ("params", "own_params"),
    [
        pytest.param(_params(conversationId="124"), {"tenant"}, id="tampered-value"),
        pytest.param(_params(extra="1"), {"tenant"}, id="added-param"),
        pytest.param(list(reversed(_params())), {"tenant"}, id="reordered"),
        pytest.param(_params(), set(), id="own-param-not-removed"),
        pytest.param(
            [p for p in _params() if p[0] != "X-HelpScout-Signature"], {"tenant"}, id="unsigned"
        ),
        pytest.param(
            [*_params(), ("X-HelpScout-Signature", PARAMS_SIGNATURE)], {"tenant"}, id="two-sigs"
        ),
    ],
)
def test_helpscout_params_that_are_refused(params, own_params):
    with pytest.raises(Unauthorized):
        verify_helpscout_params(params, SECRET, own_params=own_params)


def test_helpscout_params_with_nothing_else_sign_a_php_empty_array():
    verify_helpscout_params({"X-HelpScout-Signature": _hs_signature(b"[]")}, SECRET)
