"""The schema is the migrations' (migrations/, Alembic through Flask-Migrate), and they match the models.

Every test database is built by running the migrations (tests/databases.py), so these tests and the
whole suite run on SQLite, and on PostgreSQL when TEST_DATABASE_URL is set.
"""

import pprint

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from shop.db import MIGRATIONS_DIR, db

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
