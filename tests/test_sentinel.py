"""The whole flow with recognisable secret values: none may appear in any response the browser or
Adyen sees (body, headers, URL), in any log record at DEBUG of any logger (the shop's, werkzeug's,
urllib3's, requests', SQLAlchemy's), or in what the shop stores about calls, webhooks and emails."""

import base64
import logging

import requests
from sqlalchemy import select

from shop.db import db
from shop.models import ApiCall, Email, Notification, OrderStatus
from shop.simulator.models import SimIdempotentResponse, SimWebhookDelivery
from tests.fault_helpers import in_context, inject, the_order
from tests.shopper import Shopper, text_of
from tests.webhook_helpers import wait_for

API_KEY = "SENTINEL-api-key-4f1d9c"
HMAC_KEY = "5E471E10" * 8  # hex, as the Customer Area shows it
WEBHOOK_USERNAME = "sentinel-hook-user"
WEBHOOK_PASSWORD = "SENTINEL-webhook-pass-7b2e"
SECRET_KEY = "SENTINEL-secret-key-a93f"
SECRETS = {
    "ADYEN_API_KEY": API_KEY,
    "ADYEN_HMAC_KEY": HMAC_KEY,
    "ADYEN_HMAC_KEY lower case": HMAC_KEY.lower(),
    "ADYEN_HMAC_KEY as base64": base64.b64encode(bytes.fromhex(HMAC_KEY)).decode(),
    "WEBHOOK_PASSWORD": WEBHOOK_PASSWORD,
    "basic auth header": base64.b64encode(f"{WEBHOOK_USERNAME}:{WEBHOOK_PASSWORD}".encode()).decode(),
    "SECRET_KEY": SECRET_KEY,
}
LOGGERS = ("", "shop", "werkzeug", "urllib3", "requests", "sqlalchemy", "sqlalchemy.engine", "flask_wtf", "alembic")


def leaks(text):
    return [name for name, value in SECRETS.items() if value in text]


def test_no_secret_reaches_a_response_a_log_or_the_store(live_server_factory, caplog):
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    server = live_server_factory(
        ENV={
            "ADYEN_API_KEY": API_KEY,
            "ADYEN_HMAC_KEY": HMAC_KEY,
            "WEBHOOK_USERNAME": WEBHOOK_USERNAME,
            "WEBHOOK_PASSWORD": WEBHOOK_PASSWORD,
            "SECRET_KEY": SECRET_KEY,
            "SIMULATOR_WEBHOOK_DELAY": "0",
            "ADYEN_READ_TIMEOUT": "3/4",
        },
        PAYMENTS_RETRY_BACKOFF=(0.1, 0.1),
    )
    for name in logging.root.manager.loggerDict:  # loggers the app created on start-up, too
        caplog.set_level(logging.DEBUG, logger=name)
    seen = []

    def keep(response, *args, **kwargs):
        seen.append(response)

    shopper = Shopper(server.url)
    shopper.http.hooks["response"].append(keep)

    # The purchase, with one lost /payments answer on the way: webhook processed, email written.
    inject(server, "/payments", "timeout", count=1)
    shopper.add_to_cart()
    knet_page = shopper.place_order()
    result = shopper.pay_on_knet(knet_page)
    assert "Payment successful" in text_of(result.text)
    wait_for(lambda: the_order(server)[0].status == OrderStatus.PAID, message="the webhook")
    wait_for(
        lambda: in_context(server, lambda: db.session.execute(select(Email.body)).scalars().all()), message="email"
    )
    order, _ = the_order(server)
    shopper.get(f"/orders/{order.token}")

    # What goes wrong around it: a webhook with a wrong password, forms without tokens, odd pages.
    stranger = requests.Session()
    stranger.hooks["response"].append(keep)
    stranger.post(server.url + "/webhooks/adyen", data=b"{}", auth=(WEBHOOK_USERNAME, "wrong-password"), timeout=10)
    stranger.post(
        server.url + "/webhooks/adyen", data=b"{not json", auth=(WEBHOOK_USERNAME, WEBHOOK_PASSWORD), timeout=10
    )
    stranger.post(server.url + "/cart/add", data={"product_id": "saffron"}, timeout=10)
    stranger.get(server.url + "/no-such-page", timeout=10)
    stranger.get(server.url + "/", headers={"Host": "evil.example"}, timeout=10)
    # The developer pages, when they exist: every GET page without parameters.
    for rule in server.app.url_map.iter_rules():
        if rule.rule.startswith(("/console", "/_sim/faults")) and "GET" in rule.methods and not rule.arguments:
            shopper.get(rule.rule)
    shopper.get(f"/console/orders/{order.id}")

    assert len(seen) > 20
    for response in seen:
        where = f"{response.request.method} {response.url} → {response.status_code}"
        assert leaks(response.url) == [], where
        assert leaks(repr(dict(response.headers))) == [], where
        assert leaks(response.content.decode("utf-8", "replace")) == [], where

    records = caplog.records
    assert {"werkzeug", "urllib3.connectionpool", "shop.adyen.client", "shop.webhooks.receiver"} <= {
        record.name for record in records
    }, "the flow should have been logged at DEBUG by every layer"
    for record in records:
        text = " ".join(
            str(part) for part in (record.getMessage(), record.exc_text, record.stack_info, record.args) if part
        )
        assert leaks(text) == [], (record.name, record.getMessage()[:300])
    assert leaks(caplog.text) == []  # tracebacks included

    def stored():
        rows = []
        for model in (ApiCall, Notification, Email, SimWebhookDelivery, SimIdempotentResponse):
            for row in db.session.execute(select(model)).scalars():
                rows.append(repr({column.name: getattr(row, column.name) for column in model.__table__.columns}))
        return rows

    rows = in_context(server, stored)
    assert rows and all(leaks(row) == [] for row in rows)
