"""What a production deployment relies on: the reverse-proxy setting, the connection pool's idle
ping, the background loop staying out of `flask` commands, and the WSGI entry point."""

import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from flask import jsonify, request
from sqlalchemy import text

from shop import db as shop_db
from shop.config import ConfigError, load_settings
from shop.db import db
from tests.conftest import build_app
from tests.databases import backend
from tests.shopper import Shopper, order_token, text_of
from tests.simulator_helpers import LONGEST_REDIRECT_RESULT

ROOT = Path(__file__).resolve().parent.parent


def probe_app(tmp_path, **env):
    app = build_app(tmp_path, ENV=env)

    @app.get("/_probe")
    def probe():
        return jsonify(scheme=request.scheme, remote_addr=request.remote_addr, host=request.host)

    return app


FORWARDED = {
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "127.0.0.1",
}


def test_behind_a_proxy_the_forwarded_headers_name_the_client_and_https(tmp_path):
    app = probe_app(tmp_path, PROXY_FIX_HOPS="1")
    seen = app.test_client().get("/_probe", headers=FORWARDED, environ_base={"REMOTE_ADDR": "10.0.0.2"}).get_json()
    assert seen == {"scheme": "https", "remote_addr": "203.0.113.7", "host": "127.0.0.1"}


def test_without_a_proxy_forwarded_headers_are_ignored(tmp_path):
    app = probe_app(tmp_path)
    assert app.config["PROXY_FIX_HOPS"] == 0
    seen = app.test_client().get("/_probe", headers=FORWARDED, environ_base={"REMOTE_ADDR": "10.0.0.2"}).get_json()
    assert (seen["scheme"], seen["remote_addr"]) == ("http", "10.0.0.2")


def test_only_the_last_hops_are_trusted(tmp_path):
    # A client can send its own X-Forwarded-For; the one proxy appends the address it saw.
    app = probe_app(tmp_path, PROXY_FIX_HOPS="1")
    headers = dict(FORWARDED, **{"X-Forwarded-For": "198.51.100.1, 203.0.113.7"})
    seen = app.test_client().get("/_probe", headers=headers).get_json()
    assert seen["remote_addr"] == "203.0.113.7"


def test_behind_a_proxy_a_refused_webhook_is_logged_with_the_client_address(tmp_path):
    """The webhook receiver sits inside ProxyFix, like every page: the rejection log names the
    client the proxy saw, not the proxy."""
    app = probe_app(tmp_path, PROXY_FIX_HOPS="1")
    response = app.test_client().post(
        "/webhooks/adyen", data=b"{}", headers=FORWARDED, environ_base={"REMOTE_ADDR": "10.0.0.2"}
    )
    assert response.status_code == 401
    with app.app_context():
        assert db.session.execute(text("SELECT remote_addr, reason FROM webhook_rejections")).all() == [
            ("203.0.113.7", "no basic auth")
        ]


@pytest.mark.parametrize("value", ["-1", "one", "9"])
def test_a_wrong_proxy_hops_setting_stops_start_up(value):
    with pytest.raises(ConfigError, match="PROXY_FIX_HOPS"):
        load_settings({"ADYEN_ENVIRONMENT": "simulator", "PROXY_FIX_HOPS": value})


def test_no_background_loop_runs_inside_a_flask_command(tmp_path):
    """`flask db upgrade` must not start the loop (it would query tables being created)."""
    database = tmp_path / "cli.sqlite3"
    env = {"ADYEN_ENVIRONMENT": "simulator", "DATABASE_URL": f"sqlite:///{database}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "background job" not in done.stderr
    assert "Running upgrade" in done.stderr


@pytest.mark.skipif(backend() != "postgresql", reason="needs PostgreSQL (TEST_DATABASE_URL)")
def test_a_pooled_connection_dropped_while_idle_is_replaced(tmp_path, monkeypatch):
    """The server (or a firewall) closed the pool's idle connections: the next request still works."""
    app = build_app(tmp_path)
    client = app.test_client()
    # The result page of an order that does not exist: one query, then 404.
    missing = "/orders/" + "n" * 32
    assert client.get(missing).status_code == 404
    with app.app_context():
        database = db.engine.url.database
        pooled = db.engine.pool.checkedin()
    assert pooled >= 1
    # Another session ends every connection to the shop's database, as a server restart would.
    with build_app(tmp_path / "other", SQLALCHEMY_DATABASE_URI=app.config["SQLALCHEMY_DATABASE_URI"]).app_context():
        with db.engine.connect() as connection:
            ended = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": database},
            ).scalar()
        db.engine.dispose()
    assert ended >= 1
    monkeypatch.setattr(shop_db, "IDLE_PING_SECONDS", 0.0)  # every pooled connection counts as idle
    time.sleep(0.05)
    assert client.get(missing).status_code == 404
    with app.app_context():
        assert db.session.execute(text("SELECT 1")).scalar() == 1
        db.session.rollback()


