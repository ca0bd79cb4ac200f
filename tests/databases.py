"""The tests' databases, built from the Alembic migrations (never create_all), so that the
migrations are what the suite tests.

SQLite (default): the migrations run once per session into a template file, and each app gets a
copy of it in its own tmp_path.

PostgreSQL (TEST_DATABASE_URL=postgresql+psycopg://user@host:5432/db): the migrations run once per
session into a template database, and each app gets its own database, `CREATE DATABASE … TEMPLATE`
(about 0.1 s), dropped when its test ends (or at the end of the session for module-scoped servers).
The database named in the URL is only used to create and drop the others. Names carry the pytest
process id, so runs in parallel on one server never meet, and a run that was killed is cleaned up
by the next one on the same machine.

Test databases are not kept across a power cut, so they skip waiting for the disk: SQLite
connections in the test process run with `synchronous = OFF`, and the PostgreSQL databases have
`synchronous_commit = off` (each commit still all or nothing; only its flush to disk is later).
Processes a test starts (gunicorn, `flask worker`) keep the shop's own settings.
"""

import os
import re
import secrets
import shutil
import tempfile
import threading
from pathlib import Path

from sqlalchemy import create_engine, event, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
PREFIX = "shop_test_"
_NAME = re.compile(r"^shop_test_(\d+)_[0-9a-f]+_(\d+|template)$")


def backend():
    """'postgresql' when TEST_DATABASE_URL is set, else 'sqlite'."""
    return make_url(TEST_DATABASE_URL).get_backend_name() if TEST_DATABASE_URL else "sqlite"


@event.listens_for(Engine, "connect")
def _sqlite_without_fsync(dbapi_connection, _record):
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous = OFF")
        cursor.close()


def migrate(url):
    """Bring the database at `url` to the newest migrations, the simulator's too, as `flask init-db` does."""
    from shop import create_app
    from shop.db import db, upgrade_all

    app = create_app(
        {"ENV": {"ADYEN_ENVIRONMENT": "simulator"}, "SQLALCHEMY_DATABASE_URI": url, "BACKGROUND_WORKER": False}
    )
    with app.app_context():
        upgrade_all(app)
        db.engine.dispose()


class Databases:
    """Hands out one migrated database per app; see the module docstring."""

    def __init__(self):
        self._lock = threading.Lock()
        self._template = None  # a file path (SQLite) or a database name (PostgreSQL)
        self._workdir = None
        self._created = []  # [(owner path, database name)] on PostgreSQL
        self._numbers = 0
        self._run = f"{PREFIX}{os.getpid()}_{secrets.token_hex(2)}"
        self._admin = None

    # Public ---------------------------------------------------------------------------------

    def url_for(self, owner):
        """A fresh database for an app whose files live under `owner` (a tmp_path)."""
        owner = Path(owner)
        with self._lock:
            if backend() == "sqlite":
                return self._sqlite_copy(owner)
            return self._postgres_copy(owner)

    def drop_owned_by(self, directory):
        """Drop the PostgreSQL databases handed out for apps under `directory` (a test's tmp_path)."""
        directory = Path(directory)
        with self._lock:
            mine = [(o, n) for o, n in self._created if o == directory or directory in o.parents]
            self._created = [entry for entry in self._created if entry not in mine]
        for _, name in mine:
            self._drop(name)

    def close(self):
        """End of the session: drop what is left, the template included."""
        for _, name in list(self._created):
            self._drop(name)
        self._created = []
        if backend() != "sqlite" and self._template:
            self._drop(self._template)
        if self._admin is not None:
            self._admin.dispose()
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)

    # SQLite ---------------------------------------------------------------------------------

    def _sqlite_copy(self, owner):
        if self._template is None:
            self._workdir = tempfile.mkdtemp(prefix="shop-test-template-")
            template = os.path.join(self._workdir, "template.sqlite3")
            migrate("sqlite:///" + template)
            self._template = template
        owner.mkdir(parents=True, exist_ok=True)
        path = owner / "shop.sqlite3"
        if not path.exists():  # two apps of one tmp_path share their database, as before
            shutil.copyfile(self._template, path)
        return "sqlite:///" + str(path)

    # PostgreSQL -----------------------------------------------------------------------------

    def _admin_engine(self):
        if self._admin is None:
            self._admin = create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
            self._drop_leftovers()
        return self._admin

    def _url(self, name):
        return make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)

    def _postgres_copy(self, owner):
        if self._template is None:
            template = f"{self._run}_template"
            self._create(template)
            migrate(self._url(template))
            self._template = template
        self._numbers += 1
        name = f"{self._run}_{self._numbers}"
        self._create(name, template=self._template)
        self._created.append((owner, name))
        return self._url(name)

    def _create(self, name, template=None):
        with self._admin_engine().connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
            # A database's settings are not copied from its template.
            connection.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))

    def _drop(self, name):
        with self._admin_engine().connect() as connection:
            # FORCE ends the connections that an app's pool still holds.
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def _drop_leftovers(self):
        """Drop the databases of earlier runs on this machine whose pytest process is gone."""
        with self._admin.connect() as connection:
            names = connection.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE :prefix"), {"prefix": PREFIX + "%"}
            ).scalars()
            for name in list(names):
                match = _NAME.match(name)
                if match and not _alive(int(match.group(1))):
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


databases = Databases()
