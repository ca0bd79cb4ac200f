"""The database drops every connection (a restart, a failover) in the middle of purchases and of
webhook ingestion: no shopper sees a 500, nothing is orphaned, nothing is lost or applied twice.

PostgreSQL only: `pg_terminate_backend` ends the server processes behind the shop's pooled
connections, as a restart does. A SQLite file has no connection to lose.
"""

import html as html_lib
import re
import threading
from contextlib import contextmanager

import pytest
import requests
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from shop.models import Email, Notification, Order, OrderEvent, PaymentAttempt
from shop.simulator.models import SimFault, SimPayment
from tests.databases import backend
from tests.fault_helpers import inject
from tests.shopper import GOOD_CARD, Shopper, text_of
from tests.webhook_helpers import auth, envelope, item, make_order, wait_for

pytestmark = pytest.mark.skipif(
    backend() != "postgresql",
    reason="needs PostgreSQL: set TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test "
    "(a SQLite file has no connection to lose)",
)

# Webhooks at once, retried quickly; leases short, so that work a dropped connection interrupted is
# taken over within the test (a lease ends, it is claimed again).
ENV = {
    "SIMULATOR_WEBHOOK_DELAY": "0",
    "SIMULATOR_RETRY_SCALE": "0.001",
    "SIMULATOR_DELIVERY_LEASE": "10.5",  # just over the 10 s a delivery may take
    "WEBHOOK_LEASE_SECONDS": "2",
    "WEBHOOK_RETRY_SECONDS": "0.1",
    "MAIL_TIMEOUT": "0.5",
    "MAIL_LEASE_SECONDS": "2",
    "MAIL_RETRY_SECONDS": "0.1",
}
PAID = "Payment successful"


class Database:
    """The shop's database seen from outside the shop: reads on connections of their own (never the
    server's pool, which they would repair), and `drop`, which ends every other connection to it,
    now (`once`) or every `every` seconds meanwhile (`repeatedly`)."""

    def __init__(self, url):
        self.engine = create_engine(url, poolclass=NullPool)
        self.ended = 0

    def scalar(self, statement):
        with Session(self.engine) as session:
            return session.execute(statement).scalar()

    def read(self, fn):
        with Session(self.engine) as session:
            return fn(session)

    def once(self):
        with self.engine.connect() as connection:
            ended = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar()
        self.ended += ended
        return ended

    @contextmanager
    def repeatedly(self, every):
        stop = threading.Event()

        def run():
            while not stop.wait(every):
                self.once()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(10)

    def close(self):
        self.engine.dispose()


@pytest.fixture
def outside():
    made = []

    def make(server):
        made.append(Database(server.app.config["SQLALCHEMY_DATABASE_URI"]))
        return made[-1]

    yield make
    for one in made:
        one.close()


class WatchedShopper(Shopper):
    """A shopper that notes every answer of 500 or more it got, redirects included."""

    def __init__(self, base_url):
        super().__init__(base_url)
        self.errors = []
        self.http.hooks["response"].append(self._note)

    def pay_on_knet(self, knet_page, **kwargs):
        """As Shopper.pay_on_knet; but if KNET's page says the payment is already completed (its
        first answer was lost with the connection, and the page answered again), follow its
        "Return to the shop" link as the shopper would (the page has no form to submit)."""
        response = self.submit(knet_page, **dict(GOOD_CARD, bank="KNET1", action="submit", **kwargs))
        if "This payment is already completed" in text_of(response.text):
            link = re.search(r'<a class="button primary" href="([^"]+)"', response.text)
            return self.http.get(html_lib.unescape(link.group(1)), timeout=20)
        if "data-autosubmit" in response.text and "redirectResult" in response.text:
            response = self.submit(response)
        return response

    def _note(self, response, *args, **kwargs):
        if response.status_code >= 500:
            self.errors.append(f"{response.request.method} {response.url.split('?')[0]} -> {response.status_code}")


def assert_nothing_orphaned(database, orders, bought=None):
    """Every order paid once, with one transition to paid and one email; every order the shoppers
    bought (all unless `bought` says how many) by one payment at Adyen, with one attempt that got
    its answer; no pending order without an attempt."""
    bought = orders if bought is None else bought

    def check(session):
        rows = session.execute(select(Order).order_by(Order.id)).scalars().all()
        assert len(rows) == orders
        assert sum(1 for order in rows if order.attempts) == bought
        for order in rows:
            attempts = [a.status for a in order.attempts]
            assert order.status == "paid", (order.reference, order.status, attempts)
            assert len(attempts) <= 1 and "calling" not in attempts, (order.reference, attempts)
        pending_without_attempt = session.execute(
            select(func.count())
            .select_from(Order)
            .where(Order.status == "pending", ~Order.attempts.any(PaymentAttempt.id.isnot(None)))
        ).scalar()
        assert pending_without_attempt == 0
        assert session.execute(select(func.count()).select_from(SimPayment)).scalar() == bought
        paid_once = session.execute(
            select(OrderEvent.order_id, func.count())
            .where(OrderEvent.kind == "transition", OrderEvent.new_status == "paid")
            .group_by(OrderEvent.order_id)
        ).all()
        assert sorted(n for _, n in paid_once) == [1] * orders
        emails = session.execute(select(Email.order_id, Email.kind)).all()
        assert sorted(kind for _, kind in emails) == ["paid"] * orders
        assert len({order_id for order_id, _ in emails}) == orders

    database.read(check)