@pytest.mark.skipif(backend() != "postgresql", reason="needs PostgreSQL (TEST_DATABASE_URL)")
def test_every_thread_of_a_gunicorn_worker_keeps_its_pooled_connection(tmp_path):
    """Eight threads (a gthread worker's) at once each need a connection; afterwards all eight stay
    in the pool, so the next requests open none (SQLAlchemy's default pool would keep five)."""
    app = build_app(tmp_path)
    together = threading.Barrier(8)

    def request_like():
        with app.app_context():
            db.session.execute(text("SELECT 1"))
            together.wait(10)  # all eight hold their connection at this moment
            db.session.rollback()

    threads = [threading.Thread(target=request_like) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    with app.app_context():
        assert db.engine.pool.checkedin() == 8


def documented_gunicorn_arguments():
    """The gunicorn command of the README's production section, as its arguments."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = re.search(r"^BACKGROUND_WORKER=0 \.venv/bin/gunicorn (.+?wsgi:app)$", readme, re.MULTILINE | re.DOTALL)
    assert command, "the README's production section has no gunicorn command"
    return shlex.split(command.group(1).replace("\\\n", " "))


def test_the_documented_proxy_lets_a_long_return_through():
    """nginx in front must take the same request line as gunicorn behind it (a 20,000-character
    redirectResult is up to 60,000 bytes percent-encoded): one buffer of at least that."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    count, size = re.search(r"large_client_header_buffers (\d+) (\d+)k;", readme).groups()
    assert int(count) >= 2 and int(size) * 1024 >= 3 * 20_000 + 200


def test_wsgi_entry_point_serves_under_gunicorn(tmp_path):
    """The documented command, `gunicorn … wsgi:app` after `flask init-db`, on a loopback port
    (two workers instead of four): a shopper's return with the longest redirectResult Adyen's spec
    allows reaches the shop, which gunicorn's default request-line limit would refuse."""
    database = f"sqlite:///{tmp_path}/gunicorn.sqlite3"
    env = {"ADYEN_ENVIRONMENT": "simulator", "DATABASE_URL": database, "PATH": "/usr/bin:/bin"}
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "init-db"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    from tests.test_concurrency_pg import free_port

    port = free_port()
    arguments = documented_gunicorn_arguments()
    assert "--limit-request-line" in arguments
    arguments[arguments.index("--bind") + 1] = f"127.0.0.1:{port}"
    arguments[arguments.index("--workers") + 1] = "2"
    env.update(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", BACKGROUND_WORKER="0")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", *arguments],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # Ready when both workers answer: with --reuse-port each has its own socket, and a new
        # connection may land on one still building its app, so several fresh ones in a row must pass.
        deadline, answered = time.monotonic() + 90, 0
        while answered < 8:
            assert server.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
            try:
                response = requests.get(f"http://127.0.0.1:{port}/", timeout=2)
                answered += 1
            except requests.RequestException:
                answered = 0
                time.sleep(0.1)
        assert response.status_code == 200
        assert "KNET" in response.text

        shopper = Shopper(f"http://127.0.0.1:{port}")
        shopper.add_to_cart()
        knet_page = shopper.place_order()
        assert "Card Number" in text_of(knet_page.text)
        token = order_token(knet_page)
        longest = quote(LONGEST_REDIRECT_RESULT, safe="")
        back = shopper.get(f"/checkout/return/{token}?redirectResult={longest}", allow_redirects=False)
        # The shop's answer (to its result page), not gunicorn's "414 URI Too Long".
        assert back.status_code == 303, back.text[:200]
        assert back.headers["Location"].endswith(f"/orders/{token}")
    finally:
        server.terminate()
        server.wait(15)
    # gunicorn's own lines, from the master and from each worker as it exits, come through whole.
    log = server.stderr.read().decode("utf-8", "replace")
    assert "--- Logging error ---" not in log
    assert log.count("Booting worker with pid") == 2
    assert log.count("Worker exiting (pid:") == 2, log
