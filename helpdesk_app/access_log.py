"""gunicorn's access log without secrets: no query strings, no update-card tokens.

Help Scout signs the sidebar's query string, and an update-card link carries its token in the
path (``/billing/update-card/<token>``). gunicorn's default line records the raw request line
(``%(r)s``) and the Referer, which for our own pages' assets is the signed sidebar URL itself.
This logger keeps method, path and protocol, drops every query, and puts a placeholder where a
link token was, in each atom a log format could name.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from gunicorn.glogging import Logger

TOKEN_PLACEHOLDER = "<token>"
# Matched after decoding and merging slashes, as the router does, so "//billing/update%2Dcard/…"
# (which Werkzeug routes, or redirects, to the same view) is caught as well.
_TOKEN_SEGMENT = re.compile(r"(/update-card/)[^/]*", re.IGNORECASE)
# What stays readable in a logged path; the rest (spaces, control characters) is %-escaped, so
# a request cannot write a line of its own into the log either.
_PATH_SAFE = "/:@!$&'()*+,;=-._~<>"
# Atoms a custom access_log_format could use that carry a URL or a credential.
_URL_ATOMS = ("{referer}i", "{http_referer}e")
_PATH_ATOMS = ("{raw_uri}e", "{request_uri}e", "{path_info}e", "{script_name}e")
_HIDDEN_ATOMS = (
    "{query_string}e",
    "{authorization}i",
    "{cookie}i",
    "{http_authorization}e",
    "{http_cookie}e",
    "{set-cookie}o",
    "{location}o",  # our update-card redirect's Location is a live billing-portal session
)


def redacted_path(target: str) -> str:
    """A request target as logged: its path only, link tokens replaced, safely escaped."""
    # An origin-form target ("/a?b", even "//a/b") is all path; only absolute-form has a host.
    if target.startswith("/"):
        path = re.split("[?#]", target, maxsplit=1)[0]
    else:
        path = urlsplit(target).path or re.split("[?#]", target, maxsplit=1)[0] or "-"
    for _ in range(3):  # "%252F" decodes in two steps; a token hidden that way is still found
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    path = _TOKEN_SEGMENT.sub(rf"\g<1>{TOKEN_PLACEHOLDER}", re.sub("/{2,}", "/", path))
    return quote(path, safe=_PATH_SAFE)


def redacted_url(url: str) -> str:
    """A full URL (a Referer) as logged: origin and redacted path, no query."""
    if not url or url == "-":
        return "-"
    parts = urlsplit(url)
    if not (parts.scheme and parts.netloc):
        return redacted_path(url)
    return quote(f"{parts.scheme}://{parts.netloc}", safe=":/@[]") + redacted_path(parts.path)


class RedactingLogger(Logger):  # type: ignore[misc]
    """gunicorn's Logger, writing request lines without query strings or link tokens."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> Any:
        """gunicorn's atoms, with each one that can carry the URL or a credential made safe."""
        atoms = super().atoms(resp, req, environ, request_time)
        path = redacted_path(environ.get("RAW_URI") or environ.get("PATH_INFO") or "")
        method, protocol = environ.get("REQUEST_METHOD", "-"), environ.get("SERVER_PROTOCOL", "-")
        atoms.update(r=f"{method} {path} {protocol}", U=path, q="-")
        atoms["f"] = redacted_url(environ.get("HTTP_REFERER", "-"))
        for name in _URL_ATOMS:
            if name in atoms:
                atoms[name] = redacted_url(str(atoms[name]))
        for name in _PATH_ATOMS:
            if name in atoms:
                atoms[name] = redacted_path(str(atoms[name]))
        for name in _HIDDEN_ATOMS:
            atoms.pop(name, None)
        return atoms
