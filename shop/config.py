"""Settings from the environment (and `.env`), checked once at start-up.

In simulator mode every setting has a development default, so `make run` needs no `.env`.
In test or live mode a missing setting stops start-up with a message that names it,
the way Adyen's example apps fail fast.
"""

import os
import re
from fractions import Fraction

ENVIRONMENTS = ("simulator", "test", "live")

# Defaults used only in simulator mode. None of them is a real credential.
SIMULATOR_DEFAULTS = {
    "ADYEN_API_KEY": "sim_api_key_not_secret",
    "ADYEN_MERCHANT_ACCOUNT": "KnetDemoShopECOM",
    # 32 bytes, hex, as Adyen's Customer Area shows an HMAC key.
    "ADYEN_HMAC_KEY": "7A1C9F3B5D2E4A6C8B0D1F3E5A7C9B2D4F6E8A0C2B4D6F8E1A3C5B7D9F0E2A4C",
    "WEBHOOK_USERNAME": "adyen-webhook",
    "WEBHOOK_PASSWORD": "sim-webhook-password",
    "SECRET_KEY": "dev-secret-key-simulator-only",
}

# What test and live mode need; each must be set or start-up stops.
REQUIRED_OUTSIDE_SIMULATOR = (
    "ADYEN_API_KEY",
    "ADYEN_MERCHANT_ACCOUNT",
    "ADYEN_HMAC_KEY",
    "WEBHOOK_USERNAME",
    "WEBHOOK_PASSWORD",
    "PUBLIC_BASE_URL",
    "SECRET_KEY",
)

# Settings whose values never appear in a page, a log line or an exception message.
SECRET_SETTINGS = (
    "ADYEN_API_KEY",
    "ADYEN_HMAC_KEY",
    "ADYEN_HMAC_KEY_PREVIOUS",
    "WEBHOOK_PASSWORD",
    "SECRET_KEY",
    "MAIL_PASSWORD",
)

ADYEN_TEST_URL = "https://checkout-test.adyen.com/v71"
ADYEN_LIVE_URL = "https://{prefix}-checkout-live.adyenpayments.com/checkout/v71"
ADYEN_LOGO_URL = "https://checkoutshopper-{env}.adyen.com/checkoutshopper/images/logos/knet.svg"

