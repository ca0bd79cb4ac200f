"""The database: one SQLAlchemy 2 engine through Flask-SQLAlchemy, and who owns its transactions.

SQLite under `instance/` by default, or PostgreSQL (`postgresql+psycopg://…`) through DATABASE_URL:
the two databases the tests run on. Queries stay portable between them; the webhook insert speaks
their shared SQL directly (shop/webhooks/inbox.py).

Transactions belong to the services: a function decorated with `@transaction` is one unit of work,
committed when it returns and rolled back when it raises; views never commit. A unit that met a
dropped connection (the server restarted, a failover, a proxy's idle timeout) or lost a
compare-and-set race (`Conflict`) is run again from its start, on a new connection: it is all or
nothing, so running it again is safe.
"""

import functools
import logging
import os
import time

import click
from flask_migrate import Migrate, upgrade
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import Pool

from shop.config import ConfigError

# The schema is created and changed by Alembic migrations in migrations/ (Flask-Migrate), never by
# create_all: `flask --app wsgi db upgrade` (run by `make run`, and a deploy step in production).
MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")

# Every constraint and index gets a predictable name, so that migrations can alter or drop it on
# PostgreSQL and SQLite (whose ALTERs Alembic runs in batch mode) alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
# Alembic announces each of its plugins at INFO when it loads them: noise in every worker's log.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


# A pooled connection unused for this long is checked (SELECT 1) before it is handed out again.
IDLE_PING_SECONDS = 10.0
# How many times a unit of work is run again after a dropped connection or a lost race.
DISCONNECT_RETRIES = 3
CONFLICT_RETRIES = 20

log = logging.getLogger(__name__)


class Conflict(RuntimeError):
    """Another transaction changed the row this one read; the unit of work runs again."""


def is_disconnect(error):
    """True for a database error that means the connection was lost (and has been thrown away)."""
    return isinstance(error, DBAPIError) and error.connection_invalidated


def transaction(unit):
    """Decorator: `unit` is one transaction. See the module docstring.

    A unit called from inside another joins it (one commit, by the outermost). Returns what the
    unit returns; re-raises the error when the retries are used up.
    """

    @functools.wraps(unit)
    def run(*args, **kwargs):
        session = db.session
        if session.info.get("unit_of_work"):
            return unit(*args, **kwargs)
        disconnects = conflicts = 0
        while True:
            session.info["unit_of_work"] = unit.__qualname__
            try:
                result = unit(*args, **kwargs)
                session.commit()
                return result
            except Conflict:
                session.rollback()
                conflicts += 1
                if conflicts > CONFLICT_RETRIES:
                    raise
            except DBAPIError as error:
                session.rollback()
                disconnects += 1
                if not is_disconnect(error) or disconnects > DISCONNECT_RETRIES:
                    raise
                log.warning("database connection lost during %s; running it again", unit.__qualname__)
            except BaseException:
                session.rollback()
                raise
            finally:
                session.info.pop("unit_of_work", None)

    return run


def end_session(_error=None):
    """At the end of a request (or a background job): roll back what it only read. A connection the
    database dropped since its last statement has nothing left to roll back: without this, closing
    the session raised there, and an answer already made became a 500."""
    try:
        db.session.rollback()
    except DBAPIError as error:
        if not is_disconnect(error):
            raise
        log.info("the database connection was lost after the last statement; nothing to roll back")


@event.listens_for(Pool, "checkin")
def _note_checkin(_dbapi_connection, record):
    if record is not None:
        record.info["checked_in_at"] = time.monotonic()


@event.listens_for(Pool, "checkout")
def _ping_if_idle(dbapi_connection, record, _proxy):
    """Pre-ping, but only a connection that sat idle: SQLAlchemy's pool_pre_ping pings on every
    checkout, and the session checks one out after every commit, so the ping was a round trip on
    every unit of work (bench/README.md measured its cost). A connection that the server or a
    firewall dropped while idle is still replaced before use; when one breaks while in use, the pool
    replaces all of its connections and the unit of work runs again on a new one (`transaction`;
    a page's view runs again, shop.Shop.dispatch_request)."""
    idle_since = record.info.get("checked_in_at") if record is not None else None
    if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
        return
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        return  # a file: nothing to lose
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
        # psycopg opens a transaction for the SELECT; end it so the connection is handed out clean.
        dbapi_connection.rollback()
    except Exception as error:  # any failure: throw this connection away, take another
        raise DisconnectionError("an idle pooled connection did not answer a ping") from error


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record):
    """SQLite: wait for a lock instead of failing at once, and let readers work beside a writer."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 10000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()


SUPPORTED_DATABASES = ("sqlite", "postgresql")


def init_app(app):
    backend = make_url(app.config["SQLALCHEMY_DATABASE_URI"]).get_backend_name()
    if backend not in SUPPORTED_DATABASES:
        raise ConfigError(
            f"DATABASE_URL: the shop runs on PostgreSQL (postgresql+psycopg://…) or SQLite, not {backend}."
        )
    if backend == "postgresql":
        # One pooled connection per thread that may need one at once. With SQLAlchemy's default of
        # 5, the 6th to 8th thread of a gunicorn worker opened and closed a connection (a new
        # PostgreSQL process) on every request.
        options = app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})
        options.setdefault("pool_size", app.config["DATABASE_POOL_SIZE"])
        options.setdefault("max_overflow", 5)  # a burst beyond it: README, max_connections
    db.init_app(app)
    app.teardown_appcontext(end_session)  # runs before Flask-SQLAlchemy's own, which closes the session
    # render_as_batch: SQLite cannot ALTER most things; Alembic copies the table instead.
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, render_as_batch=True, compare_type=True)
    app.extensions["schemas"] = []  # plug-ins' tables (add_schema)
    app.cli.add_command(init_db_command)
    # Import the models, so that the metadata (and so the migrations) has every table.
    from shop import models  # noqa: F401


def add_schema(app, metadata, migrations_dir):
    """A plug-in's own tables: their metadata, and their migrations in a directory of their own
    (with its own Alembic version table), run only where the plug-in is mounted. A database the
    plug-in never ran on (a live one) never has them."""
    app.extensions["schemas"].append((metadata, migrations_dir))


def schemas(app):
    """(metadata, migrations directory) of the shop's tables, then of each mounted plug-in's."""
    return [(db.metadata, MIGRATIONS_DIR), *app.extensions["schemas"]]


def upgrade_all(app):
    """Bring the shop's tables, then each mounted plug-in's, to their newest migration."""
    for _, directory in schemas(app):
        upgrade(directory=directory)


@click.command("init-db")
def init_db_command():
    """Create or update the tables: the shop's (`flask db upgrade`), then those of each mounted
    plug-in (in simulator mode, the simulator's: `flask db upgrade -d shop/simulator/migrations`)."""
    from flask import current_app

    upgrade_all(current_app)
    click.echo("Database ready.")
