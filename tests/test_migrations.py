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

from shop.db import MIGRATIONS_DIR, db, schemas, upgrade_all
from shop.models import Notification, utcnow
from shop.webhooks import parsing, processing
from tests.webhook_helpers import envelope, item, make_order

HOW_TO_FIX = (
    'The models and the migrations differ. Generate a migration with `make migration m="what changed"`, '
    "read it, and commit it with the model change."
)


def differences(app):
    """What the models of the shop, and of each mounted plug-in, and their migrations disagree on."""
    found = []
    with app.app_context():
        with db.engine.connect() as connection:
            for metadata, directory in schemas(app):
                version_table = "alembic_version" if directory == MIGRATIONS_DIR else "sim_alembic_version"
                context = MigrationContext.configure(
                    connection, opts={"compare_type": True, "version_table": version_table}
                )
                found += [change for change in compare_metadata(context, metadata) if _of(change, metadata)]
    return found


def _of(change, metadata):
    """compare_metadata sees every table of the database: a table (or its index) that another
    schema of the app has is not this one's to remove."""
    if change[0] == "remove_table":
        return change[1].name in metadata.tables
    if change[0] == "remove_index":
        return change[1].table.name in metadata.tables
    return True


def test_the_migrations_create_exactly_the_models_tables(app):
    diff = differences(app)
    assert not diff, HOW_TO_FIX + "\n" + pprint.pformat(diff)


def test_the_migrations_have_a_single_head(app):
    """The shop's, and the simulator's (a directory of their own). Two branches each adding a
    migration make two heads: `flask db merge heads` (with `-d shop/simulator/migrations` for the
    simulator's) joins them."""
    with app.app_context():
        for _, directory in schemas(app):
            heads = ScriptDirectory.from_config(app.extensions["migrate"].migrate.get_config(directory)).get_heads()
            assert len(heads) == 1, f"several Alembic heads {heads} in {directory}: merge them (`flask db merge heads`)"


def test_every_migration_can_be_undone_and_redone(app):
    with app.app_context():
        for _, directory in reversed(schemas(app)):
            downgrade(directory=directory, revision="base")
        assert sorted(inspect(db.engine).get_table_names()) == ["alembic_version", "sim_alembic_version"]
        for _, directory in schemas(app):
            upgrade(directory=directory)
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


def test_a_test_or_live_database_has_no_simulator_table(tmp_path):
    """The simulator's tables are a branch of its own, loaded only where it is mounted: a database
    made or upgraded in test (or live) mode has none, also one a simulator ran on before."""
    from shop import create_app
    from tests.databases import databases
    from tests.test_config import FULL_TEST_ENV

    url = databases.url_for(tmp_path / "made-in-test-mode")  # a copy of the simulator-mode template
    app = create_app({"ENV": FULL_TEST_ENV, "SQLALCHEMY_DATABASE_URI": url, "BACKGROUND_WORKER": False})
    with app.app_context():
        upgrade_all(app)
        tables = set(inspect(db.engine).get_table_names())
        db.engine.dispose()
    # A copy of the suite's template, which a simulator ran on: its tables are still there, unused.
    assert {"sim_payments", "orders", "notifications", "emails"} <= tables
    fresh = create_app(
        {"ENV": FULL_TEST_ENV, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/new.db", "BACKGROUND_WORKER": False}
    )
    with fresh.app_context():
        upgrade_all(fresh)
        tables = set(inspect(db.engine).get_table_names())
        db.engine.dispose()
    assert not {name for name in tables if name.startswith("sim_")}
    assert {"orders", "notifications", "emails", "alembic_version"} <= tables