_HEX_KEY = re.compile(r"^(?:[0-9A-Fa-f]{2})+$")


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names it and never shows its value."""


def load_settings(environ=None):
    """Build the Flask config mapping from environment variables."""
    env = os.environ if environ is None else environ
    mode = env.get("ADYEN_ENVIRONMENT", "simulator").strip().lower() or "simulator"
    if mode not in ENVIRONMENTS:
        raise ConfigError(f"ADYEN_ENVIRONMENT must be one of {', '.join(ENVIRONMENTS)} (got {mode!r}).")

    def get(name, default=None):
        value = env.get(name, "").strip()
        if value:
            return value
        if mode == "simulator" and name in SIMULATOR_DEFAULTS:
            return SIMULATOR_DEFAULTS[name]
        return default

    if mode != "simulator":
        missing = [name for name in REQUIRED_OUTSIDE_SIMULATOR if not get(name)]
        if mode == "live" and not get("ADYEN_LIVE_URL_PREFIX"):
            missing.append("ADYEN_LIVE_URL_PREFIX")
        if missing:
            raise ConfigError(
                f"ADYEN_ENVIRONMENT={mode} needs these settings in the environment or .env: "
                + ", ".join(missing)
            )

    def choice(name, allowed):
        value = get(name, allowed[0]).upper()
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}.")
        return value

    def number(name, default):
        try:
            return float(Fraction(get(name, default)))
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"{name} must be a number of seconds (or a fraction such as 1/60).") from None

    port = get("PORT", "5000")
    if not port.isdigit():
        raise ConfigError("PORT must be a number.")
    public_base_url = get("PUBLIC_BASE_URL", f"http://127.0.0.1:{port}").rstrip("/")
    if not re.match(r"^https?://[^/\s]+", public_base_url):
        raise ConfigError("PUBLIC_BASE_URL must be an absolute http(s) URL, e.g. https://shop.example.com")
    if mode == "live" and not public_base_url.startswith("https://"):
        raise ConfigError("PUBLIC_BASE_URL must use https:// in live mode.")

    for name in ("ADYEN_HMAC_KEY", "ADYEN_HMAC_KEY_PREVIOUS"):
        value = get(name)
        if value and not _HEX_KEY.match(value):
            raise ConfigError(f"{name} must be the hex key from the Customer Area (an even number of 0-9A-F).")

    if mode == "simulator":
        api_base_url = f"{public_base_url}/_sim/checkout/v71"
    elif mode == "test":
        api_base_url = ADYEN_TEST_URL
    else:
        api_base_url = ADYEN_LIVE_URL.format(prefix=get("ADYEN_LIVE_URL_PREFIX"))

    logo_source = get("KNET_LOGO_SOURCE", "local").lower()
    if logo_source not in ("local", "adyen"):
        raise ConfigError("KNET_LOGO_SOURCE must be 'local' or 'adyen'.")

    return {
        "ADYEN_ENVIRONMENT": mode,
        "ADYEN_API_KEY": get("ADYEN_API_KEY"),
        "ADYEN_MERCHANT_ACCOUNT": get("ADYEN_MERCHANT_ACCOUNT"),
        "ADYEN_HMAC_KEY": get("ADYEN_HMAC_KEY"),
        "ADYEN_HMAC_KEY_PREVIOUS": get("ADYEN_HMAC_KEY_PREVIOUS"),
        "ADYEN_LIVE_URL_PREFIX": get("ADYEN_LIVE_URL_PREFIX"),
        "ADYEN_API_BASE_URL": api_base_url,
        "WEBHOOK_USERNAME": get("WEBHOOK_USERNAME"),
        "WEBHOOK_PASSWORD": get("WEBHOOK_PASSWORD"),
        "PUBLIC_BASE_URL": public_base_url,
        "SECRET_KEY": get("SECRET_KEY"),
        "SQLALCHEMY_DATABASE_URI": get("DATABASE_URL"),  # None: SQLite under instance/
        "KNET_LOGO_URL": (
            ADYEN_LOGO_URL.format(env="live" if mode == "live" else "test") if logo_source == "adyen" else None
        ),
        "SHOPPER_LOCALE": get("SHOPPER_LOCALE", "en-KW"),
        # The simulator answers the return by POST instead of GET when set (see issue: POST returns).
        "SIMULATOR_RETURN_METHOD": choice("SIMULATOR_RETURN_METHOD", ("GET", "POST")),
        # The simulator sends the shopper to KNET by POST (action.method POST with action.data) when set.
        "SIMULATOR_ACTION_METHOD": choice("SIMULATOR_ACTION_METHOD", ("GET", "POST")),
        "SIMULATOR_WEBHOOK_DELAY": number("SIMULATOR_WEBHOOK_DELAY", "2"),
        "SIMULATOR_OFFER_EXPIRY": number("SIMULATOR_OFFER_EXPIRY", "900"),
        # Simulator: where its webhooks are posted (default: this shop's own endpoint).
        "SIMULATOR_WEBHOOK_URL": get("SIMULATOR_WEBHOOK_URL", f"{public_base_url}/webhooks/adyen"),
        # Simulator: seconds before a Pending / Received payment gets its final AUTHORISATION webhook.
        "SIMULATOR_PENDING_DELAY": number("SIMULATOR_PENDING_DELAY", "5"),
        # Simulator: Adyen's webhook retry schedule (2 min, 5 min, … 8 h, for 30 days) times this
        # factor; "1/60" (default) turns minutes into seconds. A fraction or a decimal.
        "SIMULATOR_RETRY_SCALE": number("SIMULATOR_RETRY_SCALE", "1/60"),
        # Simulator: seconds a worker holds a claimed webhook delivery before another may take it
        # over (a crash mid-send); longer than the 10 s send timeout.
        "SIMULATOR_DELIVERY_LEASE": number("SIMULATOR_DELIVERY_LEASE", "60"),
        # Simulator: the merchant name shown on the simulated KNET page.
        "SIMULATOR_MERCHANT_NAME": get("SIMULATOR_MERCHANT_NAME", "KNET Demo Shop"),
        "MAIL_SERVER": get("MAIL_SERVER"),
        "MAIL_PORT": int(number("MAIL_PORT", "25")),
        "MAIL_USERNAME": get("MAIL_USERNAME"),
        "MAIL_PASSWORD": get("MAIL_PASSWORD"),
        "MAIL_FROM": get("MAIL_FROM", "KNET Demo Shop <shop@example.com>"),
        # STARTTLS after connecting (port 587 servers); leave unset for a local relay.
        "MAIL_USE_TLS": get("MAIL_USE_TLS", "").lower() in ("1", "true", "yes", "on"),
        # Adyen calls must end well before a gunicorn worker is killed (30 s default).
        "ADYEN_CONNECT_TIMEOUT": 5.0,
        "ADYEN_READ_TIMEOUT": 15.0,
    }
