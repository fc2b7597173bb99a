"""Entities in a customer's words: amounts, dates, card last 4, tenant IDs, organisation,
Stripe IDs, and whether they say a chargeback was filed.

Each kind is a small table of patterns. They are written to miss rather than to guess: an
amount needs a currency, a last 4 needs a card word or a mask, an organisation needs a legal
suffix, a label or a tenant ID next to it. What is found informs agents and cross-checks the
Stripe customer; it never by itself lets automation act.

Rules worth knowing:

* Amounts: a currency symbol or ISO code before or after the number. ``$`` is USD, ``¥`` is
  JPY. With both ``,`` and ``.`` the last one is the decimal mark (``1.299,00`` and
  ``1,299.00``); with one kind only, it is a decimal mark when followed by one or two digits
  and a thousands separator when followed by three (``€1.299`` is 1299 euros).
* Dates: ISO ``2026-03-04``; ``3 March 2026``, ``March 3rd``, ``Mar 3, 2026``; numeric
  ``03/04/2026``. Numeric dates are read day first (3 April 2026) unless that is impossible
  (``03/14/2026`` is 14 March); with dots they are always day first. A date without a year is
  the latest such day no more than 30 days after ``today`` (customers write about charges that
  happened, or are about to).
* Tenant IDs: ``T-1042`` (any case), ``tenant 1042``, ``tenant ID: T-1042``, ``tenant #1042``,
  all canonical as ``T-1042``; workspace IDs as written, ``ws_88213``.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from core.customers import legal_form_pattern
from core.domain import ZERO_DECIMAL_CURRENCIES, Money
from mail.budget import UNLIMITED, Budget
from mail.parsing import split_reply
from mail.sanitize import clean_text

# Matches read per pattern: far more amounts or dates than any person writes in one email.
MAX_MATCHES_PER_PATTERN = 500


@dataclass(frozen=True)
class Entities:
    """What a customer's email says, as values; each tuple is in order of first mention."""

    amounts: tuple[Money, ...] = ()
    dates: tuple[date, ...] = ()
    card_last4: tuple[str, ...] = ()
    tenant_ids: tuple[str, ...] = ()
    organization: str | None = None
    stripe_ids: tuple[str, ...] = ()
    chargeback_filed: bool = False
    # The customer says they cannot reach their account or the billing portal; they ask for
    # a cancellation to take effect at once.
    locked_out: bool = False
    wants_immediate: bool = False

    @property
    def tenant_id(self) -> str | None:
        """The first tenant ID mentioned, if any."""
        return self.tenant_ids[0] if self.tenant_ids else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored on the ticket (money as minor units and currency code)."""
        return {
            "amounts": [{"amount": m.amount, "currency": m.currency} for m in self.amounts],
            "dates": [d.isoformat() for d in self.dates],
            "card_last4": list(self.card_last4),
            "tenant_ids": list(self.tenant_ids),
            "organization": self.organization,
            "stripe_ids": list(self.stripe_ids),
            "chargeback_filed": self.chargeback_filed,
            "locked_out": self.locked_out,
            "wants_immediate": self.wants_immediate,
        }


def _unique(values: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(values))


# --- amounts --------------------------------------------------------------------------------

_NUMBER = r"\d(?:[\d,.'’]*\d)?"
_SYMBOLS = {
    "us$": "usd",
    "$": "usd",
    "ca$": "cad",
    "c$": "cad",
    "au$": "aud",
    "a$": "aud",
    "nz$": "nzd",
    "€": "eur",
    "£": "gbp",
    "₹": "inr",
    "rs.": "inr",
    "rs": "inr",
    "¥": "jpy",
}
_CODES = (
    "usd", "eur", "gbp", "inr", "jpy", "cad", "aud", "nzd", "chf", "sek", "nok", "dkk", "pln",
    "czk", "huf", "sgd", "hkd", "brl", "mxn", "zar", "ils", "aed", "krw",
)  # fmt: skip
_WORDS = {"dollars": "usd", "euros": "eur", "euro": "eur", "rupees": "inr"}
_SYMBOL_PATTERN = "|".join(
    re.escape(s) for s in sorted(_SYMBOLS, key=len, reverse=True) if s not in ("rs", "rs.")
)
_CODE_PATTERN = "|".join(_CODES)
_AMOUNT_PATTERNS = (
    # $49.00, US$49, €120, ₹2,499, Rs. 2,499
    re.compile(
        rf"(?<![\w$])(?P<unit>{_SYMBOL_PATTERN}|rs\.?(?=\s?\d))\s?(?P<num>{_NUMBER})(?![\d\w])",
        re.IGNORECASE,
    ),
    # 49 USD, 1.299,00 EUR, 49 dollars
    re.compile(
        rf"(?<![\w.,])(?P<num>{_NUMBER})\s?(?P<unit>{_CODE_PATTERN}|{'|'.join(_WORDS)})\b",
        re.IGNORECASE,
    ),
    # USD 49, EUR 1.299,00
    re.compile(rf"\b(?P<unit>{_CODE_PATTERN})\s?(?P<num>{_NUMBER})(?![\d\w])", re.IGNORECASE),
    # 120€, 15 £
    re.compile(rf"(?<![\w.,])(?P<num>{_NUMBER})\s?(?P<unit>[€£₹])"),
)
_THOUSANDS = re.compile(r"\d{1,3}(?:(?P<sep>[,.'’])\d{3})?(?:(?P=sep)\d{3})*")
_INDIAN = re.compile(r"\d{1,2}(?:,\d{2})*,\d{3}")


def _currency(unit: str) -> str:
    unit = unit.lower().strip()
    return _SYMBOLS.get(unit) or _WORDS.get(unit) or unit


def _minor_units(number: str, currency: str) -> int | None:
    """A number as people write it, in minor units of the currency; None if not a number."""
    marks = [c for c in number if not c.isdigit()]
    whole, cents = number, ""
    if marks:
        last = marks[-1]
        head, _, tail = number.rpartition(last)
        # The last mark is a decimal one when one or two digits follow it and it is either
        # the only mark of its kind or follows marks of another kind ("1.299,00").
        if last in ",." and len(tail) in (1, 2) and (len(set(marks)) > 1 or len(marks) == 1):
            whole, cents = head, tail
    if not whole.isdigit() and not (_THOUSANDS.fullmatch(whole) or _INDIAN.fullmatch(whole)):
        return None
    digits = re.sub(r"\D", "", whole)
    if currency in ZERO_DECIMAL_CURRENCIES:
        return int(digits) if not cents.strip("0") else None
    return int(digits) * 100 + int(cents.ljust(2, "0"))


class _Taken:
    """Spans of the text already read as one entity: non-overlapping, kept sorted, so asking
    whether a new span overlaps one costs a binary search, not a scan of all of them."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def overlaps(self, start: int, end: int) -> bool:
        index = bisect.bisect_right(self.starts, start)
        before = index > 0 and self.ends[index - 1] > start
        after = index < len(self.starts) and self.starts[index] < end
        return before or after

    def add(self, start: int, end: int) -> None:
        index = bisect.bisect_right(self.starts, start)
        self.starts.insert(index, start)
        self.ends.insert(index, end)


