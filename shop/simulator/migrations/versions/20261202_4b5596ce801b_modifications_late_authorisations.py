"""modifications (refunds, reversals, cancels), late authorisations, longer names

Revision ID: 4b5596ce801b
Revises: 13b0c0de0001
Create Date: 2026-12-02 02:31:52

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "4b5596ce801b"
down_revision = "13b0c0de0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "sim_modifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("psp_reference", sa.String(length=16), nullable=False),
        sa.Column("payment_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("merchant_reference", sa.String(length=80), nullable=True),
        sa.Column("amount_value", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("merchant_refund_reason", sa.String(length=32), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["sim_payments.id"], name=op.f("fk_sim_modifications_payment_id_sim_payments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sim_modifications")),
        sa.UniqueConstraint("psp_reference", name=op.f("uq_sim_modifications_psp_reference")),
    )
    with op.batch_alter_table("sim_modifications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sim_modifications_payment_id"), ["payment_id"], unique=False)

    # The modification endpoints' paths ("/payments/{paymentPspReference}/reversals") are longer than 40.
    for table in ("sim_faults", "sim_idempotent_responses"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                "endpoint", existing_type=sa.String(length=40), type_=sa.String(length=64), existing_nullable=False
            )
    with op.batch_alter_table("sim_payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("authorise_after_close", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("modified_value", sa.BigInteger(), server_default="0", nullable=False))
    # A REPORT_AVAILABLE's pspReference is the report's file name.
    with op.batch_alter_table("sim_webhook_deliveries", schema=None) as batch_op:
        batch_op.alter_column(
            "psp_reference", existing_type=sa.String(length=16), type_=sa.String(length=255), existing_nullable=False
        )


def downgrade():
    with op.batch_alter_table("sim_webhook_deliveries", schema=None) as batch_op:
        batch_op.alter_column(
            "psp_reference", existing_type=sa.String(length=255), type_=sa.String(length=16), existing_nullable=False
        )
    with op.batch_alter_table("sim_payments", schema=None) as batch_op:
        batch_op.drop_column("modified_value")
        batch_op.drop_column("authorise_after_close")
    for table in ("sim_idempotent_responses", "sim_faults"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                "endpoint", existing_type=sa.String(length=64), type_=sa.String(length=40), existing_nullable=False
            )
    with op.batch_alter_table("sim_modifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sim_modifications_payment_id"))
    op.drop_table("sim_modifications")
