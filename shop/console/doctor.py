"""The configuration doctor and the go-live checklist, shared by /console/doctor and `flask adyen check`.

It shows the environment and which settings are set (never a value), checks that the Adyen endpoint
answers and offers KNET (one /paymentMethods call, not recorded in any order), and walks the docs'
"Test and go live" section (https://docs.adyen.com/payment-methods/knet/api-only): each item is
checked where the shop can check it and explained where it cannot.
"""

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from shop.adyen import AdyenApiError, AdyenClient, AdyenUnavailable
from shop.config import SIMULATOR_DEFAULTS
from shop.console import redact
from shop.db import db
from shop.models import Notification, WebhookRejection

OK, FAIL, WARN, TODO, MANUAL, SKIP = "ok", "fail", "warn", "todo", "manual", "skip"
LABELS = {OK: "OK", FAIL: "FAIL", WARN: "WARN", TODO: "TO DO", MANUAL: "CHECK BY HAND", SKIP: "SKIPPED"}

KNET_DOCS = "https://docs.adyen.com/payment-methods/knet/api-only"
GO_LIVE_DOCS = "https://docs.adyen.com/payment-methods/knet/api-only#test-and-go-live"
LIVE_ENDPOINTS_DOCS = "https://docs.adyen.com/development-resources/live-endpoints"
API_CREDENTIALS_DOCS = "https://docs.adyen.com/development-resources/api-credentials"
WEBHOOKS_DOCS = "https://docs.adyen.com/development-resources/webhooks"
HMAC_DOCS = "https://docs.adyen.com/development-resources/webhooks/secure-webhooks/verify-hmac-signatures"
TAP_TEST_CARDS = "https://developers.tap.company/reference/testing-cards"
PAYMENT_METHODS_DOCS = "https://docs.adyen.com/api-explorer/Checkout/71/post/paymentMethods"

# (name, what it is, when it is needed: "always" outside simulator, "live", or "optional")
SETTINGS = (
    ("ADYEN_API_KEY", "API key of the web service user", "required"),
    ("ADYEN_MERCHANT_ACCOUNT", "merchant account that takes the payments", "required"),
    ("ADYEN_HMAC_KEY", "HMAC key of the Standard webhook (hex)", "required"),
    ("ADYEN_HMAC_KEY_PREVIOUS", "previous HMAC key, while rotating", "optional"),
    ("ADYEN_LIVE_URL_PREFIX", "live endpoint prefix", "live"),
    ("WEBHOOK_USERNAME", "basic-auth user of the webhook", "required"),
    ("WEBHOOK_PASSWORD", "basic-auth password of the webhook", "required"),
    ("PUBLIC_BASE_URL", "where shoppers and Adyen reach the shop", "required"),
    ("SECRET_KEY", "signs the session cookie", "required"),
    ("DATABASE_URL", "database (default: SQLite under instance/)", "optional"),
    ("MAIL_SERVER", "SMTP server for shopper emails (default: kept in the outbox)", "optional"),
    ("MAIL_PASSWORD", "SMTP password", "optional"),
    ("CONSOLE_PASSWORD", "password of this console in test and live mode", "console"),
    ("CONSOLE_ENABLED", "turns this console on in live mode", "optional"),
    ("AUTO_REFUND_FLAGGED", "refunds flagged payments without asking (default off: a merchant decides)", "optional"),
)


class Setting(NamedTuple):
    name: str
    state: str  # "set", "not set", "simulator default", "default"
    what: str
    needed: str  # when it is needed, in words
    needed_now: bool  # needed in the mode the shop runs in: a missing one is a problem, else only a note


@dataclass
class Item:
    name: str
    status: str
    detail: str
    docs: str | None = None

    @property
    def label(self):
        return LABELS[self.status]


@dataclass
class Report:
    environment: str
    facts: list = field(default_factory=list)  # [(label, value)]: no secret among them
    settings: list = field(default_factory=list)  # [Setting]
    checks: list = field(default_factory=list)  # [Item]
    go_live: list = field(default_factory=list)  # [Item]
    endpoint_checked: bool = False

    @property
    def ok(self):
        """False when a check failed; in live mode an unfinished go-live item counts too."""
        failed = any(item.status == FAIL for item in self.checks)
        if self.environment == "live":
            failed = failed or any(item.status in (FAIL, TODO) for item in self.go_live)
        return not failed


def _is_set(config, name):
    if name == "DATABASE_URL":
        return "DATABASE_URL" in config.get("SETTINGS_FROM_ENVIRONMENT", ()) or not str(
            config.get("SQLALCHEMY_DATABASE_URI", "")
        ).startswith("sqlite:///" + current_app.instance_path)
    if name == "CONSOLE_ENABLED":
        return bool(config.get("CONSOLE_ENABLED"))
    return bool(config.get(name))