def _matches(pattern: re.Pattern[str], text: str) -> Iterator[re.Match[str]]:
    """A pattern's matches, at most MAX_MATCHES_PER_PATTERN of them: cost stays bounded
    whatever the email repeats."""
    return itertools.islice(pattern.finditer(text), MAX_MATCHES_PER_PATTERN)


def _amounts(text: str) -> tuple[Money, ...]:
    found: list[tuple[int, Money]] = []
    taken = _Taken()
    for pattern in _AMOUNT_PATTERNS:
        for match in _matches(pattern, text):
            start, end = match.span("num")
            if taken.overlaps(start, end):
                continue  # "$49.00 USD": one amount, read once
            currency = _currency(match.group("unit"))
            minor = _minor_units(match.group("num"), currency)
            if minor is None:
                continue
            taken.add(start, end)
            found.append((start, Money(minor, currency)))
    return _unique(money for _, money in sorted(found, key=lambda item: item[0]))


# --- dates ----------------------------------------------------------------------------------

_MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sept", "sep"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_ORDINAL = r"(?:st|nd|rd|th)?"
_ISO_DATE = re.compile(r"(?<![\d/.-])(?P<y>20\d{2})[-/](?P<m>\d{1,2})[-/](?P<d>\d{1,2})(?![\d/])")
_DAY_MONTH = re.compile(
    rf"\b(?P<d>\d{{1,2}}){_ORDINAL}\s+(?:of\s+)?(?P<month>{_MONTH})\b\.?(?:,?\s+(?P<y>20\d{{2}}))?",
    re.IGNORECASE,
)
_MONTH_DAY = re.compile(
    rf"\b(?P<month>{_MONTH})\b\.?\s+(?P<d>\d{{1,2}}){_ORDINAL}(?![\d:])\b"
    r"(?:,?\s+(?P<y>20\d{2}))?",
    re.IGNORECASE,
)
_NUMERIC_DATE = re.compile(
    r"(?<![\d/.\w-])(?P<a>\d{1,2})(?P<sep>[/.-])(?P<b>\d{1,2})(?P=sep)(?P<y>20\d{2}|\d{2})"
    r"(?![\d/.-]\d)(?!\w)"
)
FUTURE_DAYS_ALLOWED = 30


