"""playbooks: ticket assignee and team queue; escalations picked up, breached, resolved

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 15:00:00.000000
"""

from alembic import op
import sqlalchemy as sa
import core.db.models


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('assignee', sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column('team', sa.String(length=40), nullable=True))
        batch_op.create_index(batch_op.f('ix_tickets_assignee'), ['assignee'], unique=False)
        batch_op.create_index(batch_op.f('ix_tickets_team'), ['team'], unique=False)

    with op.batch_alter_table('escalations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('picked_up_by', sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column('picked_up_at', core.db.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('breached_at', core.db.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('resolved_at', core.db.models.UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_escalations_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_escalations_due_at'), ['due_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('escalations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_escalations_due_at'))
        batch_op.drop_index(batch_op.f('ix_escalations_status'))
        batch_op.drop_column('resolved_at')
        batch_op.drop_column('breached_at')
        batch_op.drop_column('picked_up_at')
        batch_op.drop_column('picked_up_by')

    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tickets_team'))
        batch_op.drop_index(batch_op.f('ix_tickets_assignee'))
        batch_op.drop_column('team')
        batch_op.drop_column('assignee')
