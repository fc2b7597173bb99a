"""Is the sender who the From header says? Asked before money moves without an agent.

Anyone can write any address in ``From:``. What vouches for it is the receiving mail server's
own checks, recorded in ``Authentication-Results`` (RFC 8601), or a DKIM signature of the From
domain. Only a header whose authserv-id names the team's receiving server counts: a sender can
add headers of their own, but a conforming receiving server removes any that claim its id
(RFC 8601 section 5), and it adds its own above them, so the topmost with that id is the one
we read. It authenticates the sender when DMARC passed for the From domain, or DKIM passed for
a signing domain aligned with it. Without such a header (none configured, or the server does
not add one), a DKIM signature aligned with the From domain is verified here (dkimpy, keys
from DNS). SPF alone is never enough: it vouches for the envelope sender, not for ``From:``.

Parsing is authres's; verification is dkimpy's. Cost is bounded: a few headers and
signatures at most, each of bounded size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email import message_from_bytes
from email import policy as email_policy

import authres
import dkim
from dns.exception import DNSException

from mail.parsing import split_header_block

log = logging.getLogger(__name__)

MAX_RESULTS_HEADERS = 20  # Authentication-Results fields read, topmost first
MAX_HEADER_CHARS = 8192  # a longer field is not read
MAX_SIGNATURES = 3  # DKIM-Signature fields tried, topmost first

DnsFunc = Callable[..., bytes | None]  # dkimpy's dnsfunc: the TXT record of a name


@dataclass(frozen=True)
class SenderAuthentication:
    """Whether the From address is vouched for, and why (a sentence for the ticket)."""

    authenticated: bool
    reason: str


def authenticate_sender(
    raw: bytes,
    from_address: str,
    trusted_authserv_ids: Sequence[str],
    *,
    dnsfunc: DnsFunc | None = None,
) -> SenderAuthentication:
    """Judge the sender of the raw message ``raw`` whose From address is ``from_address``;
    never raises (what cannot be checked is not authenticated)."""
    try:
        return _authenticate(raw, from_address, trusted_authserv_ids, dnsfunc)
    except Exception:  # hostile headers reach two parsers: a failure must not stop triage
        log.exception("sender authentication failed; treated as not authenticated")
        return SenderAuthentication(
            False, "The sender could not be authenticated: the check failed on this email."
        )


def _authenticate(
    raw: bytes, from_address: str, trusted_authserv_ids: Sequence[str], dnsfunc: DnsFunc | None
) -> SenderAuthentication:
    domain = from_address.rpartition("@")[2].strip().lower().rstrip(".")
    if not domain:
        return SenderAuthentication(False, "The email has no sender address to authenticate.")
    block, _ = split_header_block(raw)  # the body is never needed to read headers
    headers = message_from_bytes(block + b"\r\n\r\n", policy=email_policy.compat32)
    trusted = {i.strip().lower() for i in trusted_authserv_ids if i.strip()}
    results = _trusted_results(headers.get_all("Authentication-Results") or [], trusted)
    if results is not None:
        return _judge_results(results, domain)
    return _verify_dkim(raw, headers.get_all("DKIM-Signature") or [], domain, dnsfunc)


def aligned(signing_domain: str, from_domain: str) -> bool:
    """Whether a signing (or DMARC-checked) domain vouches for the From domain: the same, or
    a parent of it (relaxed alignment without a public-suffix list errs on the strict side)."""
    signing = signing_domain.strip().lower().rstrip(".")
    return bool(signing) and (from_domain == signing or from_domain.endswith(f".{signing}"))


def _trusted_results(
    values: Sequence[str], trusted: set[str]
) -> authres.AuthenticationResultsHeader | None:
    """The topmost Authentication-Results added by a trusted server, parsed; None if none."""
    if not trusted:
        return None
    for value in values[:MAX_RESULTS_HEADERS]:
        text = " ".join(str(value).split())
        if len(text) > MAX_HEADER_CHARS:
            continue
        try:
            parsed = authres.AuthenticationResultsHeader.parse_value(text)
        except (authres.AuthResError, ValueError, IndexError) as exc:
            log.info("unreadable Authentication-Results ignored: %s", exc)
            continue
        if str(parsed.authserv_id or "").lower() in trusted:
            return parsed
    return None


def _property(result: authres.AuthenticationResult, ptype: str, name: str) -> str:
    for prop in result.properties:
        if prop.type == ptype and prop.name == name:
            return str(prop.value or "")
    return ""


def _judge_results(
    header: authres.AuthenticationResultsHeader, domain: str
) -> SenderAuthentication:
    server = header.authserv_id
    for result in header.results:
        if result.method == "dmarc" and result.result == "pass":
            checked = _property(result, "header", "from") or domain
            if aligned(checked, domain):
                return SenderAuthentication(True, f"{server}: DMARC pass for {domain}.")
    for result in header.results:
        if result.method == "dkim" and result.result == "pass":
            signer = _property(result, "header", "d") or _property(result, "header", "i")
            signer = signer.rpartition("@")[2]
            if aligned(signer, domain):
                return SenderAuthentication(
                    True, f"{server}: DKIM pass for {signer}, the sender's domain."
                )
    said = ", ".join(f"{r.method}={r.result}" for r in header.results) or "no results"
    return SenderAuthentication(
        False,
        f"The sender's domain {domain} is not authenticated: {server} reports {said} "
        "(neither DMARC pass nor a DKIM pass for the sender's domain).",
    )


def _verify_dkim(
    raw: bytes, signatures: Sequence[str], domain: str, dnsfunc: DnsFunc | None
) -> SenderAuthentication:
    """No trusted server's word: verify an aligned DKIM signature here."""
    if not signatures:
        return SenderAuthentication(
            False,
            f"The sender's domain {domain} is not authenticated: no Authentication-Results "
            "from our mail server and no DKIM signature.",
        )
    checker = dkim.DKIM(raw, logger=log)
    for index in range(min(len(signatures), MAX_SIGNATURES)):
        try:
            valid = checker.verify(idx=index, dnsfunc=dnsfunc or dkim.get_txt)
        except (dkim.DKIMException, DNSException, ValueError) as exc:
            log.info("DKIM signature %d not verified: %s", index, exc)
            continue
        signer = (checker.domain or b"").decode("ascii", "replace")  # the signature's d=
        if valid and aligned(signer, domain):
            return SenderAuthentication(True, f"DKIM signature of {signer} verified.")
    return SenderAuthentication(
        False,
        f"The sender's domain {domain} is not authenticated: no DKIM signature of that "
        "domain could be verified.",
    )
