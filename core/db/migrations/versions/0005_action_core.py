"""action core: stored plans; actions become plan steps with the requester's role

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 12:00:00.000000
"""

from alembic import op
import sqlalchemy as sa
import core.db.models


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('plans',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=True),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('source', sa.String(length=320), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False, server_default=''),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('created_at', core.db.models.UTCDateTime(), nullable=False),
    sa.Column('updated_at', core.db.models.UTCDateTime(), nullable=False),
    sa.Column('finished_at', core.db.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_plans_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_plans_ticket_id'), ['ticket_id'], unique=False)

    with op.batch_alter_table('actions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('plan_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('position', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('requester_role', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('started_at', core.db.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.create_index(batch_op.f('ix_actions_plan_id'), ['plan_id'], unique=False)
        batch_op.create_foreign_key('fk_actions_plan_id_plans', 'plans', ['plan_id'], ['id'])
        batch_op.create_unique_constraint('uq_actions_plan_position', ['plan_id', 'position'])


def downgrade() -> None:
    with op.batch_alter_table('actions', schema=None) as batch_op:
        batch_op.drop_constraint('uq_actions_plan_position', type_='unique')
        batch_op.drop_constraint('fk_actions_plan_id_plans', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_actions_plan_id'))
        batch_op.drop_column('attempts')
        batch_op.drop_column('started_at')
        batch_op.drop_column('requester_role')
        batch_op.drop_column('position')
        batch_op.drop_column('plan_id')

    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_plans_ticket_id'))
        batch_op.drop_index(batch_op.f('ix_plans_status'))

    op.drop_table('plans')