def _with_year(month: int, day: int, today: date) -> date | None:
    """The latest such day no later than FUTURE_DAYS_ALLOWED after today."""
    for year in (today.year + 1, today.year, today.year - 1):
        try:
            candidate = date(year, month, day)
        except ValueError:
            continue
        if candidate <= today + timedelta(days=FUTURE_DAYS_ALLOWED):
            return candidate
    return None


def _make_date(year: str | None, month: int, day: int, today: date) -> date | None:
    if year is None:
        return _with_year(month, day, today)
    full = int(year) + (2000 if len(year) == 2 else 0)
    try:
        return date(full, month, day)
    except ValueError:
        return None


def _dates(text: str, today: date) -> tuple[date, ...]:
    found: list[tuple[int, date]] = []
    taken = _Taken()

    def add(match: re.Match[str], value: date | None) -> None:
        if value is None or taken.overlaps(*match.span()):
            return
        taken.add(*match.span())
        found.append((match.start(), value))

    for match in _matches(_ISO_DATE, text):
        add(match, _make_date(match["y"], int(match["m"]), int(match["d"]), today))
    for pattern in (_DAY_MONTH, _MONTH_DAY):
        for match in _matches(pattern, text):
            if match["month"] == "may":
                continue  # "may" is mostly a verb; "May" is the month
            month = _MONTHS[match["month"].lower()]
            add(match, _make_date(match["y"], month, int(match["d"]), today))
    for match in _matches(_NUMERIC_DATE, text):
        first, second = int(match["a"]), int(match["b"])
        # Day first, as most of the world writes it, unless only month first makes sense.
        day, month = (first, second) if match["sep"] == "." or second <= 12 else (second, first)
        add(match, _make_date(match["y"], month, day, today))
    return _unique(value for _, value in sorted(found, key=lambda item: item[0]))


# --- card last 4 ----------------------------------------------------------------------------

_CARD_WORD = (
    r"(?:card|visa|master\s?card|amex|american express|discover|debit|credit|cc|jcb|diners|"
    r"unionpay|maestro)"
)
_BRAND = r"(?:visa|master\s?card|amex|american express|discover|jcb|diners|unionpay|maestro)"
_LAST4_PATTERNS = (
    # card ending 4242, Visa ending in 4242, [card ending 4242] (our own redaction)
    re.compile(
        rf"\b{_CARD_WORD}\b[^\n.?!]{{0,25}}?\b(?:ending|ends|ended)(?:\s+(?:in|with))?"
        r"\s*[:#-]?\s*(?P<last4>\d{4})(?!\d)",
        re.IGNORECASE,
    ),
    # last four digits 4242, last 4 of my card: 4242, the last four digits are 4242
    re.compile(
        r"\blast\s*(?:4|four)(?:\s*digits)?(?:\s*(?:of|on)\s*(?:my|the|our)\s*(?:\w+\s+)?card)?"
        r"\s*(?:are|is|were|was)?\s*[:=#-]?\s*(?P<last4>\d{4})(?!\d)",
        re.IGNORECASE,
    ),
    # xxxx-4242, XXXX XXXX XXXX 4242, **** 4242, •••• 4242
    re.compile(
        r"(?<![a-z0-9x*•·])(?:[x*•·]{2,}+[\s-]?){1,3}+(?P<last4>\d{4})(?!\d)",
        re.IGNORECASE,
    ),
    # Visa - 4242, Visa •••• 4242 (as receipts write it; "Visa 2026" is not one)
    re.compile(
        rf"\b{_BRAND}\b\s*(?:[-–:]|[x*•·]+)\s*(?P<last4>\d{{4}})(?!\d)",
        re.IGNORECASE,
    ),
)


