"""Settings from the environment (and `.env`), checked once at start-up.

In simulator mode every setting has a development default, so `make run` needs no `.env`.
In test or live mode a missing setting stops start-up with a message that names it,
the way Adyen's example apps fail fast.
"""

import os
import re
from fractions import Fraction
from urllib.parse import urlsplit

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
    "CONSOLE_PASSWORD",
)

ADYEN_TEST_URL = "https://checkout-test.adyen.com/v71"
ADYEN_LIVE_URL = "https://{prefix}-checkout-live.adyenpayments.com/checkout/v71"
ADYEN_LOGO_URL = "https://checkoutshopper-{env}.adyen.com/checkoutshopper/images/logos/knet.svg"

# Seconds; see the check in load_settings.
TIMEOUT_DEFAULTS = {
    "ADYEN_CONNECT_TIMEOUT": "5",
    "ADYEN_READ_TIMEOUT": "15",
    "ADYEN_PAYMENTS_DEADLINE": "25",
    "WORKER_TIMEOUT": "30",
}

# The background work (shop/jobs.py, shop/worker.py, shop/orders/reconcile.py), in seconds.
WORK_DEFAULTS = {
    "WORKER_INTERVAL": "1",  # between rounds of the background loop (it is also woken at once)
    "WEBHOOK_LEASE_SECONDS": "120",  # a claimed notification is applied within this, or taken over
    "WEBHOOK_RETRY_SECONDS": "10",  # after a failed attempt; doubled each time, at most an hour
    "MAIL_TIMEOUT": "10",  # each SMTP step (connect, STARTTLS, login, send)
    "MAIL_LEASE_SECONDS": "120",  # a claimed email is sent within this, or taken over (sent again)
    "MAIL_RETRY_SECONDS": "30",  # after a failed send; doubled each time, at most an hour
    # A pending order with no result this long after its payment started is closed by the shop:
    # longer than any offer Adyen keeps open (12 hours for cards, its longest documented default),
    # so that OFFER_CLOSED or AUTHORISATION comes first whenever Adyen created the payment.
    "RECONCILE_AFTER_SECONDS": "86400",
}
# How many attempts before a job is marked failed, for a person to look at.
ATTEMPT_DEFAULTS = {"WEBHOOK_MAX_ATTEMPTS": "10", "MAIL_MAX_ATTEMPTS": "10"}

# How an on/off setting may be written.
_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")

_HEX_KEY = re.compile(r"^(?:[0-9A-Fa-f]{2})+$")
# Settings whose presence (never value) the configuration doctor reports.
_REPORTED_PREFIXES = (
    "ADYEN_",
    "WEBHOOK_",
    "PUBLIC_BASE_URL",
    "SECRET_KEY",
    "DATABASE_URL",
    "MAIL_",
    "CONSOLE_",
    "KNET_",
    "SHOPPER_",
    "PORT",
    "AUTO_REFUND_",
)


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names it and never shows its value."""


def _hops(value):
    if not value.isdigit() or int(value) > 5:
        raise ConfigError("PROXY_FIX_HOPS must be the number of reverse proxies in front of the shop (0 to 5).")
    return int(value)


def _port(name, value):
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ConfigError(f"{name} must be a port number (1 to 65535).")
    return int(value)


def _pool_size(value):
    if not value.isdigit() or not 1 <= int(value) <= 100:
        raise ConfigError("DATABASE_POOL_SIZE must be a number of connections from 1 to 100.")
    return int(value)


def seconds(name, value):
    """A number of seconds from a setting's text: '5', '0.25' or a fraction such as '1/60'."""
    try:
        return float(Fraction(value))
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"{name} must be a number of seconds (or a fraction such as 1/60).") from None


