"""Alembic's environment for the simulator's own tables (run by `flask --app wsgi init-db` in
simulator mode, or `flask --app wsgi db upgrade -d shop/simulator/migrations`).

Its version table is sim_alembic_version, so the shop's migrations (migrations/, alembic_version)
never see these revisions: a database the simulator never ran on has none of its tables.
"""

import logging

from alembic import context
from flask import current_app

from shop.simulator.models import SimBase

config = context.config
logger = logging.getLogger("alembic.env")
VERSION_TABLE = "sim_alembic_version"


def get_engine():
    return current_app.extensions["migrate"].db.engine


def run_migrations_online():
    conf_args = dict(current_app.extensions["migrate"].configure_args, version_table=VERSION_TABLE)
    with get_engine().connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:  # as in migrations/env.py: SQLite's batch mode copies tables
            connection.exec_driver_sql("PRAGMA foreign_keys = OFF")
            connection.commit()
        context.configure(connection=connection, target_metadata=SimBase.metadata, **conf_args)
        with context.begin_transaction():
            context.run_migrations()
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys = ON")
            connection.commit()


if context.is_offline_mode():
    raise SystemExit("The simulator's migrations run online only.")
run_migrations_online()
