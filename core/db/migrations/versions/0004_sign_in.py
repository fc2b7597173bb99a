"""sign-in: spent one-time tokens, sign-in attempts, agent sessions

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:15:11.097372
"""

from alembic import op
import sqlalchemy as sa
import core.db.models


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sign_in_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('client_address', sa.String(length=64), nullable=False),
    sa.Column('succeeded', sa.Boolean(), nullable=False),
    sa.Column('at', core.db.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('sign_in_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_sign_in_attempts_client_address_at', ['client_address', 'at'], unique=False)
        batch_op.create_index('ix_sign_in_attempts_email_at', ['email', 'at'], unique=False)

    op.create_table('spent_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('token_id', sa.String(length=64), nullable=False),
    sa.Column('bound_to', sa.String(length=200), nullable=True),
    sa.Column('spent_at', core.db.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('kind', 'token_id', name='uq_spent_tokens_kind_token')
    )
    op.create_table('agent_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('agent_id', sa.Integer(), nullable=False),
    sa.Column('created_at', core.db.models.UTCDateTime(), nullable=False),
    sa.Column('last_seen_at', core.db.models.UTCDateTime(), nullable=False),
    sa.Column('revoked_at', core.db.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('agent_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agent_sessions_agent_id'), ['agent_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('agent_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agent_sessions_agent_id'))

    op.drop_table('agent_sessions')
    op.drop_table('spent_tokens')
    with op.batch_alter_table('sign_in_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_sign_in_attempts_email_at')
        batch_op.drop_index('ix_sign_in_attempts_client_address_at')

    op.drop_table('sign_in_attempts')