def _setting_state(config, name):
    mode = config["ADYEN_ENVIRONMENT"]
    if not _is_set(config, name):
        return "not set"
    from_env = config.get("SETTINGS_FROM_ENVIRONMENT")
    if mode == "simulator" and name in SIMULATOR_DEFAULTS and config.get(name) == SIMULATOR_DEFAULTS[name]:
        return "simulator default"
    if name == "PUBLIC_BASE_URL" and from_env is not None and name not in from_env:
        return "default"
    return "set"


def _needed_now(mode, needed):
    if needed in ("required", "console"):
        return mode != "simulator"
    return needed == "live" and mode == "live"


def _needed(mode, needed):
    if needed == "required":
        return "needed in test and live" if mode == "simulator" else "needed"
    if needed == "live":
        return "needed in live" if mode != "live" else "needed"
    if needed == "console":
        return "needed for this console in test and live"
    return "optional"


def run(check_endpoint=True):
    """The doctor's report for the current app. `check_endpoint` makes one /paymentMethods call."""
    config = current_app.config
    mode = config["ADYEN_ENVIRONMENT"]
    report = Report(environment=mode)
    webhook_url = f"{config['PUBLIC_BASE_URL']}/webhooks/adyen"
    report.facts = [
        ("Environment (ADYEN_ENVIRONMENT)", mode),
        ("Checkout API base URL", redact.scrub(config["ADYEN_API_BASE_URL"])),
        ("Public base URL", redact.scrub(config["PUBLIC_BASE_URL"])),
        ("Webhook URL to register", redact.scrub(webhook_url)),
        ("Database", db.engine.dialect.name),
        ("Shopper emails", "sent over SMTP" if config.get("MAIL_SERVER") else "kept in the outbox (no MAIL_SERVER)"),
        ("Console", _console_state(config)),
    ]
    report.settings = [
        Setting(name, _setting_state(config, name), what, _needed(mode, needed), _needed_now(mode, needed))
        for name, what, needed in SETTINGS
    ]
    report.checks = _config_checks(config)
    endpoint = None
    if check_endpoint:
        endpoint = check_adyen(config)
        report.checks += endpoint
        report.endpoint_checked = True
    report.go_live = go_live(config, endpoint)
    return report


def _console_state(config):
    mode = config["ADYEN_ENVIRONMENT"]
    if mode == "simulator":
        return "open (simulator mode)"
    if mode == "live" and not config.get("CONSOLE_ENABLED"):
        return "off (live mode; CONSOLE_ENABLED is not true)"
    return "password required" if config.get("CONSOLE_PASSWORD") else "locked: CONSOLE_PASSWORD is not set"


