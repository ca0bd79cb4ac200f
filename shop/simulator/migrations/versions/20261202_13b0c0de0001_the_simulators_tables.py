"""the simulator's tables, with migrations of their own

Revision ID: 13b0c0de0001
Revises:
Create Date: 2026-12-02 00:30:00

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "13b0c0de0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "sim_faults",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("endpoint", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=True),
        sa.Column("fired", sa.Integer(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sim_faults")),
    )
    with op.batch_alter_table("sim_faults", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sim_faults_endpoint"), ["endpoint"], unique=False)

    op.create_table(
        "sim_idempotent_responses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("endpoint", sa.String(length=40), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response_json", sa.JSON(), nullable=True),
        sa.Column("psp_reference", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sim_idempotent_responses")),
        sa.UniqueConstraint("endpoint", "key_hash", name="uq_sim_idempotency_endpoint_key"),
    )
    op.create_table(
        "sim_payments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("psp_reference", sa.String(length=16), nullable=False),
        sa.Column("page_token", sa.String(length=64), nullable=False),
        sa.Column("merchant_account", sa.String(length=80), nullable=False),
        sa.Column("merchant_reference", sa.String(length=80), nullable=False),
        sa.Column("amount_value", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("country_code", sa.String(length=100), nullable=True),
        sa.Column("payment_method_type", sa.String(length=32), nullable=False),
        sa.Column("return_url", sa.Text(), nullable=False),
        sa.Column("shopper_first_name", sa.String(length=80), nullable=True),
        sa.Column("shopper_last_name", sa.String(length=80), nullable=True),
        sa.Column("shopper_email", sa.String(length=256), nullable=True),
        sa.Column("telephone_number", sa.String(length=64), nullable=True),
        sa.Column("shopper_locale", sa.String(length=32), nullable=True),
        sa.Column("redirect_to_issuer_method", sa.String(length=8), nullable=True),
        sa.Column("redirect_from_issuer_method", sa.String(length=8), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("result_code", sa.String(length=32), nullable=True),
        sa.Column("refusal_reason", sa.String(length=100), nullable=True),
        sa.Column("refusal_reason_code", sa.String(length=8), nullable=True),
        sa.Column("bank", sa.String(length=16), nullable=True),
        sa.Column("card_last4", sa.String(length=4), nullable=True),
        sa.Column("redirect_result", sa.Text(), nullable=True),
        sa.Column("redirect_result_hash", sa.String(length=64), nullable=True),
        sa.Column("details_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("offer_closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sim_payments")),
        sa.UniqueConstraint("page_token", name=op.f("uq_sim_payments_page_token")),
        sa.UniqueConstraint("psp_reference", name=op.f("uq_sim_payments_psp_reference")),
        sa.UniqueConstraint("redirect_result_hash", name=op.f("uq_sim_payments_redirect_result_hash")),
    )
    with op.batch_alter_table("sim_payments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sim_payments_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_sim_payments_merchant_reference"), ["merchant_reference"], unique=False)
        batch_op.create_index(batch_op.f("ix_sim_payments_status"), ["status"], unique=False)

    op.create_table(
        "sim_webhook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("payment_id", sa.Integer(), nullable=True),
        sa.Column("event_code", sa.String(length=40), nullable=False),
        sa.Column("psp_reference", sa.String(length=16), nullable=False),
        sa.Column("merchant_reference", sa.String(length=80), nullable=False),
        sa.Column("success", sa.String(length=5), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("target_url", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_response_body", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("duplicate_of", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["sim_payments.id"], name=op.f("fk_sim_webhook_deliveries_payment_id_sim_payments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sim_webhook_deliveries")),
    )
    with op.batch_alter_table("sim_webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sim_webhook_deliveries_due_at"), ["due_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_sim_webhook_deliveries_payment_id"), ["payment_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sim_webhook_deliveries_status"), ["status"], unique=False)


def downgrade():
    with op.batch_alter_table("sim_webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sim_webhook_deliveries_status"))
        batch_op.drop_index(batch_op.f("ix_sim_webhook_deliveries_payment_id"))
        batch_op.drop_index(batch_op.f("ix_sim_webhook_deliveries_due_at"))

    op.drop_table("sim_webhook_deliveries")
    with op.batch_alter_table("sim_payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sim_payments_status"))
        batch_op.drop_index(batch_op.f("ix_sim_payments_merchant_reference"))
        batch_op.drop_index(batch_op.f("ix_sim_payments_expires_at"))

    op.drop_table("sim_payments")
    op.drop_table("sim_idempotent_responses")
    with op.batch_alter_table("sim_faults", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sim_faults_endpoint"))

    op.drop_table("sim_faults")
