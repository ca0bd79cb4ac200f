"""Fixtures: each test gets its own app and SQLite file; `live_server` serves the app over real
HTTP on loopback, so the shop and its simulator talk to each other as they do in production."""

import threading

import pytest
from werkzeug.serving import make_server

from shop import create_app

# Settings every test app starts from: simulator mode, no .env, no background loop unless asked.
BASE_ENV = {"ADYEN_ENVIRONMENT": "simulator"}


def build_app(tmp_path, public_base_url="http://127.0.0.1:5000", **overrides):
    config = {
        "ENV": dict(BASE_ENV, PUBLIC_BASE_URL=public_base_url, **overrides.pop("ENV", {})),
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": "sqlite:///" + str(tmp_path / "shop.sqlite3"),
        "BACKGROUND_WORKER": False,
    }
    config.update(overrides)
    return create_app(config)


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