def _hmac_key_ok(value):
    return bool(value) and bool(re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", value))


def _config_checks(config):
    mode = config["ADYEN_ENVIRONMENT"]
    items = []
    simulator = mode == "simulator"
    for name, what, needed in SETTINGS:
        if needed == "required" or (needed == "live" and mode == "live"):
            if not _is_set(config, name):
                items.append(Item(f"{name} is set", FAIL, f"Set {name} ({what}) in the environment or .env."))
    if not any(item.status == FAIL for item in items):
        items.append(
            Item(
                "Required settings are set",
                OK,
                "Every setting this mode needs has a value" + (" (simulator defaults)." if simulator else "."),
            )
        )
    key = config.get("ADYEN_HMAC_KEY")
    if key and not _hmac_key_ok(key):
        items.append(
            Item("HMAC key is hex", FAIL, "ADYEN_HMAC_KEY must be the hex key the Customer Area shows.", HMAC_DOCS)
        )
    elif key and len(key) != 64:
        items.append(
            Item(
                "HMAC key length",
                WARN,
                f"The key is {len(key) // 2} bytes; Customer Area keys are 32 bytes (64 hex digits).",
                HMAC_DOCS,
            )
        )
    elif key:
        items.append(Item("HMAC key format", OK, "32 bytes, hex, as the Customer Area shows it.", HMAC_DOCS))
    if not simulator:
        for name in ("SECRET_KEY", "WEBHOOK_PASSWORD", "ADYEN_HMAC_KEY"):
            if config.get(name) and config.get(name) == SIMULATOR_DEFAULTS.get(name):
                items.append(
                    Item(f"{name} is your own", FAIL, f"{name} has the simulator's public default value; set your own.")
                )
        if not config["PUBLIC_BASE_URL"].startswith("https://"):
            items.append(
                Item(
                    "Public URL uses HTTPS",
                    FAIL if mode == "live" else WARN,
                    "Adyen must reach the webhook URL; in live mode it must be https://.",
                    WEBHOOKS_DOCS,
                )
            )
    return items


def check_adyen(config):
    """[Item, Item]: does the Checkout API answer /paymentMethods, and does it offer KNET?"""
    client = AdyenClient(
        config["ADYEN_API_BASE_URL"],
        config["ADYEN_API_KEY"] or "",
        connect_timeout=config.get("ADYEN_CONNECT_TIMEOUT", 5.0),
        read_timeout=config.get("ADYEN_READ_TIMEOUT", 15.0),
    )
    where = "the simulator" if config["ADYEN_ENVIRONMENT"] == "simulator" else f"Adyen {config['ADYEN_ENVIRONMENT']}"
    body = {
        "merchantAccount": config.get("ADYEN_MERCHANT_ACCOUNT") or "",
        "countryCode": "KW",
        "amount": {"currency": "KWD", "value": 1000},
        "channel": "Web",
        "shopperLocale": config.get("SHOPPER_LOCALE", "en-KW"),
    }
    try:
        response = client.payment_methods(body)
    except AdyenUnavailable as error:
        if _is_own_simulator(config):
            # The simulated Adyen is this shop's own /_sim: it answers only while the shop runs.
            return [
                Item(
                    "Adyen endpoint answers",
                    WARN,
                    f"Not checked: the simulator is part of the shop, at {redact.scrub(config['PUBLIC_BASE_URL'])}, "
                    "and answers only while the shop runs. Start it (make run) and run the check again; in "
                    "simulator mode no setting above is needed.",
                    PAYMENT_METHODS_DOCS,
                ),
                Item("KNET is offered", SKIP, "Not checked: the shop is not running.", KNET_DOCS),
            ]
        return [
            Item(
                "Adyen endpoint answers",
                FAIL,
                f"No answer from {where}: {redact.scrub(str(error))}.",
                PAYMENT_METHODS_DOCS,
            ),
            Item("KNET is offered", SKIP, "Not checked: the endpoint did not answer.", KNET_DOCS),
        ]
    except AdyenApiError as error:
        hint = {
            401: "The API key was refused: check ADYEN_API_KEY, and that it belongs to this environment "
            "(test or live).",
            403: "The merchant account or the key's roles were refused: check ADYEN_MERCHANT_ACCOUNT and that the "
            "API credential has the Checkout webservice role.",
        }.get(error.status, "")
        detail = (
            f"{where} answered HTTP {error.status} (errorCode {error.error_code}): {redact.scrub(error.message or '')}."
        )
        return [
            Item("Adyen endpoint answers", FAIL, f"{detail} {hint}".strip(), API_CREDENTIALS_DOCS),
            Item("KNET is offered", SKIP, "Not checked: /paymentMethods failed.", KNET_DOCS),
        ]
    types = [m.get("type") for m in response.get("paymentMethods") or [] if isinstance(m, dict)]
    items = [
        Item("Adyen endpoint answers", OK, f"POST /paymentMethods on {where} answered HTTP 200.", PAYMENT_METHODS_DOCS)
    ]
    if "knet" in types:
        items.append(Item("KNET is offered", OK, "/paymentMethods for KW, KWD, Web lists type knet.", KNET_DOCS))
    else:
        add = (
            "in your live Customer Area (request it)"
            if config["ADYEN_ENVIRONMENT"] == "live"
            else "in your test Customer Area"
        )
        items.append(
            Item(
                "KNET is offered",
                FAIL,
                f"/paymentMethods for KW, KWD, Web does not list knet "
                f"(it lists {', '.join(t for t in types if t) or 'nothing'}). "
                f"Add KNET {add}.",
                KNET_DOCS,
            )
        )
    return items


def _is_own_simulator(config):
    return config["ADYEN_ENVIRONMENT"] == "simulator" and config["ADYEN_API_BASE_URL"].startswith(
        config["PUBLIC_BASE_URL"] + "/_sim/"
    )


def _count(model, *where):
    return db.session.execute(select(func.count()).select_from(model).where(*where)).scalar() or 0


def go_live(config, endpoint=None):
    """The docs' "Test and go live" list, as items; `endpoint` is check_adyen's result if it ran."""
    mode = config["ADYEN_ENVIRONMENT"]
    live = mode == "live"
    endpoint_ok = bool(endpoint) and endpoint[0].status == OK
    knet_ok = bool(endpoint) and endpoint[1].status == OK
    try:
        verified = _count(Notification)
        bad_signatures = _count(WebhookRejection, WebhookRejection.reason == "bad signature")
    except SQLAlchemyError:  # the database is not there or not migrated: the doctor still answers
        verified = bad_signatures = 0
    db.session.rollback()
    items = []

    items.append(
        Item(
            "Tested with Tap's KNET test cards",
            MANUAL,
            "In test mode, pay with Tap's test cards (8888880000000001 / 8888880000000002, 09/30, PIN 1234) on the "
            "real KNET test page. The simulator only imitates it; the shop cannot tell whether you did.",
            TAP_TEST_CARDS,
        )
    )
    items.append(
        Item(
            "Live environment",
            OK if live else TODO,
            "ADYEN_ENVIRONMENT=live."
            if live
            else f"This shop runs in {mode} mode; set ADYEN_ENVIRONMENT=live to go live.",
            LIVE_ENDPOINTS_DOCS,
        )
    )
    prefix = config.get("ADYEN_LIVE_URL_PREFIX")
    items.append(
        Item(
            "Live URL prefix",
            OK if prefix and live else TODO,
            "ADYEN_LIVE_URL_PREFIX is set; API calls go to <prefix>-checkout-live.adyenpayments.com/checkout/v71."
            if prefix
            else "Set ADYEN_LIVE_URL_PREFIX from the live Customer Area (Developers > API URLs > Prefix).",
            LIVE_ENDPOINTS_DOCS,
        )
    )
    if live and config.get("ADYEN_API_KEY"):
        status, detail = (
            (OK, "Set, and the live endpoint accepted it.")
            if endpoint_ok
            else (
                (WARN, "Set, but the live endpoint did not accept it (see the endpoint check).")
                if endpoint
                else (OK, "Set. Run the endpoint check to prove the live endpoint accepts it.")
            )
        )
    else:
        status, detail = (
            TODO,
            "Create an API key for the web service user in the live Customer Area; a test key does not work on live.",
        )
    items.append(Item("Live API key set", status, detail, API_CREDENTIALS_DOCS))
    if live and _hmac_key_ok(config.get("ADYEN_HMAC_KEY")):
        status = WARN if bad_signatures and not verified else OK
        detail = "Set. " + (
            f"{verified} webhook(s) passed the HMAC check."
            if verified
            else "No live webhook has arrived yet to prove it matches the Customer Area's key."
        )
        if bad_signatures:
            detail += f" {bad_signatures} webhook(s) were refused for a bad signature: the key may not match."
    else:
        status, detail = (
            TODO,
            "Generate an HMAC key for the live Standard webhook and set ADYEN_HMAC_KEY; "
            "test keys do not verify live webhooks.",
        )
    items.append(Item("Live HMAC key set", status, detail, HMAC_DOCS))
    if live and knet_ok:
        status, detail = OK, "The live /paymentMethods offers KNET, so the request was approved."
    elif live and endpoint_ok:
        status, detail = (
            TODO,
            "The live /paymentMethods does not offer KNET yet: submit a request for KNET in your live Customer Area.",
        )
    else:
        status, detail = (
            MANUAL,
            (
                "Submit a request for KNET in your live Customer Area before you can accept live KNET payments. "
                "The shop can confirm it only in live mode, when the live /paymentMethods offers KNET."
            ),
        )
    items.append(Item("KNET requested in the live Customer Area", status, detail, GO_LIVE_DOCS))
    https = config["PUBLIC_BASE_URL"].startswith("https://")
    auth = (
        bool(config.get("WEBHOOK_USERNAME"))
        and bool(config.get("WEBHOOK_PASSWORD"))
        and (config.get("WEBHOOK_PASSWORD") != SIMULATOR_DEFAULTS["WEBHOOK_PASSWORD"])
    )
    items.append(
        Item(
            "Webhook URL uses HTTPS",
            OK if https else TODO,
            f"{config['PUBLIC_BASE_URL']}/webhooks/adyen"
            + (" is https." if https else " is not https; live webhooks need HTTPS."),
            WEBHOOKS_DOCS,
        )
    )
    items.append(
        Item(
            "Webhook basic auth set",
            OK if auth else TODO,
            "WEBHOOK_USERNAME and WEBHOOK_PASSWORD are set."
            if auth
            else "Set your own WEBHOOK_USERNAME and WEBHOOK_PASSWORD.",
            WEBHOOKS_DOCS,
        )
    )
    items.append(
        Item(
            "Webhook registered in the live Customer Area",
            OK if live and verified else MANUAL,
            f"Verified webhooks have arrived ({verified})."
            if live and verified
            else "Developers > Webhooks > Standard webhook: the URL above, basic auth with the same user and password, "
            "an HMAC key, AUTHORISATION and OFFER_CLOSED enabled. The shop sees it only when webhooks arrive.",
            WEBHOOKS_DOCS,
        )
    )
    return items