def _card_last4(text: str) -> tuple[str, ...]:
    found = [
        (match.start(), match["last4"])
        for pattern in _LAST4_PATTERNS
        for match in pattern.finditer(text)
    ]
    return _unique(value for _, value in sorted(found))


# --- tenant IDs -----------------------------------------------------------------------------

_TENANT_PATTERNS = (
    re.compile(r"(?<![\w-])[Tt]-(?P<digits>\d{3,10})(?![\w-])"),
    re.compile(
        r"\btenant(?:\s*(?:id|number|no\.?|#))?\s*(?:is\s+|[:#=]\s*)?(?:[Tt]-)?"
        r"(?P<digits>\d{2,10})(?![\w-])",
        re.IGNORECASE,
    ),
    re.compile(r"(?<![\w-])(?P<workspace>ws_[A-Za-z0-9]{3,32})\b"),
)


def _tenant_ids(text: str) -> tuple[str, ...]:
    found: list[tuple[int, str]] = []
    for pattern in _TENANT_PATTERNS:
        for match in pattern.finditer(text):
            groups = match.groupdict()
            found.append((match.start(), groups.get("workspace") or f"T-{groups['digits']}"))
    return _unique(value for _, value in sorted(found))


# --- organisation ---------------------------------------------------------------------------

# The legal forms (core.customers owns the list), and "& Sons", which ends names the same way.
_LEGAL_SUFFIX = rf"(?:{legal_form_pattern()}|& sons|and sons)"
# A name's word starts where a word starts and is of bounded length: either unbounded, a long
# run of letters or digits would be tried from each of its positions to each of its ends
# (quadratic; a 99 KB word held a worker for minutes).
_NAME_WORD = r"(?<![\w&'’.-])[A-Z0-9À-ÖØ-Þ][\w&'’.-]{0,39}"
_ORG_NAME = rf"{_NAME_WORD}(?:[ ](?:{_NAME_WORD}|&|and|of|de|der|the)){{0,5}}"
_NOT_NAMES = frozenset({
    "hi", "hello", "dear", "thanks", "thank", "regards", "best", "cheers", "i", "i'm", "we", "my",
    "our", "the", "tenant", "account", "workspace", "re", "fwd", "fw", "ps", "invoice", "receipt",
    "order", "subject", "ticket", "charge", "refund", "payment", "customer",
})  # fmt: skip
_ORG_BEFORE_TENANT = re.compile(
    rf"(?P<org>{_ORG_NAME})\s*[(,–-]\s*(?:tenant\b|workspace\b|[Tt]-\d|ws_)"
)
_ORG_LABEL = re.compile(
    r"^\s*(?:company|organi[sz]ation|org|business|company name)\s*:\s*(?P<org>[^\n]{2,80})$",
    re.IGNORECASE | re.MULTILINE,
)
_ORG_WITH_SUFFIX = re.compile(rf"(?P<org>{_ORG_NAME},?\s+(?i:{_LEGAL_SUFFIX})\.?)(?![\w&])")
# "I work for Contoso GmbH", "I'm the admin of Northwind Ltd": who the sender is, not who
# charged them ("a charge from Servinix Inc." names the merchant).
_ORG_OF_SENDER = re.compile(
    r"\b(?i:work|working|i'm|i am|we're|we are|admin|administrator|owner|manager|director|"
    r"accountant|founder|ceo|cfo|cto|head of \w+)\b[^.\n]{0,30}?\b(?:at|for|of|with)\s+"
    rf"(?P<org>{_ORG_NAME},?\s+(?i:{_LEGAL_SUFFIX})\.?)(?![\w&])"
)
MAX_ORGANIZATION_CHARS = 120


def _clean_org(value: str) -> str | None:
    value = re.sub(r"\s*\((?:tenant|workspace|T-\d|ws_)[^)]*\)?", "", value, flags=re.I)
    value = " ".join(value.split()).strip(" ,;:-–.")
    words = value.split()
    while words and words[0].lower().strip(",") in _NOT_NAMES:
        words.pop(0)
    value = " ".join(words)
    if not value or value.lower() in _NOT_NAMES or not any(c.isalpha() for c in value):
        return None
    return value[:MAX_ORGANIZATION_CHARS]


