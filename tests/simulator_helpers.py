"""Helpers for the simulator tests: API calls, driving the KNET page, a webhook receiver, polling."""

import itertools
import json
import re
import threading
import time
from urllib.parse import parse_qs, urlsplit

import requests
from jsonschema import Draft202012Validator
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from shop.simulator import schema
from tests.webhook_helpers import wait_for  # noqa: F401  (the simulator tests import it from here)

PSP_REFERENCE = re.compile(r"^[A-Z0-9]{16}$")
API_PATH = "/_sim/checkout/v71"
PAGE_PATH = "/_sim/knet/kpg/PaymentHTTP.htm"
# Tap's KNET test card that is CAPTURED: Authorised.
GOOD_CARD = {
    "bank": "KNET1",
    "card_number": "8888880000000001",
    "expiry_month": "09",
    "expiry_year": "2030",
    "pin": "1234",
}

# The longest redirectResult Adyen's spec allows (20,000), made of the characters encoding bugs break.
LONGEST_REDIRECT_RESULT = "X6XtfGC3!" + ("+/=" * 6700)[: 20_000 - 9]

_references = itertools.count(1)

# Adyen's v71 schemas as the simulator has them (shop/simulator/checkout_v71_schemas.json).
SPEC = json.loads(schema.SCHEMAS_PATH.read_text(encoding="utf-8"))


def spec_validator(name):
    root = {"$schema": SPEC["jsonSchemaDialect"], "components": SPEC["components"]}
    return Draft202012Validator(dict(root, **{"$ref": f"#/components/schemas/{name}"}))


VALIDATORS = {name: spec_validator(name) for name in SPEC["components"]["schemas"]}


def conforms(endpoint, response):
    """The answer is JSON of the schema the spec names for this status, with Adyen's headers."""
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert PSP_REFERENCE.match(response.headers["pspReference"])
    name = SPEC["operations"][endpoint]["responses"].get(str(response.status_code), "ServiceError")
    body = response.json()
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in VALIDATORS[name].iter_errors(body)]
    assert not errors, f"{endpoint} {response.status_code} is not a valid {name}: {errors}"
    if name == "ServiceError":
        assert body["status"] == response.status_code
    return body


def api_headers(live, **extra):
    return {"X-API-Key": live.app.config["ADYEN_API_KEY"], **extra}


def api_post(live, endpoint, body, headers=None, **kwargs):
    """POST JSON to the simulator's Checkout API with the right API key unless `headers` is given."""
    return requests.post(
        live.url + API_PATH + endpoint,
        json=body,
        headers=api_headers(live) if headers is None else headers,
        timeout=10,
        **kwargs,
    )


def payment_request(live, **overrides):
    """A valid KNET /payments body (as the shop sends it); `None` overrides remove a field."""
    reference = f"ORDER-{next(_references):04d}-{time.monotonic_ns() % 10**8}"
    body = {
        "merchantAccount": live.app.config["ADYEN_MERCHANT_ACCOUNT"],
        "amount": {"currency": "KWD", "value": 12500},
        "reference": reference,
        "paymentMethod": {"type": "knet"},
        "returnUrl": f"{live.url}/checkout/return/abc123?lang=en",
        "countryCode": "KW",
        "shopperLocale": "en-KW",
        "channel": "Web",
        "shopperName": {"firstName": "Fatima", "lastName": "Al-Sabah"},
        "shopperEmail": "fatima@example.com",
        "telephoneNumber": "+96550000000",
    }
    for key, value in overrides.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def start_payment(live, **overrides):
    """POST /payments for KNET; returns (response JSON, pspReference header, request body)."""
    body = payment_request(live, **overrides)
    response = api_post(live, "/payments", body)
    assert response.status_code == 200, response.text
    return response.json(), response.headers["pspReference"], body


def page_token(action):
    if action["method"] == "POST":
        return action["data"]["paymentId"]
    return parse_qs(urlsplit(action["url"]).query)["paymentId"][0]


def submit_page(live, redirect_action, **fields):
    """Open the KNET page from the /payments action and submit its form (Submit, or `action="cancel"`).

    Returns the page's answer, redirects not followed.
    """
    http = requests.Session()
    if redirect_action["method"] == "POST":
        opened = http.post(redirect_action["url"], data=redirect_action["data"], timeout=10)
    else:
        opened = http.get(redirect_action["url"], timeout=10)
    assert opened.status_code == 200, opened.text
    form = {"paymentId": page_token(redirect_action), "action": "submit", **fields}
    return http.post(live.url + PAGE_PATH, data=form, allow_redirects=False, timeout=10)


def pay(live, card=None, **payment_overrides):
    """Start a payment and finish the KNET page with `card` (GOOD_CARD by default, "cancel" to cancel).

    Returns (page response, pspReference, request body).
    """
    answer, psp_reference, body = start_payment(live, **payment_overrides)
    if card == "cancel":
        response = submit_page(live, answer["action"], action="cancel")
    else:
        response = submit_page(live, answer["action"], **(card or GOOD_CARD))
    return response, psp_reference, body


def redirect_result_from(location):
    """The redirectResult in a return URL, percent-decoded once (as a web framework does)."""
    return parse_qs(urlsplit(location).query)["redirectResult"][0]


def details(live, redirect_result, **kwargs):
    return api_post(live, "/payments/details", {"details": {"redirectResult": redirect_result}}, **kwargs)


class WebhookReceiver:
    """A stand-in for the shop's /webhooks/adyen on its own loopback port.

    Answers with the next status of `statuses` (then 200) and keeps every request it got.
    """

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.received = []
        self._lock = threading.Lock()
        self.server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhooks/adyen"
        # A short poll interval so that stopping it at the end of a test is quick.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def _app(self, environ, start_response):
        request = Request(environ)
        with self._lock:
            status = self.statuses.pop(0) if self.statuses else 200
            self.received.append(
                {
                    "json": request.get_json(silent=True),
                    "authorization": request.authorization,
                    "content_type": request.content_type,
                    "status": status,
                }
            )
        return Response("[accepted]" if status < 300 else "boom", status=status)(environ, start_response)

    def items(self, event_code=None):
        """The NotificationRequestItems received with a 2xx answer, optionally of one eventCode."""
        with self._lock:
            found = [
                wrapper["NotificationRequestItem"]
                for entry in self.received
                if entry["status"] < 300 and entry["json"]
                for wrapper in entry["json"]["notificationItems"]
            ]
        return [item for item in found if event_code is None or item["eventCode"] == event_code]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
