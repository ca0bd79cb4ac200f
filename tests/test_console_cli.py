"""`flask adyen check`, `flask orders list` and `flask webhooks replay <id>`, through Flask's CliRunner.

The Adyen check talks over HTTP to a live server's simulator, as it would to Adyen."""

from sqlalchemy import select

from shop.db import db
from shop.models import Email, Notification
from tests.console_helpers import FAST, HELD, buy, count
from tests.test_console import SENTINELS
from tests.webhook_helpers import make_order


def cli(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def test_adyen_check_passes_against_the_simulator(live_server_factory):
    server = live_server_factory(ENV=dict(FAST, **SENTINELS))
    result = cli(server.app, "adyen", "check")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Environment: simulator" in out
    assert "ADYEN_API_KEY" in out and "ADYEN_HMAC_KEY_PREVIOUS" in out and "not set" in out
    assert "[ok  ] Adyen endpoint answers" in out
    assert "[ok  ] KNET is offered" in out
    assert "Go-live checklist" in out and "KNET requested in the live Customer Area" in out
    assert "Result: OK" in out
    for value in SENTINELS.values():
        assert value not in out and value.lower() not in out


def test_adyen_check_fails_when_the_endpoint_does_not_answer(live_server):
    live_server.app.config["ADYEN_API_BASE_URL"] = "http://127.0.0.1:9/checkout/v71"  # nothing listens there
    result = cli(live_server.app, "adyen", "check")
    assert result.exit_code == 1
    assert "[FAIL] Adyen endpoint answers" in result.output
    assert "[skip] KNET is offered" in result.output


def test_adyen_check_in_simulator_mode_says_to_start_the_shop(app):
    # The simulator is the shop's own /_sim: with the shop not running there is nothing to ask, and
    # nothing is wrong with the settings, so the check says what to do and does not fail.
    result = cli(app, "adyen", "check")
    assert result.exit_code == 0, result.output
    assert "[warn] Adyen endpoint answers: Not checked: the simulator is part of the shop" in result.output
    assert "Start it (make run) and run the check again" in result.output
    assert "[skip] KNET is offered" in result.output and "could not connect" not in result.output


def test_adyen_check_fails_on_a_refused_key_or_merchant_account(live_server_factory):
    shop = live_server_factory()
    # Another "Adyen" (a second simulator) that knows neither this shop's key nor its account.
    other = live_server_factory(ENV={"ADYEN_API_KEY": "another-key-entirely", "ADYEN_MERCHANT_ACCOUNT": "OtherECOM"})
    shop.app.config["ADYEN_API_BASE_URL"] = other.url + "/_sim/checkout/v71"
    result = cli(shop.app, "adyen", "check")
    assert result.exit_code == 1
    assert "HTTP 401" in result.output and "check ADYEN_API_KEY" in result.output
    other.app.config["ADYEN_API_KEY"] = shop.app.config["ADYEN_API_KEY"]
    result = cli(shop.app, "adyen", "check")
    assert result.exit_code == 1
    assert "HTTP 403" in result.output and "check ADYEN_MERCHANT_ACCOUNT" in result.output


def test_adyen_check_settings_only(app):
    result = cli(app, "adyen", "check", "--no-endpoint")
    assert result.exit_code == 0, result.output
    assert "Adyen endpoint answers" not in result.output


def test_orders_list(app):
    assert "No orders yet." in cli(app, "orders", "list").output
    paid = make_order(app, status="paid", needs_review=True)
    pending = make_order(app)
    result = cli(app, "orders", "list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["ID", "CREATED", "(UTC)"]
    assert pending in lines[1] and "pending" in lines[1]  # newest first
    assert paid in lines[2] and "paid" in lines[2] and "needs review" in lines[2] and "12.500 KWD" in lines[2]


def test_webhooks_replay_is_idempotent(live_server_factory):
    server = live_server_factory(ENV=dict(HELD, **SENTINELS))
    buy(server)
    with server.app.app_context():
        notification_id = db.session.execute(select(Notification.id)).scalar_one()
    result = cli(server.app, "webhooks", "replay", str(notification_id))
    assert result.exit_code == 0, result.output
    assert f"Notification #{notification_id} (processed) queued again." in result.output
    assert "Status: processed. no change: the order is already paid" in result.output
    assert count(server.app, Email) == 1
    for value in SENTINELS.values():
        assert value not in result.output

    missing = cli(server.app, "webhooks", "replay", "999")
    assert missing.exit_code == 1 and "No notification #999" in missing.output
