"""HTTP calls to hosted helpdesks, with their limits kept and their failures mapped onto our
exception tree.

One ``Transport`` per helpdesk and process: its connection pool, its request budget and its
retry rules are shared by every call. A 429 is waited out when its ``Retry-After`` is short
(nothing was done, so any request may be sent again) and otherwise raised as
``HelpdeskUnavailable`` carrying the wait, for the job to retry later. Network errors and 5xx
are retried here with backoff only for requests that are safe to repeat (reads, and writes that
set a value); a write that adds something (a comment, a note) is never sent twice by this layer,
its failure goes up as ``HelpdeskUnavailable`` and the plan step stays retryable. Any other
non-2xx becomes ``HelpdeskError`` with the status and a short reason, never the whole body.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import requests

from core.errors import HelpdeskError, HelpdeskUnavailable

TIMEOUT_SECONDS = 15.0
REASON_LIMIT = 200


class RequestBudget(Protocol):
    """How many requests a helpdesk account takes per minute, shared by whoever holds it."""

    def acquire(self, cost: int = 1) -> float:
        """Take ``cost`` requests from the budget; the seconds to wait first (0 when there is
        room). Help Scout counts a write as two."""
        ...


class Unlimited:
    """No budget: the helpdesk's own 429 is the only limit (Zendesk's per-plan limits)."""

    def acquire(self, cost: int = 1) -> float:
        """Always room."""
        return 0.0


@dataclass
class MinuteBudget:
    """At most ``per_minute`` requests in any 60 seconds, within this process."""

    per_minute: int
    clock: Callable[[], float] = time.monotonic
    _sent: deque[float] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self, cost: int = 1) -> float:
        """Book the next free slots and say how long until they come."""
        with self._lock:
            now = self.clock()
            while self._sent and self._sent[0] <= now - 60.0:
                self._sent.popleft()
            start = now
            cost = min(cost, self.per_minute)
            if len(self._sent) + cost > self.per_minute:
                start = max(start, self._sent[len(self._sent) + cost - self.per_minute - 1] + 60.0)
            self._sent.extend([start] * cost)
            return max(0.0, start - now)


@dataclass(frozen=True)
class RetryRules:
    """How hard one call tries before the failure goes up to the job."""

    attempts: int = 4
    # A Retry-After longer than this is the job's to wait (RQ's retry), not a worker's to sleep.
    longest_wait: float = 20.0
    first_backoff: float = 0.5


class Transport:
    """Requests to one helpdesk: timeouts, budget, retries, and no blind redirects."""

    def __init__(
        self,
        service: str,
        *,
        http: requests.Session | None = None,
        budget: RequestBudget | None = None,
        rules: RetryRules | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.service = service
        self.http = http or requests.Session()
        self.budget: RequestBudget = budget or Unlimited()
        self.rules = rules or RetryRules()
        self.sleep = sleep

    def send(
        self, method: str, url: str, *, doing: str, repeatable: bool, **kwargs: Any
    ) -> requests.Response:
        """Send one request, retrying what may be retried; the response of any status that is
        not a rate limit or (for a repeatable request) a server error."""
        rules = self.rules
        for attempt in range(1, rules.attempts + 1):
            last = attempt == rules.attempts
            wait = self.budget.acquire(1 if method in ("GET", "HEAD") else 2)
            if wait > rules.longest_wait:
                raise HelpdeskUnavailable(
                    f"{doing}: the {self.service} request budget for this minute is spent "
                    f"(next slot in {wait:.0f} s)",
                    retry_after=wait,
                )
            if wait > 0:
                self.sleep(wait)
            try:
                # Redirects are never followed blindly: requests would drop the body of a PUT
                # or PATCH, turn a POST into a GET and strip the Authorization header.
                response = self.http.request(
                    method, url, timeout=TIMEOUT_SECONDS, allow_redirects=False, **kwargs
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                if repeatable and not last:
                    self.sleep(rules.first_backoff * 2 ** (attempt - 1))
                    continue
                raise HelpdeskUnavailable(
                    f"{doing}: {self.service} could not be reached ({type(exc).__name__})"
                ) from exc
            except requests.RequestException as exc:
                raise HelpdeskError(
                    f"{doing}: request to {self.service} failed ({type(exc).__name__})"
                ) from exc
            status = response.status_code
            if status == 429:
                # Refused before anything was done: safe to send again, whatever it was.
                delay = retry_after(response)
                if delay <= rules.longest_wait and not last:
                    self.sleep(delay)
                    continue
                raise HelpdeskUnavailable(
                    f"{doing}: {self.service} answered 429, rate limiting us "
                    f"(retry after {delay:.0f} s; {short_reason(response)})",
                    retry_after=delay,
                ) from _http_error(response)
            if status >= 500 and repeatable and not last:
                self.sleep(rules.first_backoff * 2 ** (attempt - 1))
                continue
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")


def retry_after(response: requests.Response, default: float = 5.0) -> float:
    """Seconds to wait before asking again: ``Retry-After`` (seconds or an HTTP date, RFC 9110
    §10.2.3) or Help Scout's ``X-RateLimit-Retry-After``; a few seconds when neither says."""
    for header in ("Retry-After", "X-RateLimit-Retry-After"):
        value = (response.headers.get(header) or "").strip()
        if not value:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return default


def check(response: requests.Response, *, service: str, doing: str) -> requests.Response:
    """The response when it is 2xx; otherwise the matching HelpdeskError or HelpdeskUnavailable."""
    status = response.status_code
    if 200 <= status < 300:
        return response
    message = f"{doing}: {service} answered {status} ({short_reason(response)})"
    if status == 429 or status >= 500:
        raise HelpdeskUnavailable(message) from _http_error(response)
    raise HelpdeskError(message, status=status) from _http_error(response)


def _http_error(response: requests.Response) -> requests.HTTPError:
    """requests' own error for a response, as the cause our error carries (never logged
    with the body: only the status line)."""
    return requests.HTTPError(f"{response.status_code} {response.reason}", response=response)


def short_reason(response: requests.Response) -> str:
    """A one-line reason for a failed response: the API's error fields, else the HTTP reason."""
    parts: list[str] = []
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        for key in ("error", "description", "message"):
            value = payload.get(key)
            if isinstance(value, dict):  # Zendesk sometimes nests {"title", "message"}
                value = value.get("title") or value.get("message")
            if isinstance(value, str) and value.strip():
                parts.append(value.strip())
    reason = " ".join((": ".join(dict.fromkeys(parts)) or response.reason or "").split())
    if len(reason) > REASON_LIMIT:
        reason = reason[: REASON_LIMIT - 1] + "…"
    request_id = response.headers.get("X-Request-Id") or response.headers.get(
        "X-Zendesk-Request-Id"
    )
    if request_id:
        reason = f"{reason or 'no reason given'}; request {request_id[:64]}"
    return reason or "no reason given"


def json_of(response: requests.Response, *, service: str, doing: str) -> dict[str, Any]:
    """The response's JSON object, or a HelpdeskError saying the answer was unreadable."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise HelpdeskError(f"{doing}: {service} sent an answer that is not a JSON object")
    return payload
