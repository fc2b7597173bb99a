"""sidebar: agents, approvals, escalations, external tickets

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 11:11:20.139206
"""

from alembic import op
import sqlalchemy as sa
import core.db.models


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('agents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=40), nullable=False),
    sa.Column('password_hash', sa.String(length=400), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', core.db.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('email')
    )
    op.create_table('agent_identities',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('agent_id', sa.Integer(), nullable=False),
    sa.Column('helpdesk', sa.String(length=20), nullable=False, server_default='local'),
    sa.Column('account', sa.String(length=200), nullable=False),
    sa.Column('external_user_id', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('helpdesk', 'account', 'external_user_id')
    )
    with op.batch_alter_table('agent_identities', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agent_identities_agent_id'), ['agent_id'], unique=False)

    op.create_table('escalations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=True),
    sa.Column('action_id', sa.Integer(), nullable=True),
    sa.Column('target', sa.String(length=40), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('requested_by', sa.String(length=320), nullable=False),
    sa.Column('stripe_customer_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('created_at', core.db.models.UTCDateTime(), nullable=False),
    sa.Column('due_at', core.db.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['action_id'], ['actions.id'], ),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('action_id')
    )
    with op.batch_alter_table('escalations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_escalations_stripe_customer_id'), ['stripe_customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_escalations_ticket_id'), ['ticket_id'], unique=False)

    with op.batch_alter_table('actions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('params', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('approval_role', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('decided_by', sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column('decided_at', core.db.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('decision_note', sa.Text(), nullable=True))

    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('helpdesk', sa.String(length=20), nullable=False, server_default='local'))
        batch_op.add_column(sa.Column('helpdesk_account', sa.String(length=200), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('external_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('customer_match', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('customer_verified_by', sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column('customer_verified_at', core.db.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('tenant_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('organization', sa.String(length=200), nullable=True))
        batch_op.create_unique_constraint('uq_tickets_helpdesk_external', ['helpdesk', 'helpdesk_account', 'external_id'])



def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_constraint('uq_tickets_helpdesk_external', type_='unique')
        batch_op.drop_column('organization')
        batch_op.drop_column('tenant_id')
        batch_op.drop_column('customer_verified_at')
        batch_op.drop_column('customer_verified_by')
        batch_op.drop_column('customer_match')
        batch_op.drop_column('external_id')
        batch_op.drop_column('helpdesk_account')
        batch_op.drop_column('helpdesk')

    with op.batch_alter_table('actions', schema=None) as batch_op:
        batch_op.drop_column('decision_note')
        batch_op.drop_column('decided_at')
        batch_op.drop_column('decided_by')
        batch_op.drop_column('approval_role')
        batch_op.drop_column('params')

    with op.batch_alter_table('escalations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_escalations_ticket_id'))
        batch_op.drop_index(batch_op.f('ix_escalations_stripe_customer_id'))

    op.drop_table('escalations')
    with op.batch_alter_table('agent_identities', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agent_identities_agent_id'))

    op.drop_table('agent_identities')
    op.drop_table('agents')