def test_connections_dropped_at_each_step_of_a_purchase_are_replaced(live_server_factory, outside):
    """The database drops the shop's connections before each step of one purchase, and while the
    shop waits for Adyen's answer to /payments: every step is answered, never with a 500."""
    server = live_server_factory(ENV=ENV)
    database = outside(server)
    shopper = WatchedShopper(server.url)
    shopper.add_to_cart()
    assert shopper.checkout_page().status_code == 200
    # Adyen will take 0.5 s to answer /payments: the shop's connections are dropped meanwhile too.
    inject(server, "/payments", "slow", delay_ms=500)
    assert database.once() >= 1
    answer = {}
    paying = threading.Thread(target=lambda: answer.setdefault("page", shopper.place_order()))
    paying.start()
    wait_for(
        lambda: database.scalar(select(SimFault.fired)) == 1,
        message="the shop's /payments call to be under way",
    )
    assert database.once() >= 1
    paying.join(30)
    knet_page = answer["page"]
    assert knet_page.status_code == 200 and "Card Number" in text_of(knet_page.text), text_of(knet_page.text)[:300]
    database.once()
    result = shopper.pay_on_knet(knet_page)
    assert result.status_code == 200
    database.once()
    token = result.url.rsplit("/", 1)[-1]
    shopper.wait_for_text(f"/orders/{token}", PAID, timeout=30)
    wait_for(lambda: database.scalar(select(Order.status)) == "paid", timeout=30, message="the webhook applied")
    assert shopper.errors == []
    assert_nothing_orphaned(database, 1)


JOURNEYS = 24
SHOPPERS = 6
WEBHOOKS = 40


def test_purchases_and_webhooks_while_the_database_keeps_dropping_connections(live_server_factory, outside):
    """Shoppers buy and Adyen posts webhooks while every connection to the database is ended again
    and again: no shopper gets a 500, every order ends paid with one payment, one attempt, one
    transition and one email, and every webhook is stored and applied once (a 500 to a webhook
    would only make Adyen deliver it again, as the poster here does)."""
    server = live_server_factory(ENV=ENV)
    app = server.app
    database = outside(server)
    references = [make_order(app) for _ in range(WEBHOOKS)]
    bodies = [envelope(item(app, reference)) for reference in references]
    shoppers = [WatchedShopper(server.url) for _ in range(SHOPPERS)]
    failures, accepted = [], []
    lock = threading.Lock()

    def shop(shopper):
        for _ in range(JOURNEYS // SHOPPERS):
            try:
                shopper.add_to_cart()
                knet_page = shopper.place_order()
                assert "Card Number" in text_of(knet_page.text), text_of(knet_page.text)[:300]
                result = shopper.pay_on_knet(knet_page)
                shopper.wait_for_text(result.url, PAID, timeout=60)
            except Exception as exc:  # noqa: BLE001 - reported below
                with lock:
                    failures.append(repr(exc)[:500])

    def post_webhooks(part):
        http = requests.Session()
        for body in part:
            for _ in range(20):  # Adyen delivers again whatever it did not see acknowledged
                try:
                    answer = http.post(
                        server.url + "/webhooks/adyen",
                        data=body,
                        auth=auth(app),
                        headers={"Content-Type": "application/json"},
                        timeout=20,
                    )
                except requests.RequestException:
                    continue
                if answer.text == "[accepted]":
                    with lock:
                        accepted.append(body)
                    break

    threads = [threading.Thread(target=shop, args=(s,)) for s in shoppers]
    threads += [threading.Thread(target=post_webhooks, args=(bodies[n::2],)) for n in range(2)]
    with database.repeatedly(0.3):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(240)
    assert database.ended >= 10, "the database hardly dropped anything: the test proved nothing"
    errors = [error for shopper in shoppers for error in shopper.errors]
    assert errors == [] and failures == [], (errors, failures)
    assert len(accepted) == WEBHOOKS

    def settled():
        statuses = database.read(lambda session: session.execute(select(Notification.status)).scalars().all())
        return len(statuses) == WEBHOOKS + JOURNEYS and set(statuses) == {"processed"}

    wait_for(settled, timeout=60, interval=0.2, message="every webhook stored and processed")
    assert_nothing_orphaned(database, WEBHOOKS + JOURNEYS, bought=JOURNEYS)
