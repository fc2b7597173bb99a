"""The Zendesk private app: a zip that puts Billing Desk's sidebar on every ticket.

Upload it in Zendesk Admin Center > Apps and integrations > Zendesk Support apps > Upload
private app. The app has no code of its own: with ``signedUrls`` Zendesk POSTs a signed JWT to
our sidebar URL, which ``signed_requests.verify_zendesk_token`` checks.
"""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from core.errors import InvalidInput

# Plain http only reaches Zendesk's local app server (`zcli apps:server`); anything Zendesk
# itself loads must be https.
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
INDIGO = (0x4F, 0x46, 0xE5, 0xFF)
WHITE = (0xFF, 0xFF, 0xFF, 0xFF)
# A fixed timestamp makes the same URL always build the same zip.
ZIP_TIMESTAMP = (2024, 1, 1, 0, 0, 0)

INSTALLATION_INSTRUCTIONS = (
    "Billing Desk shows the requester's Stripe billing (subscription, charges, holds, refunds, "
    "disputes and decline reasons) in the ticket sidebar and lets agents act on it, within your "
    "refund policy. Before installing, on the Billing Desk server: "
    "1) set ZENDESK_SUBDOMAIN to your Zendesk subdomain (the 'acme' in acme.zendesk.com); "
    "2) set ZENDESK_APP_PUBLIC_KEY to this app's public key, which an admin downloads with "
    "GET /api/v2/apps/{app_id}/public_key.pem once the app is uploaded, so Billing Desk can "
    "check that each sidebar request really comes from your Zendesk; "
    "3) link each Zendesk agent to their Billing Desk role with `billing-desk agents link`, "
    "because an agent's role comes from Billing Desk's own records, never from Zendesk."
)


def build_zendesk_app(public_url: str, out_path: Path) -> Path:
    """Write the Zendesk app zip for a Billing Desk served at `public_url`; return its path."""
    base = _checked_url(public_url)
    files = {
        "manifest.json": _json(_manifest(base)),
        "translations/en.json": _json(_translations()),
        "assets/logo.png": _logo_png(320),
        "assets/logo-small.png": _logo_png(128),
    }
    with zipfile.ZipFile(out_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, ZIP_TIMESTAMP), data, zipfile.ZIP_DEFLATED)
    return out_path


def _checked_url(public_url: str) -> str:
    url = public_url.strip().rstrip("/")
    parts = urlsplit(url)
    local = parts.scheme == "http" and parts.hostname in LOCAL_HOSTS
    if not (parts.scheme == "https" or local) or not parts.hostname:
        raise InvalidInput(f"BILLING_DESK_URL must be an https:// URL, got {public_url!r}")
    if parts.query or parts.fragment:
        raise InvalidInput(f"BILLING_DESK_URL must not have a query or fragment: {public_url!r}")
    return url


def _manifest(base: str) -> dict[str, object]:
    return {
        "name": "Billing Desk",
        "author": {"name": "Billing Desk", "email": "support@billing-desk.example", "url": base},
        "defaultLocale": "en",
        "private": True,
        "location": {
            "support": {"ticket_sidebar": {"url": f"{base}/zendesk/sidebar", "flexible": True}}
        },
        "signedUrls": True,
        "version": "1.0",
        "frameworkVersion": "2.0",
    }


def _translations() -> dict[str, object]:
    return {
        "app": {
            "name": "Billing Desk",
            "short_description": "Stripe billing and safe refunds in the ticket sidebar.",
            "long_description": (
                "Billing Desk finds the requester's Stripe customer and shows their "
                "subscription, recent charges, authorization holds, refunds, disputes and "
                "decline reasons next to the ticket. Agents can refund, cancel or send a card "
                "update link; every action is checked against your refund policy, confirmed, "
                "audited and noted on the ticket. Large refunds go to a Support Lead for "
                "approval."
            ),
            "installation_instructions": INSTALLATION_INSTRUCTIONS,
        }
    }


def _json(document: dict[str, object]) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _logo_png(size: int) -> bytes:
    """A white bank card with an indigo stripe on an indigo square, as an RGBA PNG."""

    def box(
        left: float, top: float, right: float, bottom: float, radius: float = 0.0
    ) -> Callable[[float, float], bool]:
        def inside(x: float, y: float) -> bool:
            dx = max(left + radius - x, 0.0, x - (right - radius))
            dy = max(top + radius - y, 0.0, y - (bottom - radius))
            return dx * dx + dy * dy <= radius * radius

        return inside

    card = box(0.16, 0.28, 0.84, 0.72, radius=0.06)
    stripe = box(0.16, 0.37, 0.84, 0.46)
    number = box(0.24, 0.56, 0.52, 0.62, radius=0.03)

    def colour_at(x: float, y: float) -> tuple[int, int, int, int]:
        on_card = card(x, y) and not stripe(x, y) and not number(x, y)
        return WHITE if on_card else INDIGO

    return _png(size, colour_at)


def _png(size: int, colour_at: Callable[[float, float], tuple[int, int, int, int]]) -> bytes:
    """Encode a square RGBA image; `colour_at` takes pixel centres scaled to 0..1."""
    rows = bytearray()
    for y in range(size):
        rows.append(0)  # filter type "None" for every scanline
        for x in range(size):
            rows.extend(colour_at((x + 0.5) / size, (y + 0.5) / size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )
