"""Start-up configuration: simulator mode needs nothing; test and live mode name what is missing."""

import pytest

from shop.config import REQUIRED_OUTSIDE_SIMULATOR, ConfigError, load_settings

FULL_TEST_ENV = {
    "ADYEN_ENVIRONMENT": "test",
    "ADYEN_API_KEY": "AQE-secret-key-value",
    "ADYEN_MERCHANT_ACCOUNT": "ShopECOM",
    "ADYEN_HMAC_KEY": "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056",
    "WEBHOOK_USERNAME": "hook",
    "WEBHOOK_PASSWORD": "hook-password-value",
    "PUBLIC_BASE_URL": "https://shop.example.com",
    "SECRET_KEY": "secret-key-value",
}


def test_simulator_mode_needs_no_settings(tmp_path):
    settings = load_settings({})
    assert settings["ADYEN_ENVIRONMENT"] == "simulator"
    assert settings["PUBLIC_BASE_URL"] == "http://127.0.0.1:5000"
    assert settings["PLUGINS"] == ("shop.simulator",)
    # The simulator plug-in, once mounted, is where the shop's Adyen client calls.
    from shop import create_app

    app = create_app({"ENV": {}, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db", "BACKGROUND_WORKER": False})
    assert app.config["ADYEN_API_BASE_URL"] == "http://127.0.0.1:5000/_sim/checkout/v71"
    assert app.extensions["adyen"].base_url == "http://127.0.0.1:5000/_sim/checkout/v71"


def test_port_moves_the_default_public_url():
    assert load_settings({"PORT": "8123"})["PUBLIC_BASE_URL"] == "http://127.0.0.1:8123"


def test_test_mode_uses_adyen_test_endpoint():
    assert load_settings(FULL_TEST_ENV)["ADYEN_API_BASE_URL"] == "https://checkout-test.adyen.com/v71"


def test_live_mode_builds_the_prefixed_url():
    env = dict(FULL_TEST_ENV, ADYEN_ENVIRONMENT="live", ADYEN_LIVE_URL_PREFIX="1797a841fbb37ca7-AdyenDemo")
    assert (
        load_settings(env)["ADYEN_API_BASE_URL"]
        == "https://1797a841fbb37ca7-AdyenDemo-checkout-live.adyenpayments.com/checkout/v71"
    )


@pytest.mark.parametrize("missing", REQUIRED_OUTSIDE_SIMULATOR)
def test_each_missing_setting_is_named(missing):
    env = dict(FULL_TEST_ENV)
    del env[missing]
    with pytest.raises(ConfigError, match=missing):
        load_settings(env)


def test_live_mode_needs_the_url_prefix_and_https():
    env = dict(FULL_TEST_ENV, ADYEN_ENVIRONMENT="live")
    with pytest.raises(ConfigError, match="ADYEN_LIVE_URL_PREFIX"):
        load_settings(env)
    env.update(ADYEN_LIVE_URL_PREFIX="abc", PUBLIC_BASE_URL="http://shop.example.com")
    with pytest.raises(ConfigError, match="https"):
        load_settings(env)


def test_errors_never_show_secret_values():
    env = dict(FULL_TEST_ENV, ADYEN_HMAC_KEY="not-hex-secret-value")
    with pytest.raises(ConfigError) as raised:
        load_settings(env)
    assert "ADYEN_HMAC_KEY" in str(raised.value)
    assert "not-hex-secret-value" not in str(raised.value)


def test_unknown_environment_is_refused():
    with pytest.raises(ConfigError, match="ADYEN_ENVIRONMENT"):
        load_settings({"ADYEN_ENVIRONMENT": "production"})


def test_app_refuses_to_start_without_settings_in_test_mode(tmp_path):
    from shop import create_app

    with pytest.raises(ConfigError, match="ADYEN_API_KEY"):
        create_app({"ENV": {"ADYEN_ENVIRONMENT": "test"}, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})


def test_simulator_is_mounted_only_in_simulator_mode(tmp_path):
    from shop import create_app

    app = create_app(
        {"ENV": FULL_TEST_ENV, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db", "BACKGROUND_WORKER": False}
    )
    assert not any(rule.rule.startswith("/_sim") for rule in app.url_map.iter_rules())
    client = app.test_client()
    assert client.post("/_sim/checkout/v71/payments", json={}, base_url="https://shop.example.com").status_code == 404


@pytest.mark.parametrize(
    "name, value",
    [
        ("MAIL_PORT", "smtp"),
        ("DATABASE_POOL_SIZE", "many"),
        ("DATABASE_POOL_SIZE", "0"),
        ("WEBHOOK_LEASE_SECONDS", "0"),
        ("MAIL_MAX_ATTEMPTS", "ten"),
        ("RECONCILE_AFTER_SECONDS", "later"),
    ],
)
def test_malformed_settings_are_named(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


@pytest.mark.parametrize(
    "env, message",
    [
        ({"MAIL_LEASE_SECONDS": "20", "MAIL_TIMEOUT": "10"}, "MAIL_LEASE_SECONDS must be more than 3 × MAIL_TIMEOUT"),
        ({"RECONCILE_AFTER_SECONDS": "30"}, "RECONCILE_AFTER_SECONDS must be more than WORKER_TIMEOUT"),
    ],
)
def test_leases_that_would_let_work_be_done_twice_stop_start_up(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


@pytest.mark.parametrize(
    "name, value",
    [
        ("SIMULATOR_WEBHOOK_DELAY", "soon"),
        ("SIMULATOR_RETURN_METHOD", "PUT"),
        ("SIMULATOR_704_STATUS", "500"),  # Adyen's docs name 422 and 409 only
        ("SIMULATOR_DELIVERY_LEASE", "5"),  # shorter than a send may take
        ("SIMULATOR_OFFER_EXPIRY", "0"),
        ("SIMULATOR_OFFER_EXPIRY", "90000"),  # longer than the 24 hours Adyen allows a session
    ],
)
def test_malformed_simulator_settings_are_named_when_it_is_mounted(tmp_path, name, value):
    from shop import create_app

    with pytest.raises(ConfigError, match=name):
        create_app({"ENV": {name: value}, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})


def test_a_database_other_than_postgresql_or_sqlite_is_refused_by_name():
    from shop import create_app

    with pytest.raises(ConfigError, match="PostgreSQL .* or SQLite, not mysql"):
        create_app({"ENV": {"ADYEN_ENVIRONMENT": "simulator"}, "SQLALCHEMY_DATABASE_URI": "mysql://shop@db/shop"})


def test_flagged_payments_are_not_refunded_automatically_unless_asked():
    """A merchant decides (README, Refunds): off by default, and a value that is not yes or no stops start-up."""
    assert load_settings({})["AUTO_REFUND_FLAGGED"] is False
    assert load_settings({"AUTO_REFUND_FLAGGED": "on"})["AUTO_REFUND_FLAGGED"] is True
    with pytest.raises(ConfigError, match="^AUTO_REFUND_FLAGGED must be 1") as raised:
        load_settings({"AUTO_REFUND_FLAGGED": "sometimes"})
    assert "sometimes" not in str(raised.value)
