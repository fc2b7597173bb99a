"""A TCP fault proxy: one asyncio listener per upstream, between the product and its servers.

Each ``FaultProxy`` forwards bytes both ways between its clients and one upstream on loopback,
unless a fault is on:

- ``cut``: for a while, every live connection is reset and every new one is reset as soon as
  it is accepted (the client sees ECONNRESET or a connection closed before any greeting);
- ``delay``: for a while, every chunk forwarded either way waits first;
- ``reset``: every live connection is reset at once (SO_LINGER 0: an RST, not a FIN).

An HTTP proxy (the one in front of the fake Stripe) understands requests, one per connection:
while its ``http`` fault is on, a request may be answered 500 or 429 (with Retry-After)
instead of being forwarded, or forwarded and then answered 500 (the request was done upstream,
but the client never hears so: what idempotency keys are for). The proxies run on one event
loop in a thread of their own; ``ProxySet`` starts and stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"
CHUNK_BYTES = 65536
MAX_HEAD_BYTES = 65536

_STRIPE_ERRORS = {
    429: {
        "type": "invalid_request_error",
        "code": "rate_limit",
        "message": "Too many requests (injected by the chaos proxy).",
    },
    500: {
        "type": "api_error",
        "message": "An unknown error occurred (injected by the chaos proxy).",
    },
}


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection with an RST: SO_LINGER on with a zero timeout, then close."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def http_error(status: int) -> bytes:
    """A Stripe-shaped error response, closing the connection; 429 says when to come back."""
    body = json.dumps({"error": _STRIPE_ERRORS[status]}).encode()
    reason = {429: "Too Many Requests", 500: "Internal Server Error"}[status]
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if status == 429:
        head.append("Retry-After: 1")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def with_connection_close(head: bytes) -> bytes:
    """An HTTP message head with its Connection header replaced by ``Connection: close``."""
    lines = head.split(b"\r\n")
    kept = [line for line in lines[1:] if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([lines[0], *kept, b"Connection: close"])


def content_length(head: bytes) -> int:
    """The Content-Length of an HTTP message head (0 when it has none)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip() or 0)
    return 0