def one_of(name, value, allowed):
    """The setting's text, upper-cased, if it is one of `allowed`."""
    if value.upper() not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}.")
    return value.upper()


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
                f"ADYEN_ENVIRONMENT={mode} needs these settings in the environment or .env: " + ", ".join(missing)
            )

    def flag(name, default):
        value = get(name, default).lower()
        if value not in _ON + _OFF:
            raise ConfigError(f"{name} must be 1 (or true, yes, on) or 0 (or false, no, off).")
        return value in _ON

    def number(name, default):
        return seconds(name, get(name, default))

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
        api_base_url = None  # the plug-in that plays Adyen says where it answers (shop/simulator)
    elif mode == "test":
        api_base_url = ADYEN_TEST_URL
    else:
        api_base_url = ADYEN_LIVE_URL.format(prefix=get("ADYEN_LIVE_URL_PREFIX"))

    logo_source = get("KNET_LOGO_SOURCE", "local").lower()
    if logo_source not in ("local", "adyen"):
        raise ConfigError("KNET_LOGO_SOURCE must be 'local' or 'adyen'.")

    # The shop's default language (shop/i18n.py): for shoppers whose browser asks for neither.
    shopper_locale = {"en-kw": "en-KW", "ar-kw": "ar-KW"}.get(get("SHOPPER_LOCALE", "en-KW").replace("_", "-").lower())
    if shopper_locale is None:
        raise ConfigError("SHOPPER_LOCALE must be en-KW or ar-KW.")

    # Calls to Adyen must end before the server gives up on the request (gunicorn kills a worker
    # after --timeout, 30 s by default: run it with --timeout WORKER_TIMEOUT). /payments is retried
    # within ADYEN_PAYMENTS_DEADLINE in all; a single call takes at most connect + read.
    timeouts = {name: number(name, default) for name, default in TIMEOUT_DEFAULTS.items()}
    for name, value in timeouts.items():
        if value <= 0:
            raise ConfigError(f"{name} must be more than 0 seconds.")
    if timeouts["ADYEN_CONNECT_TIMEOUT"] + timeouts["ADYEN_READ_TIMEOUT"] >= timeouts["WORKER_TIMEOUT"]:
        raise ConfigError("ADYEN_CONNECT_TIMEOUT + ADYEN_READ_TIMEOUT must be less than WORKER_TIMEOUT.")
    if timeouts["ADYEN_PAYMENTS_DEADLINE"] >= timeouts["WORKER_TIMEOUT"]:
        raise ConfigError("ADYEN_PAYMENTS_DEADLINE must be less than WORKER_TIMEOUT.")

    work = {name: number(name, default) for name, default in WORK_DEFAULTS.items()}
    for name, value in work.items():
        if value <= 0:
            raise ConfigError(f"{name} must be more than 0 seconds.")
    if work["MAIL_LEASE_SECONDS"] <= 3 * work["MAIL_TIMEOUT"]:
        # Connecting, STARTTLS and sending may each take MAIL_TIMEOUT: the claim must outlast them,
        # or another worker sends the same email again.
        raise ConfigError("MAIL_LEASE_SECONDS must be more than 3 × MAIL_TIMEOUT.")
    if work["RECONCILE_AFTER_SECONDS"] <= timeouts["WORKER_TIMEOUT"]:
        # A /payments call still in flight must never be closed under it.
        raise ConfigError("RECONCILE_AFTER_SECONDS must be more than WORKER_TIMEOUT.")
    attempts = {}
    for name, default in ATTEMPT_DEFAULTS.items():
        value = get(name, default)
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"{name} must be a whole number of at least 1.")
        attempts[name] = int(value)

    # Host names the shop answers to (a forged Host header gets 400): PUBLIC_BASE_URL's, any in
    # TRUSTED_HOSTS (comma-separated), and on the simulator the loopback names too.
    trusted_hosts = [urlsplit(public_base_url).hostname]
    trusted_hosts += [name.strip().lower() for name in get("TRUSTED_HOSTS", "").split(",") if name.strip()]
    if mode == "simulator":
        trusted_hosts += ["localhost", "127.0.0.1"]

    return {
        # Names (never values) of the settings given in the environment, for the configuration doctor.
        "SETTINGS_FROM_ENVIRONMENT": frozenset(
            name for name in env.keys() if name.startswith(_REPORTED_PREFIXES) and str(env.get(name, "")).strip()
        ),
        "ADYEN_ENVIRONMENT": mode,
        # Plug-ins create_app mounts (each module's init_app(app, environ)): in simulator mode, the
        # simulator of Adyen, the KNET page and Adyen's webhooks.
        "PLUGINS": ("shop.simulator",) if mode == "simulator" else (),
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
        "SHOPPER_LOCALE": shopper_locale,
        "MAIL_SERVER": get("MAIL_SERVER"),
        "MAIL_PORT": _port("MAIL_PORT", get("MAIL_PORT", "25")),
        "MAIL_USERNAME": get("MAIL_USERNAME"),
        "MAIL_PASSWORD": get("MAIL_PASSWORD"),
        "MAIL_FROM": get("MAIL_FROM", "KNET Demo Shop <shop@example.com>"),
        # STARTTLS after connecting (port 587 servers); leave unset for a local relay.
        "MAIL_USE_TLS": get("MAIL_USE_TLS", "").lower() in ("1", "true", "yes", "on"),
        # Developer console (/console): open in simulator mode; in test and live mode it asks for
        # this password, and in live mode it is off (404) unless CONSOLE_ENABLED is true.
        "CONSOLE_PASSWORD": get("CONSOLE_PASSWORD"),
        "CONSOLE_ENABLED": get("CONSOLE_ENABLED", "").lower() in _ON,
        # The background loop (shop/worker.py) in a thread of each app process. Off (0) for web
        # processes when `flask worker` processes do that work beside them.
        "BACKGROUND_WORKER": flag("BACKGROUND_WORKER", "on"),
        # Refund payments flagged needs_refund_decision or duplicate_payment without asking anyone
        # (shop/orders/refunds.py). Off by default: a merchant decides (README, Refunds).
        "AUTO_REFUND_FLAGGED": flag("AUTO_REFUND_FLAGGED", "off"),
        # Adyen calls must end well before a gunicorn worker is killed (see the check above).
        **timeouts,
        **work,
        **attempts,
        # Hardening (shop/security.py): the session cookie, request size, trusted Host names.
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        # Secure outside the simulator: test and live mode are served over https.
        "SESSION_COOKIE_SECURE": mode != "simulator" or public_base_url.startswith("https://"),
        # Forms are a few hundred bytes; the webhook endpoint has its own 64 KiB limit too.
        "MAX_CONTENT_LENGTH": 64 * 1024,
        "TRUSTED_HOSTS": list(dict.fromkeys(trusted_hosts)),
        # Behind a reverse proxy (nginx, a load balancer): how many proxies set X-Forwarded-For,
        # -Proto, -Host and -Port. 0 (default): none, and those headers are ignored (never trusted
        # from a client). Wires werkzeug's ProxyFix in create_app.
        "PROXY_FIX_HOPS": _hops(get("PROXY_FIX_HOPS", "0")),
        # PostgreSQL connections each app process keeps open: at least the threads of a gunicorn
        # worker (8) and its background loop (shop/db.py).
        "DATABASE_POOL_SIZE": _pool_size(get("DATABASE_POOL_SIZE", "10")),
    }
