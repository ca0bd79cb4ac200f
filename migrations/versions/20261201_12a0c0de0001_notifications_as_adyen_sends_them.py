"""notifications as Adyen sends them

Every authenticated webhook item is stored (issue 12), so the columns follow Adyen's Webhooks spec
rather than the shop's own limits: the text fields become TEXT (no maxLength there), amount_value a
BIGINT (int64), success nullable (an item whose `success` is neither "true" nor "false" is stored as
ignored). Deliveries are deduplicated on a fixed-width event_key (SHA-256 hex of pspReference,
eventCode, success, originalReference), since a btree index on unbounded text fails on PostgreSQL
past about 2.7 KB; for the same reason merchant_reference gets a hash index there.

Downgrade: the rows the old columns cannot hold (longer values, success null, an amount beyond
32 bits, or two rows that the old four-column key would call one) are deleted first. Adyen's own
pspReferences have 16 characters, so in practice these are items the shop ignored or flagged (report
file names, values of the wrong type).

Revision ID: 12a0c0de0001
Revises: 6684e653812e
Create Date: 2026-12-01 09:00:00.000000

"""
import hashlib
import json

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '12a0c0de0001'
down_revision = '6684e653812e'
branch_labels = None
depends_on = None

# (column, its type before this revision, nullable)
WIDENED = (
    ('psp_reference', sa.String(length=32), False),
    ('original_reference', sa.String(length=32), False),
    ('event_code', sa.String(length=64), False),
    ('merchant_reference', sa.String(length=80), False),
    ('merchant_account', sa.String(length=80), False),
    ('event_date', sa.String(length=40), True),
)


def _event_key(psp_reference, event_code, success, original_reference):
    # As shop.webhooks.parsing.event_key computes it from the item as sent (success a string).
    fields = [psp_reference, event_code, 'true' if success else 'false', original_reference or '']
    encoded = json.dumps(fields, ensure_ascii=True, sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(encoded.encode('ascii')).hexdigest()


def upgrade():
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('event_key', sa.String(length=64), nullable=True))

    notifications = sa.table(
        'notifications',
        sa.column('id', sa.Integer()),
        sa.column('event_key', sa.String()),
        sa.column('psp_reference', sa.String()),
        sa.column('event_code', sa.String()),
        sa.column('success', sa.Boolean()),
        sa.column('original_reference', sa.String()),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(
            notifications.c.id,
            notifications.c.psp_reference,
            notifications.c.event_code,
            notifications.c.success,
            notifications.c.original_reference,
        )
    ).all()
    for row_id, psp_reference, event_code, success, original_reference in rows:
        bind.execute(
            notifications.update()
            .where(notifications.c.id == row_id)
            .values(event_key=_event_key(psp_reference, event_code, success, original_reference))
        )

    op.drop_index('ix_notifications_merchant_reference', table_name='notifications')
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_constraint('uq_notification_event', type_='unique')
        batch_op.alter_column('event_key', existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(batch_op.f('uq_notifications_event_key'), ['event_key'])
        for column, old_type, nullable in WIDENED:
            batch_op.alter_column(column, existing_type=old_type, type_=sa.Text(), existing_nullable=nullable)
        batch_op.alter_column(
            'amount_value', existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=True
        )
        batch_op.alter_column('success', existing_type=sa.Boolean(), nullable=True)
    op.create_index(
        'ix_notifications_merchant_reference',
        'notifications',
        ['merchant_reference'],
        unique=False,
        postgresql_using='hash',
    )


def downgrade():
    too_long = ' OR '.join(f'length({column}) > {old_type.length}' for column, old_type, _ in WIDENED)
    op.execute(
        'DELETE FROM notifications WHERE success IS NULL OR amount_value NOT BETWEEN -2147483648 AND 2147483647 '
        f'OR {too_long}'
    )
    op.execute(
        'DELETE FROM notifications WHERE id NOT IN (SELECT MIN(id) FROM notifications '
        'GROUP BY psp_reference, event_code, success, original_reference)'
    )
    op.drop_index('ix_notifications_merchant_reference', table_name='notifications')
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_notifications_event_key'), type_='unique')
        batch_op.alter_column('success', existing_type=sa.Boolean(), nullable=False)
        batch_op.alter_column(
            'amount_value', existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=True
        )
        for column, old_type, nullable in WIDENED:
            batch_op.alter_column(column, existing_type=sa.Text(), type_=old_type, existing_nullable=nullable)
        batch_op.create_unique_constraint(
            'uq_notification_event', ['psp_reference', 'event_code', 'success', 'original_reference']
        )
        batch_op.drop_column('event_key')
    op.create_index('ix_notifications_merchant_reference', 'notifications', ['merchant_reference'], unique=False)
