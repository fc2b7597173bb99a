"""The audit trail is append-only in the database itself (migration 0009): an INSERT is kept,
every UPDATE, DELETE (and, on PostgreSQL, TRUNCATE) is refused with a clear error, whether it
comes through the ORM or raw SQL, so not even the app's own code can rewrite its history."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Connection, delete, func, inspect, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core import audit
from core.db import Base, make_engine, session_scope, upgrade
from core.db.migrate import alembic_config
from core.db.models import AuditEvent, Ticket

REFUSED = "audit_events is append-only"


def _one_event(session_factory) -> int:
    """A ticket and one audit event about it, committed; the event's ID."""
    with session_scope(session_factory) as session:
        ticket = Ticket(subject="Billing", requester_email="cus@example.com", status="open")
        session.add(ticket)
        session.flush()
        entry = audit.record(
            session, actor="ann@example.com", event="refund.requested", ticket_id=ticket.id
        )
        session.flush()
        return entry.id


def _event(session_factory, event_id: int) -> AuditEvent | None:
    with session_scope(session_factory) as session:
        return session.get(AuditEvent, event_id)


def test_an_audit_event_is_written_and_read_back(session_factory):
    event_id = _one_event(session_factory)

    kept = _event(session_factory, event_id)
    assert kept is not None
    assert (kept.actor, kept.event, kept.detail) == ("ann@example.com", "refund.requested", {})


def _orm_attribute_change(session: Session, event_id: int) -> None:
    entry = session.get(AuditEvent, event_id)
    assert entry is not None
    entry.actor = "mallory@example.com"
    session.flush()


def _orm_delete(session: Session, event_id: int) -> None:
    entry = session.get(AuditEvent, event_id)
    assert entry is not None
    session.delete(entry)
    session.flush()


def _orm_bulk_update(session: Session, event_id: int) -> None:
    session.execute(update(AuditEvent).where(AuditEvent.id == event_id).values(event="nothing"))


def _orm_bulk_delete(session: Session, event_id: int) -> None:
    session.execute(delete(AuditEvent).where(AuditEvent.id == event_id))


def _raw_update(session: Session, event_id: int) -> None:
    session.execute(text("UPDATE audit_events SET detail = '{}' WHERE id = :id"), {"id": event_id})


def _raw_delete(session: Session, _event_id: int) -> None:
    session.execute(text("DELETE FROM audit_events"))


@pytest.mark.parametrize(
    "tamper",
    [
        _orm_attribute_change,
        _orm_delete,
        _orm_bulk_update,
        _orm_bulk_delete,
        _raw_update,
        _raw_delete,
    ],
)
def test_changing_or_removing_an_audit_event_is_refused(
    session_factory, tamper: Callable[[Session, int], None]
):
    event_id = _one_event(session_factory)

    with session_factory() as session, pytest.raises(DBAPIError, match=REFUSED):
        tamper(session, event_id)

    kept = _event(session_factory, event_id)
    assert kept is not None
    assert (kept.actor, kept.event, kept.detail) == ("ann@example.com", "refund.requested", {})


def test_emptying_the_table_at_once_is_refused(session_factory, db_engine):
    """PostgreSQL's TRUNCATE fires no row trigger, so a statement trigger refuses it; SQLite
    has no TRUNCATE, and its truncate optimisation of a bare DELETE is off under a trigger."""
    statement = {"postgresql": "TRUNCATE audit_events", "sqlite": "DELETE FROM audit_events"}
    event_id = _one_event(session_factory)

    with db_engine.connect() as connection, pytest.raises(DBAPIError, match=REFUSED):
        connection.execute(text(statement[db_engine.dialect.name]))

    assert _event(session_factory, event_id) is not None


def test_a_ticket_with_audit_events_cannot_be_deleted_under_them(session_factory):
    """No foreign key cascades into the trail: deleting what it speaks of is refused, so a
    deletion can never rewrite audit rows (SET NULL would be an UPDATE, CASCADE a DELETE)."""
    event_id = _one_event(session_factory)
    ticket_id = _event(session_factory, event_id).ticket_id  # type: ignore[union-attr]

    with session_factory() as session, pytest.raises(DBAPIError):
        session.execute(delete(Ticket).where(Ticket.id == ticket_id))
        session.flush()

    kept = _event(session_factory, event_id)
    assert kept is not None and kept.ticket_id == ticket_id


def test_no_foreign_key_would_change_audit_rows_on_delete():
    """The model agrees with the migration: no ON DELETE action from or into audit_events."""
    audit_events = Base.metadata.tables["audit_events"]
    outgoing = list(audit_events.foreign_keys)
    incoming = [
        key
        for table in Base.metadata.sorted_tables
        for key in table.foreign_keys
        if key.column.table is audit_events
    ]
    assert {key.column.table.name for key in outgoing} == {"tickets", "actions"}
    assert [(key.parent.name, key.ondelete) for key in outgoing if key.ondelete] == []
    assert incoming == []


# --- the migration itself ---------------------------------------------------------------


def _guard_triggers(connection: Connection) -> set[str]:
    """The names of the triggers on audit_events."""
    if connection.dialect.name == "postgresql":
        rows = connection.execute(
            text(
                "SELECT tgname FROM pg_trigger"
                " WHERE tgrelid = 'audit_events'::regclass AND NOT tgisinternal"
            )
        )
    else:
        rows = connection.execute(
            text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"),
            {"t": "audit_events"},
        )
    return set(rows.scalars())


EXPECTED = {
    "postgresql": {"audit_events_no_update_or_delete", "audit_events_no_truncate"},
    "sqlite": {"audit_events_no_update", "audit_events_no_delete"},
}


def test_the_test_database_carries_the_guard(db_engine):
    with db_engine.connect() as connection:
        assert _guard_triggers(connection) == EXPECTED[db_engine.dialect.name]


@pytest.fixture
def scratch_url(database_url: str, tmp_path) -> Iterator[str]:
    """An empty database of the test run's kind, for migrating up and down."""
    if make_url(database_url).get_backend_name() == "sqlite":
        yield f"sqlite:///{tmp_path / 'scratch.sqlite3'}"
        return
    configured = os.environ["DATABASE_URL"]
    name = f"billing_desk_scratch_{uuid.uuid4().hex[:10]}"
    admin = make_engine(configured).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(configured).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_downgrade_drops_the_guard_and_upgrade_restores_it(scratch_url: str):
    from alembic import command

    engine = make_engine(scratch_url)
    try:
        upgrade(engine, "0009")
        with engine.connect() as connection:
            assert _guard_triggers(connection) == EXPECTED[engine.dialect.name]

        command.downgrade(alembic_config(engine), "0008")
        with engine.begin() as connection:
            assert _guard_triggers(connection) == set()
            connection.execute(
                text(
                    "INSERT INTO audit_events (occurred_at, actor, event, detail)"
                    " VALUES (CURRENT_TIMESTAMP, 'a', 'e', '{}')"
                )
            )
            connection.execute(text("UPDATE audit_events SET actor = 'b'"))
            connection.execute(text("DELETE FROM audit_events"))
            if engine.dialect.name == "postgresql":
                assert (
                    connection.scalar(
                        text("SELECT count(*) FROM pg_proc WHERE proname = :name"),
                        {"name": "audit_events_append_only"},
                    )
                    == 0
                )

        upgrade(engine, "0009")
        with engine.begin() as connection:
            assert _guard_triggers(connection) == EXPECTED[engine.dialect.name]
            assert "audit_events" in inspect(connection).get_table_names()
            assert connection.scalar(select(func.count()).select_from(AuditEvent)) == 0
    finally:
        engine.dispose()
