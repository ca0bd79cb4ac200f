"""The schema is the migrations' (migrations/, Alembic through Flask-Migrate), and they match the models.

Every test database is built by running the migrations (tests/databases.py), so these tests and the
whole suite run on SQLite, and on PostgreSQL when TEST_DATABASE_URL is set.
"""

import pprint

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, select, text

from shop.db import MIGRATIONS_DIR, db
from shop.models import Notification, utcnow
from shop.webhooks import parsing, processing
from tests.webhook_helpers import envelope, item, make_order

HOW_TO_FIX = (
    'The models and the migrations differ. Generate a migration with `make migration m="what changed"`, '
    "read it, and commit it with the model change."
)


def differences(app):
    with app.app_context():
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, db.metadata)


def test_the_migrations_create_exactly_the_models_tables(app):
    diff = differences(app)
    assert not diff, HOW_TO_FIX + "\n" + pprint.pformat(diff)


def test_the_migrations_have_a_single_head(app):
    # Two branches each adding a migration make two heads: `flask db merge heads` joins them.
    with app.app_context():
        heads = ScriptDirectory.from_config(app.extensions["migrate"].migrate.get_config()).get_heads()
    assert len(heads) == 1, f"several Alembic heads {heads}: run `.venv/bin/flask --app wsgi db merge heads`"


def test_every_migration_can_be_undone_and_redone(app):
    with app.app_context():
        downgrade(directory=MIGRATIONS_DIR, revision="base")
        assert inspect(db.engine).get_table_names() == ["alembic_version"]
        upgrade(directory=MIGRATIONS_DIR)
    assert not differences(app)


def test_every_table_of_the_models_is_in_the_database(app):
    with app.app_context():
        tables = set(inspect(db.engine).get_table_names())
    assert set(db.metadata.tables) <= tables
    assert {"orders", "notifications", "sim_webhook_deliveries", "alembic_version"} <= tables


def test_notifications_stored_before_12a0c0de0001_keep_their_dedupe_key(app):
    """Rows stored with the four-column key get the event_key a new delivery of the same event
    gets, so a redelivery after the upgrade is still a duplicate; the downgrade keeps the rows the
    old columns can hold and drops the others (ignored ones the old shop could not have stored)."""
    reference = make_order(app)
    old = item(app, reference, psp="OLDPSP0000000001")
    with app.app_context():
        downgrade(directory=MIGRATIONS_DIR, revision="6684e653812e")
        db.session.execute(
            text(
                "INSERT INTO notifications (psp_reference, original_reference, event_code, success, "
                "merchant_reference, merchant_account, raw_body, duplicates, status, attempts, next_attempt_at, "
                "received_at) VALUES ('OLDPSP0000000001', '', 'AUTHORISATION', :yes, :reference, 'x', '{}', 0, "
                "'processed', 1, :now, :now)"
            ),
            {"yes": True, "reference": reference, "now": utcnow()},
        )
        db.session.commit()
        upgrade(directory=MIGRATIONS_DIR)
        assert db.session.execute(select(Notification.event_key)).scalar() == parsing.event_key(old)
        assert processing.store(parsing.parse_item(old), envelope(old)).duplicate

        wide = item(app, reference, psp="P" * 40, success="maybe")
        processing.store(parsing.parse_item(wide), envelope(wide))
        downgrade(directory=MIGRATIONS_DIR, revision="6684e653812e")
        rows = db.session.execute(text("SELECT psp_reference, duplicates FROM notifications")).all()
        assert [tuple(row) for row in rows] == [("OLDPSP0000000001", 1)]
        db.session.commit()
        upgrade(directory=MIGRATIONS_DIR)
    assert not differences(app)