def _organization(text: str, sender_name: str | None) -> str | None:
    """The sender's organisation, read in their own words and signature only: quoted and
    forwarded text is someone else's (a forwarded receipt names the merchant)."""
    own, signature = split_reply(text)
    mine = f"{own}\n{signature}"
    candidates: list[str | None] = []
    for match in _ORG_LABEL.finditer(mine):
        candidates.append(_clean_org(match["org"]))
    for match in _ORG_BEFORE_TENANT.finditer(mine):
        candidates.append(_clean_org(match["org"]))
    for line in signature.splitlines():
        line_match = _ORG_WITH_SUFFIX.search(line)
        if line_match:
            candidates.append(_clean_org(line_match["org"]))
    for line in mine.splitlines():
        # A line that is nothing but a company name: "Okafor & Sons", "Weber GmbH".
        line_match = _ORG_WITH_SUFFIX.fullmatch(line.strip())
        if line_match:
            candidates.append(_clean_org(line_match["org"]))
    for match in _ORG_OF_SENDER.finditer(mine):
        candidates.append(_clean_org(match["org"]))
    sender = " ".join((sender_name or "").split()).casefold()
    for candidate in candidates:
        if candidate and candidate.casefold() != sender:
            return candidate
    return None


# --- Stripe IDs -----------------------------------------------------------------------------

_STRIPE_ID = re.compile(
    r"(?<![\w-])(?:ch|pi|in|cus|sub|re|dp|py|pm|txn)_[A-Za-z0-9]{8,64}(?![A-Za-z0-9])"
)


def _stripe_ids(text: str) -> tuple[str, ...]:
    # A real ID mixes in digits or capitals; "in_progress" or "re_something" are words.
    return _unique(
        match.group(0)
        for match in _STRIPE_ID.finditer(text)
        if any(c.isdigit() or c.isupper() for c in match.group(0).split("_", 1)[1])
    )


# --- chargeback -----------------------------------------------------------------------------

_ISSUER = (
    r"(?:bank|card issuer|issuer|credit card company|card company|credit union|amex|"
    r"american express|visa|master\s?card|discover|paypal)"
)
_FILED = r"(?:filed|opened|raised|lodged|initiated|started|submitted|made|issued|requested)"
_CHARGEBACK = r"(?:chargeback|charge[- ]back)s?"
_OBJECT = r"(?:it|them|both|this|that|(?:the|this|that|these|those|your|my|our)\s+\w+(?:\s+\w+)?)"
_CHARGEBACK_PATTERNS = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        # I filed a chargeback; we've initiated a charge-back
        rf"\b(?:{_FILED}|did|put in|went ahead with|gone ahead with)\s+(?:a\s+|an\s+|the\s+)?"
        rf"{_CHARGEBACK}\b",
        # the chargeback I filed; a chargeback has been filed
        rf"\b{_CHARGEBACK}\s+(?:that\s+)?(?:i|we)\s+(?:have\s+|had\s+|'ve\s+)?{_FILED}\b",
        rf"\b{_CHARGEBACK}\s+(?:has|have|was|were|is)\s+(?:already\s+)?(?:been\s+)?"
        r"(?:filed|opened|raised|submitted|initiated|started|in progress|pending|underway)\b",
        # opened a dispute with Amex; filed a claim with my bank
        rf"\b{_FILED}\s+(?:a\s+|an\s+)?(?:dispute|claim|fraud claim|fraud report)\b"
        rf"[^.?!\n]{{0,40}}?\b(?:with|through|via|at|to)\s+(?:my\s+|our\s+|the\s+)?{_ISSUER}",
        # disputed it with my bank; reported the charge to my card issuer
        rf"\b(?:disputed|contested|reported|reversed)\s+{_OBJECT}\s+(?:with|through|via|to|at)"
        rf"\s+(?:my\s+|our\s+|the\s+)?{_ISSUER}",
        # I charged it back
        rf"\b(?:charged|charging)\s+{_OBJECT}\s+back\b",
        # my bank is reversing the charge; Amex has opened a dispute
        rf"\b{_ISSUER}\b[^.?!\n]{{0,30}}?\b(?:is|are|has|have|already|just)?\s*(?:reversing|"
        r"reversed|disputing|disputed|charged back|charging back|clawed back|clawing back|"
        r"opened a dispute|filed a dispute)\b",
        # the bank gave me a provisional credit (what a bank does while a dispute runs)
        r"\bprovisional credit\b",
        # I contacted my bank to dispute it
        rf"\b(?:contacted|called|asked|told)\s+(?:my|our|the)\s+{_ISSUER}\s+(?:to|and)\s+"
        r"(?:dispute|disputed|reverse|reversed|charge it back)",
    )
)
# Words that make the same phrase a question, a threat or a denial rather than a fact, when
# they come shortly before it in the same clause.
_NOT_A_FACT = re.compile(
    r"(?:\b(?:not|never|no|if|whether|unless|would|will|going to|want to|plan to|"
    r"planning to|about to|threaten\w*|otherwise)\b|n't|'ll)(?:\s+\w+){0,3}\s*$",
    re.IGNORECASE,
)
_CLAUSE_BREAK = re.compile(r"[.?!;,\n]|\b(?:so|and|but|because|then)\b", re.IGNORECASE)


