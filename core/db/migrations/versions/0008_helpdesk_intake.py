"""helpdesk intake: Zendesk and Help Scout webhook deliveries recorded once, each hosted thread
entry mirrored once, and the built-in helpdesk's tags

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 01:30:00
"""

from alembic import op
import sqlalchemy as sa
import core.db.models


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('helpdesk_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=300), nullable=False),
    sa.Column('helpdesk', sa.String(length=20), nullable=False),
    sa.Column('account', sa.String(length=200), nullable=False),
    sa.Column('external_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('entry_id', sa.String(length=64), nullable=True),
    sa.Column('received_at', core.db.models.UTCDateTime(), nullable=False),
    sa.Column('processed_at', core.db.models.UTCDateTime(), nullable=True),
    sa.Column('ticket_id', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    with op.batch_alter_table('ticket_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('external_id', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint('uq_ticket_messages_external', ['ticket_id', 'external_id'])

    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tags', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('helpdesk_version', sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_column('helpdesk_version')
        batch_op.drop_column('tags')

    with op.batch_alter_table('ticket_messages', schema=None) as batch_op:
        batch_op.drop_constraint('uq_ticket_messages_external', type_='unique')
        batch_op.drop_column('external_id')

    op.drop_table('helpdesk_events')
