"""What a log line is about: request, job, ticket, action and email IDs, carried in contextvars.

A composition root binds what it knows (the web request's ID, the RQ job's), and code deeper
down binds the ticket or action it has just found; a logging filter copies them onto each
record, so every line says what it was about without anyone passing IDs to ``log.info``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

FIELDS = ("request_id", "job_id", "ticket_id", "action_id", "email_id")

_context: ContextVar[Mapping[str, str | int]] = ContextVar(
    "billing_desk_log_context", default=MappingProxyType({})
)


@contextmanager
def bound(**ids: str | int | None) -> Iterator[None]:
    """Add these IDs to every log line written inside the block (None values are skipped)."""
    unknown = set(ids) - set(FIELDS)
    if unknown:
        raise TypeError(f"not log context fields: {', '.join(sorted(unknown))}")
    token = _context.set({**_context.get(), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**ids: str | int | None) -> object:
    """Add IDs for the rest of this context (a request hook); pass the result to ``unbind``."""
    unknown = set(ids) - set(FIELDS)
    if unknown:
        raise TypeError(f"not log context fields: {', '.join(sorted(unknown))}")
    return _context.set({**_context.get(), **{k: v for k, v in ids.items() if v is not None}})


def add(**ids: str | int | None) -> None:
    """Add IDs for the rest of the enclosing ``bound`` block: a job function naming the ticket
    it just found (the worker runs each job inside ``bound(job_id=...)``, which ends them)."""
    bind(**ids)


@contextmanager
def cleared() -> Iterator[None]:
    """No IDs inside the block, and none that code inside it adds are left after it (a test
    calling a job function directly, outside the worker's ``bound`` block)."""
    token = _context.set(MappingProxyType({}))
    try:
        yield
    finally:
        _context.reset(token)


def unbind(token: object) -> None:
    """Undo a ``bind``."""
    _context.reset(token)  # type: ignore[arg-type]


def current() -> Mapping[str, str | int]:
    """The IDs bound here and now."""
    return _context.get()
