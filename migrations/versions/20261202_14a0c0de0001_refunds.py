"""refunds: the refunds table, the order's refund_failed flag, longer statuses

A refund or reversal of a paid order (issue 14), saved with its reference and Idempotency-Key before
Adyen is called. Order statuses gain refund_pending, partially_refunded (18 characters) and
refunded, so the status columns widen from 16 to 24 characters; each timeline step may name the
refund it concerns. Each refund names the payment it gives back (an order paid twice keeps its second
payment's pspReference), and notifications are indexed by originalReference (the refund timeline).

Downgrade: the refunds go, and an order in a refund status is put back to paid (the money came).

Revision ID: 14a0c0de0001
Revises: 13a0c0de0001
Create Date: 2026-12-02 02:40:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '14a0c0de0001'
down_revision = '13a0c0de0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'refunds',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('order_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('amount_value', sa.Integer(), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('reason', sa.String(length=32), nullable=True),
        sa.Column('reference', sa.String(length=80), nullable=False),
        sa.Column('idempotency_key', sa.String(length=64), nullable=False),
        sa.Column('request_key', sa.String(length=64), nullable=False),
        sa.Column('payment_psp_reference', sa.String(length=64), nullable=False),
        sa.Column('psp_reference', sa.String(length=64), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('failure_reason', sa.Text(), nullable=True),
        sa.Column('requested_by', sa.String(length=32), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('settled_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_refunds_order_id_orders')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_refunds')),
        sa.UniqueConstraint('idempotency_key', name=op.f('uq_refunds_idempotency_key')),
        sa.UniqueConstraint('reference', name=op.f('uq_refunds_reference')),
        sa.UniqueConstraint('order_id', 'request_key', name='uq_refunds_order_id_request_key'),
    )
    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_refunds_order_id'), ['order_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_refunds_psp_reference'), ['psp_reference'], unique=False)

    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('refund_failed', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('extra_psp_reference', sa.String(length=32), nullable=True))
        batch_op.alter_column('status', existing_type=sa.String(length=16), type_=sa.String(length=24),
                              existing_nullable=False)

    # Hashed on PostgreSQL, as merchant_reference: an originalReference has no maxLength at Adyen.
    op.create_index('ix_notifications_original_reference', 'notifications', ['original_reference'], unique=False,
                    postgresql_using='hash')

    with op.batch_alter_table('order_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('refund_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_order_events_refund_id_refunds'), 'refunds', ['refund_id'], ['id'])
        for column in ('old_status', 'new_status'):
            batch_op.alter_column(column, existing_type=sa.String(length=16), type_=sa.String(length=24),
                                  existing_nullable=True)


def downgrade():
    op.drop_index('ix_notifications_original_reference', table_name='notifications')
    op.execute(
        "UPDATE orders SET status = 'paid' WHERE status IN ('refund_pending', 'partially_refunded', 'refunded')"
    )
    op.execute(
        "UPDATE order_events SET old_status = 'paid' "
        "WHERE old_status IN ('refund_pending', 'partially_refunded', 'refunded')"
    )
    op.execute(
        "UPDATE order_events SET new_status = 'paid' "
        "WHERE new_status IN ('refund_pending', 'partially_refunded', 'refunded')"
    )
    with op.batch_alter_table('order_events', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_order_events_refund_id_refunds'), type_='foreignkey')
        batch_op.drop_column('refund_id')
        for column in ('old_status', 'new_status'):
            batch_op.alter_column(column, existing_type=sa.String(length=24), type_=sa.String(length=16),
                                  existing_nullable=True)

    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.alter_column('status', existing_type=sa.String(length=24), type_=sa.String(length=16),
                              existing_nullable=False)
        batch_op.drop_column('extra_psp_reference')
        batch_op.drop_column('refund_failed')

    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_refunds_psp_reference'))
        batch_op.drop_index(batch_op.f('ix_refunds_order_id'))
    op.drop_table('refunds')
