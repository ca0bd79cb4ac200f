"""long redirect results: sim_payments.redirect_result as text, looked up by its hash; details_requested_at

Adyen's redirectResult is well over 1,000 characters (the spec allows 20,000), too long for a
unique index on PostgreSQL, so uniqueness and the lookup move to its SHA-256. details_requested_at
records the first /payments/details answer, after which a repeat gets 704 as at Adyen.

Revision ID: 15a0c0de0001
Revises: 12b0c0de0002
Create Date: 2026-12-01 22:33:45.768844

"""
import hashlib

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '15a0c0de0001'
down_revision = "12b0c0de0002"
branch_labels = None
depends_on = None

sim_payments = sa.table(
    'sim_payments',
    sa.column('id', sa.Integer),
    sa.column('redirect_result', sa.Text),
    sa.column('redirect_result_hash', sa.String(64)),
)


def upgrade():
    with op.batch_alter_table('sim_payments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('redirect_result_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('details_requested_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.alter_column('redirect_result',
               existing_type=sa.VARCHAR(length=255),
               type_=sa.Text(),
               existing_nullable=True)
        batch_op.drop_constraint(batch_op.f('uq_sim_payments_redirect_result'), type_='unique')

    # The payments finished before this revision keep resolving: their hash is filled in.
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(sim_payments.c.id, sim_payments.c.redirect_result).where(sim_payments.c.redirect_result.is_not(None))
    ).all()
    for payment_id, value in rows:
        connection.execute(
            sim_payments.update()
            .where(sim_payments.c.id == payment_id)
            .values(redirect_result_hash=hashlib.sha256(value.encode('utf-8')).hexdigest())
        )

    with op.batch_alter_table('sim_payments', schema=None) as batch_op:
        batch_op.create_unique_constraint(batch_op.f('uq_sim_payments_redirect_result_hash'), ['redirect_result_hash'])


def downgrade():
    # A value longer than the old column cannot go back into it: it is dropped, and /payments/details
    # no longer resolves that (already finished) payment, as if it had never been returned from KNET.
    op.execute(
        sim_payments.update()
        .where(sa.func.length(sim_payments.c.redirect_result) > 255)
        .values(redirect_result=None)
    )
    with op.batch_alter_table('sim_payments', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_sim_payments_redirect_result_hash'), type_='unique')
        batch_op.alter_column('redirect_result',
               existing_type=sa.Text(),
               type_=sa.VARCHAR(length=255),
               existing_nullable=True)
        batch_op.create_unique_constraint(batch_op.f('uq_sim_payments_redirect_result'), ['redirect_result'])
        batch_op.drop_column('details_requested_at')
        batch_op.drop_column('redirect_result_hash')
