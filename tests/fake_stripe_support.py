"""The fake Stripe's test-support routes (``/_config/...``), called the way tests need them."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any

TIMEOUT_SECONDS = 10


def fake_post(server: Any, endpoint: str, **form: Any) -> dict[str, Any]:
    """POST a form to one of the fake's routes; its JSON answer."""
    request = urllib.request.Request(
        f"{server.url}{endpoint}", data=urllib.parse.urlencode(form).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
        return json.loads(response.read())


def fake_get(server: Any, endpoint: str) -> dict[str, Any]:
    """GET one of the fake's routes; its JSON answer."""
    with urllib.request.urlopen(f"{server.url}{endpoint}", timeout=TIMEOUT_SECONDS) as response:
        return json.loads(response.read())


def fake_delete(server: Any, endpoint: str) -> None:
    """DELETE one of the fake's routes (data, armed faults)."""
    request = urllib.request.Request(f"{server.url}{endpoint}", method="DELETE")
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS):
        pass


def open_dispute(server: Any, charge: str, **form: Any) -> dict[str, Any]:
    """A dispute on ``charge``, as a bank files one (``POST /_config/disputes``)."""
    return fake_post(server, "/_config/disputes", charge=charge, **form)
