"""stripe mirror: webhook events recorded once; customers, subscriptions, charges, refunds,
invoices and disputes mirrored; payment attempts and incidents for the mass-failure watch

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 19:51:31.513211
"""

from alembic import op
import sqlalchemy as sa
import core.db.models


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('stripe_charges',
    sa.Column('amount', sa.BigInteger(), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('status', sa.String(length=40), nullable=True),
    sa.Column('amount_refunded', sa.BigInteger(), nullable=True),
    sa.Column('disputed', sa.Boolean(), nullable=False),
    sa.Column('failure_code', sa.String(length=100), nullable=True),
    sa.Column('created', sa.BigInteger(), nullable=True),
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('customer_id', sa.String(length=255), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('event_created', sa.BigInteger(), nullable=False),
    sa.Column('synced_at', core.db.models.UTCDateTime(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('stripe_charges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stripe_charges_customer_id'), ['customer_id'], unique=False)

    op.create_table('stripe_customers',
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('name', sa.String(length=300), nullable=True),
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('customer_id', sa.String(length=255), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('event_created', sa.BigInteger(), nullable=False),
    sa.Column('synced_at', core.db.models.UTCDateTime(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('stripe_customers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stripe_customers_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_stripe_customers_email'), ['email'], unique=False)

    op.create_table('stripe_events',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=100), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('received_at', core.db.models.UTCDateTime(), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('processed_at', core.db.models.UTCDateTime(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('stripe_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stripe_events_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_stripe_events_type'), ['type'], unique=False)

    op.create_table('stripe_invoices',
    sa.Column('subscription_id', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=40), nullable=True),
    sa.Column('amount_due', sa.BigInteger(), nullable=True),
    sa.Column('amount_paid', sa.BigInteger(), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('created', sa.BigInteger(), nullable=True),
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('customer_id', sa.String(length=255), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('event_created', sa.BigInteger(), nullable=False),
    sa.Column('synced_at', core.db.models.UTCDateTime(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('stripe_invoices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stripe_invoices_customer_id'), ['customer_id'], unique=False)

    op.create_table('stripe_payment_attempts',
    sa.Column('key', sa.String(length=300), nullable=False),
    sa.Column('failed', sa.Boolean(), nullable=False),
    sa.Column('occurred_at', sa.BigInteger(), nullable=False),
    sa.Column('customer_id', sa.String(length=255), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=True),
    sa.Column('event_id', sa.String(length=255), nullable=False),
    sa.Column('twin_key', sa.String(length=300), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('stripe_payment_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stripe_payment_attempts_occurred_at'), ['occurred_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_stripe_payment_attempts_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_stripe_payment_attempts_twin_key'), ['twin_key'], unique=False)

    op.create_table('stripe_refunds',
    sa.Column('charge_id', sa.String(length=255), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('status', sa.String(length=40), nullable=True),
    sa.Column('reason', sa.String(length=60), nullable=True),
    sa.Column('created', sa.BigInteger(), nullable=True),
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('customer_id', sa.String(length=255), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('event_created', sa.BigInteger(), nullable=False),
    sa.Column('synced_at', core.db.models.UTCDateTime(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('stripe_refunds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stripe_refunds_charge_id'), ['charge_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_stripe_refunds_customer_id'), ['customer_id'], unique=False)

    op.create_table('stripe_subscriptions',
    sa.Column('status', sa.String(length=40), nullable=True),
    sa.Column('cancel_at_period_end', sa.Boolean(), nullable=False),
    sa.Column('current_period_end', sa.BigInteger(), nullable=True),
    sa.Column('created', sa.BigInteger(), nullable=True),
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('customer_id', sa.String(length=255), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('event_created', sa.BigInteger(), nullable=False),
    sa.Column('synced_at', core.db.models.UTCDateTime(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('stripe_subscriptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stripe_subscriptions_customer_id'), ['customer_id'], unique=False)

    op.create_table('stripe_disputes',
    sa.Column('charge_id', sa.String(length=255), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('reason', sa.String(length=60), nullable=True),
    sa.Column('status', sa.String(length=40), nullable=True),
    sa.Column('evidence_due_by', core.db.models.UTCDateTime(), nullable=True),
    sa.Column('is_charge_refundable', sa.Boolean(), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=True),
    sa.Column('ticket_id', sa.Integer(), nullable=True),
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('customer_id', sa.String(length=255), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('event_created', sa.BigInteger(), nullable=False),
    sa.Column('synced_at', core.db.models.UTCDateTime(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('stripe_disputes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stripe_disputes_charge_id'), ['charge_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_stripe_disputes_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_stripe_disputes_ticket_id'), ['ticket_id'], unique=False)

    op.create_table('stripe_incidents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=300), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('opened_at', core.db.models.UTCDateTime(), nullable=False),
    sa.Column('last_seen', sa.BigInteger(), nullable=False),
    sa.Column('resolved_at', core.db.models.UTCDateTime(), nullable=True),
    sa.Column('ticket_id', sa.Integer(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    with op.batch_alter_table('stripe_incidents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stripe_incidents_kind'), ['kind'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('stripe_incidents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stripe_incidents_kind'))

    op.drop_table('stripe_incidents')
    with op.batch_alter_table('stripe_disputes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stripe_disputes_ticket_id'))
        batch_op.drop_index(batch_op.f('ix_stripe_disputes_customer_id'))
        batch_op.drop_index(batch_op.f('ix_stripe_disputes_charge_id'))

    op.drop_table('stripe_disputes')
    with op.batch_alter_table('stripe_subscriptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stripe_subscriptions_customer_id'))

    op.drop_table('stripe_subscriptions')
    with op.batch_alter_table('stripe_refunds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stripe_refunds_customer_id'))
        batch_op.drop_index(batch_op.f('ix_stripe_refunds_charge_id'))

    op.drop_table('stripe_refunds')
    with op.batch_alter_table('stripe_payment_attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stripe_payment_attempts_twin_key'))
        batch_op.drop_index(batch_op.f('ix_stripe_payment_attempts_customer_id'))
        batch_op.drop_index(batch_op.f('ix_stripe_payment_attempts_occurred_at'))

    op.drop_table('stripe_payment_attempts')
    with op.batch_alter_table('stripe_invoices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stripe_invoices_customer_id'))

    op.drop_table('stripe_invoices')
    with op.batch_alter_table('stripe_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stripe_events_type'))
        batch_op.drop_index(batch_op.f('ix_stripe_events_status'))

    op.drop_table('stripe_events')
    with op.batch_alter_table('stripe_customers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stripe_customers_email'))
        batch_op.drop_index(batch_op.f('ix_stripe_customers_customer_id'))

    op.drop_table('stripe_customers')
    with op.batch_alter_table('stripe_charges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stripe_charges_customer_id'))

    op.drop_table('stripe_charges')
