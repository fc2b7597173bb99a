"""A loopback HTTP proxy that waits before forwarding each request: a far API on a near server.

The real Stripe API answers in 100–300 ms; the fake Stripe on loopback in a few. Put this in
front of the fake (``DelayProxy(upstream, 0.1)``, then use ``proxy.url`` as the API base) and
every request costs about as much round-trip time as the real one, so work that overlaps its
requests shows the difference it makes in production.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


class DelayProxy:
    """Forward every request to ``upstream`` after ``delay`` seconds, one thread per client."""

    def __init__(self, upstream: str, delay: float) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay = delay
        local = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as stripe-python's session expects

            def log_message(self, format: str, *args: object) -> None:
                pass

            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                time.sleep(proxy.delay)
                session = getattr(local, "session", None) or requests.Session()
                local.session = session
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = session.request(
                    self.command, proxy.upstream + self.path, data=body, headers=headers
                )
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_DELETE = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        return f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