def _chargeback_filed(text: str) -> bool:
    for pattern in _CHARGEBACK_PATTERNS:
        for match in pattern.finditer(text):
            before = text[max(0, match.start() - 80) : match.start()]
            breaks = list(_CLAUSE_BREAK.finditer(before))
            before = before[breaks[-1].end() :] if breaks else before
            inside = match.group(0)
            if _NOT_A_FACT.search(before) or re.search(r"\b(?:not|never|n't)\b", inside, re.I):
                continue
            return True
    return False


# --- cancellation: locked out, at once ----------------------------------------------------

_CANNOT = (
    r"(?:can ?not|can'?t|can’t|cannot|unable to|could ?n[o']?t|couldn’t|not able to|no way to)"
)
_REACH = r"(?:log ?in|sign ?in|login|access|get into|get in to|reach|open|find|use)"
_PLACE = (
    r"(?:account|dashboard|portal|billing|settings|admin|manage subscription|subscription page|"
    r"cancel(?:lation)? (?:button|option|link|page))"
)
_LOCKED_OUT = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"\blocked out\b",
        r"\b(?:lost|no longer have|don'?t have|do not have|without)\s+(?:any\s+)?access\b",
        rf"\b{_CANNOT}\s+{_REACH}\b",
        rf"\b{_PLACE}\s+(?:is\s+|isn'?t\s+|is not\s+|keeps\s+)?(?:not working|broken|down|"
        r"doesn'?t work|does not work|won'?t load|will not load|gives an error|errors out)",
        r"\b(?:password reset|reset link|login link|magic link)\b[^.?!\n]{0,30}?\b(?:never|not|"
        r"doesn'?t|does not|isn'?t|won'?t)\b",
        r"\b(?:no|can'?t find (?:the|a|any))\s+(?:cancel|cancellation)\s+(?:button|option|link)\b",
    )
)
_AT_ONCE = re.compile(
    r"\b(?:cancel\w*|stop|end|terminate|close)\b[^.?!\n]{0,40}?\b(?:immediately|right away|"
    r"right now|today|at once|effective immediately|asap|this minute)\b|\beffective immediately\b",
    re.IGNORECASE,
)


def _locked_out(text: str) -> bool:
    return any(pattern.search(text) for pattern in _LOCKED_OUT)


# --- all together ---------------------------------------------------------------------------


def extract(
    text: str,
    *,
    today: date | None = None,
    sender_name: str | None = None,
    budget: Budget = UNLIMITED,
) -> Entities:
    """Everything this module can read in an email's text.

    ``today`` dates the email (its Date header) so that "March 3rd" gets a year; it defaults
    to the current date. ``sender_name`` keeps a person's own name from being taken for their
    organisation. ``budget`` is checked between readings (OverBudget past it).
    """
    text = clean_text(text)
    readings = {
        "amounts": lambda: _amounts(text),
        "dates": lambda: _dates(text, today or date.today()),
        "card_last4": lambda: _card_last4(text),
        "tenant_ids": lambda: _tenant_ids(text),
        "organization": lambda: _organization(text, sender_name),
        "stripe_ids": lambda: _stripe_ids(text),
        "chargeback_filed": lambda: _chargeback_filed(text),
        "locked_out": lambda: _locked_out(text),
        "wants_immediate": lambda: bool(_AT_ONCE.search(text)),
    }
    values: dict[str, Any] = {}
    for name, read in readings.items():
        budget.check(f"reading the email's {name.replace('_', ' ')}")
        values[name] = read()
    return Entities(**values)