@dataclass
class FaultProxy:
    """A listener on a free loopback port forwarding to ``upstream_port``."""

    name: str
    upstream_port: int
    upstream_host: str = LOOPBACK
    http: bool = False
    on_event: Callable[[str, str], None] = lambda target, kind: None
    port: int = 0
    cut_until: float = 0.0
    delay_until: float = 0.0
    delay_seconds: float = 0.0
    http_until: float = 0.0
    http_rate: float = 0.0
    rng: random.Random = field(default_factory=random.Random)
    connections: set[asyncio.StreamWriter] = field(default_factory=set)
    forwarded: int = 0  # connections (HTTP: requests) forwarded
    _server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        self.reset_all()

    # --- faults (called on the loop's thread) ----------------------------------------------

    def cut(self, seconds: float) -> None:
        """Refuse service for ``seconds``: reset every connection, live and new."""
        self.cut_until = time.monotonic() + seconds
        self.reset_all()

    def delay(self, seconds: float, per_chunk: float) -> None:
        """Hold every chunk for ``per_chunk`` seconds, for ``seconds``."""
        self.delay_until = time.monotonic() + seconds
        self.delay_seconds = per_chunk

    def http_faults(self, seconds: float, rate: float) -> None:
        """For ``seconds``, answer a share ``rate`` of requests with an error (HTTP only)."""
        self.http_until = time.monotonic() + seconds
        self.http_rate = rate

    def reset_all(self) -> int:
        """Reset every live connection; how many there were."""
        live = list(self.connections)
        for writer in live:
            _reset(writer)
        self.connections.clear()
        return len(live)

    def clear(self) -> None:
        """Every fault off."""
        self.cut_until = self.delay_until = self.http_until = 0.0

    # --- forwarding -----------------------------------------------------------------------

    def _is_cut(self) -> bool:
        return time.monotonic() < self.cut_until

    async def _pause(self) -> None:
        if time.monotonic() < self.delay_until:
            await asyncio.sleep(self.delay_seconds)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._is_cut():
            self.on_event(self.name, "refused")
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            _reset(writer)
            return
        self.connections.update((writer, up_writer))
        try:
            if self.http:
                await self._serve_http(reader, writer, up_reader, up_writer)
            else:
                self.forwarded += 1
                await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            for end in (writer, up_writer):
                self.connections.discard(end)
                with contextlib.suppress(Exception):
                    end.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction until EOF, then pass the EOF on (half-close)."""
        try:
            while True:
                chunk = await reader.read(CHUNK_BYTES)
                if not chunk:
                    break
                await self._pause()
                if self._is_cut():
                    _reset(writer)
                    return
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            _reset(writer)

    async def _serve_http(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        """One request: forwarded, refused with an error, or forwarded and then refused."""
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD_BYTES:
            raise ValueError("request head too large")
        body = await reader.readexactly(content_length(head))
        fault: tuple[str, int] | None = None
        if time.monotonic() < self.http_until and self.rng.random() < self.http_rate:
            fault = self.rng.choice([("before", 500), ("before", 429), ("after", 500)])
        if fault is not None and fault[0] == "before":
            self.on_event(self.name, f"http_{fault[1]}_before")
            await self._pause()
            writer.write(http_error(fault[1]))
            await writer.drain()
            return
        await self._pause()
        self.forwarded += 1
        up_writer.write(with_connection_close(head[:-4]) + b"\r\n\r\n" + body)
        await up_writer.drain()
        if fault is not None:
            # Done upstream; its answer is read and dropped, and the client hears of a failure.
            while await up_reader.read(CHUNK_BYTES):
                pass
            self.on_event(self.name, "http_500_after")
            writer.write(http_error(500))
            await writer.drain()
            return
        response_head = await up_reader.readuntil(b"\r\n\r\n")
        await self._pause()
        writer.write(with_connection_close(response_head[:-4]) + b"\r\n\r\n")
        await self._pipe(up_reader, writer)


class ProxySet:
    """The proxies, on one event loop in a daemon thread; counts every fault it injects."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.proxies: dict[str, FaultProxy] = {}
        self.faults: Counter[tuple[str, str]] = Counter()  # (target, kind) -> count
        self.log: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="proxy")
        self._thread.start()

    def record(self, target: str, kind: str, detail: str = "") -> None:
        """Count and log one injected fault."""
        with self._lock:
            self.faults[(target, kind)] += 1
            if kind not in ("refused",) or self.faults[(target, kind)] <= 3:
                self.log.append(f"{time.strftime('%H:%M:%S')} {target} {kind} {detail}".rstrip())

    def add(
        self,
        name: str,
        upstream_port: int,
        host: str = LOOPBACK,
        *,
        http: bool = False,
        seed: int = 0,
    ) -> int:
        """Start a proxy to ``host:upstream_port``; the loopback port it listens on."""
        proxy = FaultProxy(
            name, upstream_port, host, http=http, on_event=self.record, rng=random.Random(seed)
        )
        self.call(proxy.start())
        self.proxies[name] = proxy
        return proxy.port

    def call(self, coroutine: object) -> object:
        """Run a coroutine on the proxies' loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)  # type: ignore[arg-type]

    def on_loop(self, function: Callable[[], object]) -> object:
        """Run a plain function on the proxies' loop (their state is the loop's alone)."""

        async def run() -> object:
            return function()

        return self.call(run())

    def clear(self) -> None:
        """Every fault off, on every proxy."""
        self.on_loop(lambda: [proxy.clear() for proxy in self.proxies.values()])

    def stop(self) -> None:
        """Stop every proxy and the loop."""
        for proxy in self.proxies.values():
            with contextlib.suppress(Exception):
                self.call(proxy.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
