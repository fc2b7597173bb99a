"""audit append-only: the database itself refuses to change or remove an audit event
(PostgreSQL: a trigger function behind BEFORE UPDATE OR DELETE and BEFORE TRUNCATE triggers;
SQLite: BEFORE UPDATE and BEFORE DELETE triggers raising ABORT)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 04:00:00
"""

from alembic import op
import sqlalchemy as sa
import core.db.models


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

# The names the tests and SECURITY.md use; a later migration that rebuilds audit_events (SQLite's
# batch mode copies the table and drops the old one, triggers with it) must create them again.
FUNCTION = 'audit_events_append_only'
ROW_TRIGGER = 'audit_events_no_update_or_delete'
TRUNCATE_TRIGGER = 'audit_events_no_truncate'
SQLITE_UPDATE_TRIGGER = 'audit_events_no_update'
SQLITE_DELETE_TRIGGER = 'audit_events_no_delete'

POSTGRESQL_UPGRADE = [
    f"""
    CREATE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
            USING ERRCODE = 'restrict_violation',
                  HINT = 'Audit events are added, never changed or removed.';
    END
    $$
    """,
    f"""
    CREATE TRIGGER {ROW_TRIGGER} BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION {FUNCTION}()
    """,
    f"""
    CREATE TRIGGER {TRUNCATE_TRIGGER} BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()
    """,
]
POSTGRESQL_DOWNGRADE = [
    f'DROP TRIGGER IF EXISTS {TRUNCATE_TRIGGER} ON audit_events',
    f'DROP TRIGGER IF EXISTS {ROW_TRIGGER} ON audit_events',
    f'DROP FUNCTION IF EXISTS {FUNCTION}()',
]
SQLITE_UPGRADE = [
    f"""
    CREATE TRIGGER {SQLITE_UPDATE_TRIGGER} BEFORE UPDATE ON audit_events
    BEGIN
        SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused');
    END
    """,
    f"""
    CREATE TRIGGER {SQLITE_DELETE_TRIGGER} BEFORE DELETE ON audit_events
    BEGIN
        SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused');
    END
    """,
]
SQLITE_DOWNGRADE = [
    f'DROP TRIGGER IF EXISTS {SQLITE_DELETE_TRIGGER}',
    f'DROP TRIGGER IF EXISTS {SQLITE_UPDATE_TRIGGER}',
]


def _statements(postgresql: list[str], sqlite: list[str]) -> list[str]:
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        return postgresql
    if dialect == 'sqlite':
        return sqlite
    raise NotImplementedError(f'no append-only guard for {dialect}')


def upgrade() -> None:
    for statement in _statements(POSTGRESQL_UPGRADE, SQLITE_UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    for statement in _statements(POSTGRESQL_DOWNGRADE, SQLITE_DOWNGRADE):
        op.execute(statement)
