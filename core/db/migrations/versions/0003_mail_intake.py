"""mail intake: attachments, entities, automation blocks

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 11:48:20.203552
"""

from alembic import op
import sqlalchemy as sa
import core.db.models


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('ticket_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attachments', sa.JSON(), nullable=False, server_default='[]'))

    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('entities', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('automation_blocked', sa.Text(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_column('automation_blocked')
        batch_op.drop_column('entities')

    with op.batch_alter_table('ticket_messages', schema=None) as batch_op:
        batch_op.drop_column('attachments')

