"""The background loop in a process of its own: web processes started with BACKGROUND_WORKER=0
only store webhooks, and `flask --app wsgi worker` applies them, until SIGTERM stops it cleanly."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shop import create_app
from shop.config import ConfigError
from tests.databases import databases
from tests.webhook_helpers import emails, envelope, item, make_order, notifications, order_status, post, wait_for

ROOT = Path(__file__).resolve().parent.parent


def start_worker(app, log_path):
    """`flask --app wsgi worker` on the database and settings of `app`, as a service would run it."""
    # The test run's own settings (TEST_DATABASE_URL, ADYEN_*, …) must not leak into the worker.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ADYEN_", "SIMULATOR_", "WEBHOOK_", "MAIL_", "TEST_DATABASE", "BACKGROUND_"))
    }
    env.update(
        ADYEN_ENVIRONMENT="simulator",
        DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"],
        PUBLIC_BASE_URL=app.config["PUBLIC_BASE_URL"],
        # The .env the web processes share says 0: `flask worker` runs the loop all the same.
        BACKGROUND_WORKER="0",
    )
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--interval", "0.1"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()  # the child has its own copy of the file
    return process


def test_a_worker_process_applies_what_web_processes_only_store(live_server_factory, tmp_path):
    live = live_server_factory(BACKGROUND_WORKER=False)
    app = live.app
    reference = make_order(app)
    response = post(live, envelope(item(app, reference)))
    assert (response.status_code, response.text) == (200, "[accepted]")

    # Stored and acknowledged, but nothing in the web process applies it.
    time.sleep(0.5)
    assert [n.status for n in notifications(app)] == ["pending"]
    assert order_status(app, reference) == "pending"
    assert emails(app, reference) == []

    log_path = tmp_path / "worker.log"
    worker = start_worker(app, log_path)
    try:
        wait_for(lambda: order_status(app, reference) == "paid", timeout=30, message="the order paid by the worker")
        # The email is queued with the order change, then the worker's email job keeps it (no MAIL_SERVER).
        wait_for(lambda: [e.status for e in emails(app, reference)] == ["kept"], message="one email, kept")
        assert [n.status for n in notifications(app)] == ["processed"]

        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=10) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(5)
    output = log_path.read_text(errors="replace")
    assert (
        "background worker started: process webhooks, send emails, close orders no result came for, "
        "send again refunds that got no answer, refund flagged payments (AUTO_REFUND_FLAGGED), "
        "simulator webhook deliveries" in output
    )
    assert "every 0.1 s" in output
    assert output.count("background worker stopped") == 1
    assert "Traceback" not in output


def app_with_env(tmp_path, **env):
    """An app whose BACKGROUND_WORKER comes from the environment only (build_app would set it)."""
    return create_app(
        {
            "ENV": {"ADYEN_ENVIRONMENT": "simulator", **env},
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": databases.url_for(tmp_path),
        }
    )


@pytest.mark.parametrize("value", ["0", "false", "no", "OFF"])
def test_background_worker_off_in_the_environment_starts_no_thread(tmp_path, value):
    app = app_with_env(tmp_path, BACKGROUND_WORKER=value)
    assert app.config["BACKGROUND_WORKER"] is False
    assert app.extensions["worker"]._thread is None


def test_the_thread_runs_by_default(tmp_path):
    app = app_with_env(tmp_path)
    worker = app.extensions["worker"]
    try:
        assert app.config["BACKGROUND_WORKER"] is True
        assert worker._thread.is_alive()
    finally:
        worker.stop()
    assert not worker._thread.is_alive()


def test_a_bad_background_worker_value_stops_start_up(tmp_path):
    with pytest.raises(ConfigError, match="BACKGROUND_WORKER") as raised:
        app_with_env(tmp_path, BACKGROUND_WORKER="maybe")
    assert "maybe" not in str(raised.value)
