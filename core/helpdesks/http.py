"""HTTP calls to hosted helpdesks, with their failures mapped onto our exception tree.

Network failures, 429 and 5xx become ``HelpdeskUnavailable`` (a job may retry); any other
non-2xx becomes ``HelpdeskError`` carrying the status and a short reason, never the whole body.
"""

from __future__ import annotations

from typing import Any

import requests

from core.errors import HelpdeskError, HelpdeskUnavailable

TIMEOUT_SECONDS = 15.0
REASON_LIMIT = 200


def send(
    http: requests.Session, method: str, url: str, *, service: str, doing: str, **kwargs: Any
) -> requests.Response:
    """Send one request with a timeout and without following redirects; any status returns."""
    try:
        # Redirects are never followed blindly: requests would drop the body of a PUT or
        # PATCH, turn a POST into a GET and strip the Authorization header across hosts.
        return http.request(method, url, timeout=TIMEOUT_SECONDS, allow_redirects=False, **kwargs)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise HelpdeskUnavailable(
            f"{doing}: {service} could not be reached ({type(exc).__name__})"
        ) from exc
    except requests.RequestException as exc:
        raise HelpdeskError(f"{doing}: request to {service} failed ({type(exc).__name__})") from exc


def check(response: requests.Response, *, service: str, doing: str) -> requests.Response:
    """The response when it is 2xx; otherwise the matching HelpdeskError or HelpdeskUnavailable."""
    status = response.status_code
    if 200 <= status < 300:
        return response
    message = f"{doing}: {service} answered {status} ({short_reason(response)})"
    try:
        response.raise_for_status()
    except requests.HTTPError as exc:
        if status == 429 or status >= 500:
            raise HelpdeskUnavailable(message) from exc
        raise HelpdeskError(message) from exc
    raise HelpdeskError(message)  # 1xx or 3xx: nothing we asked for


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
