"""Helpers for the developer console tests: pages, forms, timelines, polling."""

import html as html_lib
import re
import time
from urllib.parse import urljoin

import requests
from sqlalchemy import func, select, update

from shop.db import db
from shop.models import Email, Notification, Order, utcnow
from shop.simulator.models import SimWebhookDelivery
from tests.shopper import Shopper, forms_of
from tests.webhook_helpers import in_app, wait_for

# Webhooks at once, the final webhook of a Pending payment quickly, an abandoned offer closed quickly.
FAST = {"SIMULATOR_WEBHOOK_DELAY": "0", "SIMULATOR_PENDING_DELAY": "0.2", "CONSOLE_ABANDON_SECONDS": "0.2"}

# As FAST, but the simulator's webhooks wait until `buy` releases them once the shopper is back, so
# the timeline has the canonical order: return, /payments/details, then the webhook.
HELD = dict(FAST, SIMULATOR_WEBHOOK_DELAY="600")

CONSOLE_PAGES = (
    "/console/orders",
    "/console/webhooks",
    "/console/deliveries",
    "/console/emails",
    "/console/test-cards",
    "/console/doctor",
    "/console/doctor?check=1",
    "/console/demo",
)

_STEP = re.compile(r'<li class="step[^"]*" data-kind="([^"]+)">.*?<h3 class="step-title">(.*?)</h3>', re.S)


def steps_of(page_html):
    """[(kind, title)] of a timeline page, in page order."""
    return [(kind, html_lib.unescape(title).strip()) for kind, title in _STEP.findall(page_html)]


def status_of(page_html):
    match = re.search(r'id="order-status">([a-z_]+)<', page_html)
    return match.group(1) if match else None


def post_form(http, page, action_part, **values):
    """Submit the form of `page` whose action contains `action_part` (with its CSRF token)."""
    form = next(f for f in forms_of(page.text) if action_part in f["action"])
    return http.post(urljoin(page.url, form["action"]), data=dict(form["fields"], **values), timeout=30)


def run_scenario(server, name, http=None):
    """Press a demo button; returns the response of the page it lands on."""
    http = http or requests.Session()
    demo = http.get(server.url + "/console/demo", timeout=20)
    assert demo.status_code == 200, demo.text
    return post_form(http, demo, f"/console/demo/{name}")


def wait_for_status(server, order_id, status, timeout=20):
    """Reload the timeline (as its Check again does) until the order shows `status`."""
    deadline = time.monotonic() + timeout
    while True:
        page = requests.get(f"{server.url}/console/orders/{order_id}", timeout=20)
        if status_of(page.text) == status:
            return page
        if time.monotonic() > deadline:
            raise AssertionError(f"order {order_id} never became {status}; it is {status_of(page.text)}")
        time.sleep(0.05)


def order_id_from(url):
    match = re.search(r"/console/orders/(\d+)$", url)
    assert match, url
    return int(match.group(1))


def settled(app):
    """True once every notification is processed (or ignored) and nothing is left to deliver."""

    def check():
        pending = db.session.execute(
            select(func.count()).select_from(Notification).where(Notification.status.in_(("pending", "processing")))
        ).scalar()
        return pending == 0

    return in_app(app, check)()


def buy(server, **card):
    """A real purchase through the shop's pages; returns the order once it is paid and its email written."""
    shopper = Shopper(server.url)
    shopper.add_to_cart("medjool-dates", 1)
    knet_page = shopper.place_order()
    assert knet_page.status_code == 200, knet_page.text[:500]
    shopper.pay_on_knet(knet_page, **card)
    release_webhooks(server)

    def paid():
        order = db.session.execute(select(Order)).scalars().first()
        if order is None or order.status != "paid":
            return None
        written = db.session.execute(select(func.count()).select_from(Email).where(Email.body.is_not(None))).scalar()
        return order.id if written and settled(server.app) else None

    return wait_for(in_app(server.app, paid), timeout=20, message="the order paid, its email written")


def release_webhooks(server):
    """Make every queued simulator webhook due now (they may be held by a long SIMULATOR_WEBHOOK_DELAY)."""
    with server.app.app_context():
        db.session.execute(
            update(SimWebhookDelivery).where(SimWebhookDelivery.status == "pending").values(due_at=utcnow()),
            execution_options={"synchronize_session": False},
        )
        db.session.commit()
    server.app.extensions["worker"].wake()


def count(app, model, *where):
    return in_app(app, lambda: db.session.execute(select(func.count()).select_from(model).where(*where)).scalar())()
