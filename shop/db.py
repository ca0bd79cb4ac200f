"""The database: one SQLAlchemy 2 engine through Flask-SQLAlchemy.

SQLite under `instance/` by default, anything SQLAlchemy speaks (PostgreSQL with
`postgresql+psycopg://…`) through DATABASE_URL. Queries stay portable.
"""

import click
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record):
    """SQLite: wait for a lock instead of failing at once, and let readers work beside a writer."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 10000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()


def init_app(app):
    db.init_app(app)
    app.cli.add_command(init_db_command)
    with app.app_context():
        # Import every model module so that create_all sees all tables.
        from shop import models  # noqa: F401

        if app.config["ADYEN_ENVIRONMENT"] == "simulator":
            from shop.simulator import models as sim_models  # noqa: F401
        db.create_all()


@click.command("init-db")
def init_db_command():
    """Create any missing tables."""
    db.create_all()
    click.echo("Database ready.")
