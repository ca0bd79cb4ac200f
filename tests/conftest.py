"""Fixtures: each test gets its own app and database; `live_server` serves the app over real
HTTP on loopback, so the shop and its simulator talk to each other as they do in production.

The database is a copy of one built from the Alembic migrations: a SQLite file in tmp_path, or,
when TEST_DATABASE_URL names a PostgreSQL server, a database of its own there (tests/databases.py)."""

import os
import threading

import pytest
from werkzeug.serving import make_server

from shop import create_app, i18n
from tests.databases import backend, databases

# Settings every test app starts from: simulator mode, no .env, no background loop unless asked.
BASE_ENV = {"ADYEN_ENVIRONMENT": "simulator"}


def build_app(tmp_path, public_base_url="http://127.0.0.1:5000", **overrides):
    config = {
        "ENV": dict(BASE_ENV, PUBLIC_BASE_URL=public_base_url, **overrides.pop("ENV", {})),
        "TESTING": True,
        "BACKGROUND_WORKER": False,
    }
    if "SQLALCHEMY_DATABASE_URI" not in overrides:
        config["SQLALCHEMY_DATABASE_URI"] = databases.url_for(tmp_path)
    config.update(overrides)
    return create_app(config)


def process_env(app, **settings):
    """The environment of a shop process a test starts (gunicorn, `flask worker`, a CLI command) on
    `app`'s database: the test run's own settings (TEST_DATABASE_URL, ADYEN_*, …) left out."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ADYEN_", "SIMULATOR_", "WEBHOOK_", "MAIL_", "TEST_DATABASE", "BACKGROUND_"))
    }
    env.update(ADYEN_ENVIRONMENT="simulator", DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"], **settings)
    return env


def pytest_configure(config):
    """Compile the translations (.mo) when missing or older than their .po: `make test` does it
    too, but pytest run on its own must not test English pages where Arabic ones were meant."""
    i18n.compile_catalogs()


def pytest_report_header(config):
    return f"database: {backend()} (built from migrations/; TEST_DATABASE_URL selects PostgreSQL)"


@pytest.fixture(scope="session", autouse=True)
def _test_databases():
    yield databases
    databases.close()


@pytest.fixture(autouse=True)
def _drop_test_databases(request):
    """PostgreSQL: drop the databases of this test's apps when it ends (after its servers stop)."""
    directory = request.getfixturevalue("tmp_path") if backend() != "sqlite" else None
    yield
    if directory is not None:
        databases.drop_owned_by(directory)


@pytest.fixture
def app(tmp_path):
    """An app with CSRF checks off, for tests of single views through Flask's test client."""
    return build_app(tmp_path, WTF_CSRF_ENABLED=False)


@pytest.fixture
def client(app):
    return app.test_client()


class LiveServer:
    """The app served by a threaded werkzeug server on a free loopback port."""

    def __init__(self, tmp_path, **overrides):
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.server = make_server("127.0.0.1", 0, None, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        overrides.setdefault("WORKER_INTERVAL", 0.05)
        overrides.setdefault("BACKGROUND_WORKER", True)
        self.app = build_app(tmp_path, public_base_url=self.url, **overrides)
        self.server.app = self.app
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        worker = self.app.extensions.get("worker")
        if worker:
            worker.stop()


@pytest.fixture
def live_server_factory(tmp_path):
    """Start servers with custom settings: `live_server_factory(ENV={...}, SOME_SETTING=...)`."""
    servers = []

    def start(**overrides):
        server = LiveServer(tmp_path / f"server{len(servers)}", **overrides)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def live_server(live_server_factory):
    return live_server_factory()
