"""Several threads, processes and servers on one PostgreSQL database: every effect happens once.

These run only against PostgreSQL (TEST_DATABASE_URL; `.ci/run` sets it), where concurrent
transactions really interleave under READ COMMITTED. SQLite serialises every writer, so it could
not show a race that PostgreSQL has.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from sqlalchemy import func, select

from shop.db import db
from shop.models import ApiCall, Email, Notification, Order, OrderEvent
from shop.simulator.models import SimPayment, SimWebhookDelivery
from tests.conftest import build_app
from tests.databases import backend
from tests.shopper import GOOD_CARD, Shopper, forms_of
from tests.simulator_helpers import GOOD_CARD as KNET_CARD
from tests.simulator_helpers import payment_request, submit_page
from tests.webhook_helpers import auth, envelope, item, make_order, wait_for

pytestmark = pytest.mark.skipif(
    backend() != "postgresql",
    reason="needs PostgreSQL: set TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test "
    "(.ci/run and `make test` on CI do)",
)

ROOT = Path(__file__).resolve().parent.parent
THREADS = 30


def all_at_once(calls):
    """Run the callables in threads released together by a barrier; their results, in order."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(index, call):
        barrier.wait()
        try:
            results[index] = call()
        except Exception as exc:  # noqa: BLE001 - reported by the assertions below
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def count(app, model, *where):
    with app.app_context():
        try:
            return db.session.execute(select(func.count()).select_from(model).where(*where)).scalar()
        finally:
            db.session.rollback()


def test_the_same_webhook_and_the_same_return_from_many_threads_make_one_transition(live_server_factory):
    # The simulator's own AUTHORISATION waits an hour: only the copies fired below arrive.
    live = live_server_factory(ENV={"SIMULATOR_WEBHOOK_DELAY": "3600"})
    app = live.app
    shopper = Shopper(live.url)
    shopper.add_to_cart()
    knet_page = shopper.place_order()
    assert "PaymentHTTP" in knet_page.url
    # Pay on the KNET page, but stop at its redirect back to the shop: that URL is fired below.
    back = shopper.submit(knet_page, allow_redirects=False, **dict(GOOD_CARD, bank="KNET1", action="submit"))
    assert back.status_code == 303
    return_url = back.headers["Location"]
    assert "redirectResult=" in return_url

    with app.app_context():
        order = db.session.execute(select(Order)).scalar_one()
        payment = db.session.execute(select(SimPayment)).scalar_one()
        reference, token, psp, amount = order.reference, order.token, payment.psp_reference, order.amount_value
        assert payment.merchant_reference == reference
        db.session.rollback()
    body = envelope(item(app, reference, value=amount, psp=psp))

    def send_webhook():
        return requests.post(
            live.url + "/webhooks/adyen",
            data=body,
            auth=auth(app),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )

    def come_back():
        return requests.get(return_url, allow_redirects=False, timeout=30)

    results = all_at_once([send_webhook] * THREADS + [come_back] * THREADS)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    webhooks, returns = results[:THREADS], results[THREADS:]
    assert [(r.status_code, r.text) for r in webhooks] == [(200, "[accepted]")] * THREADS
    assert {(r.status_code, r.headers["Location"].split("?")[0].rsplit("/", 1)[-1]) for r in returns} == {(303, token)}

    def processed():
        with app.app_context():
            rows = db.session.execute(select(Notification.status)).scalars().all()
            db.session.rollback()
            return rows == ["processed"]

    wait_for(processed, timeout=20, message="the notification processed")

    with app.app_context():
        [notification] = db.session.execute(select(Notification)).scalars().all()
        assert (notification.duplicates, notification.attempts) == (THREADS - 1, 1)
        order = db.session.execute(select(Order).where(Order.reference == reference)).scalar_one()
        assert (order.status, order.result_code) == ("paid", "Authorised")
        order_id, notification_id = order.id, notification.id
        db.session.rollback()
    # created → pending at checkout, then pending → paid once, by the stored notification.
    assert _steps(app, order_id, "payment_started") == [("created", "pending", None)]
    assert _steps(app, order_id, "transition") == [("pending", "paid", notification_id)]
    assert count(app, Email, Email.order_id == order_id) == 1
    # The /payments/details answer is shown once, however many returns raced.
    assert len(_steps(app, order_id, "result_shown")) == 1
    assert len(_steps(app, order_id, "return")) == THREADS
    assert count(app, ApiCall, ApiCall.endpoint == "/payments/details") >= 1
    # Every delivery was seen: the first stored and applied, the others counted as duplicates.
    assert len(_steps(app, order_id, "webhook_duplicate")) == THREADS - 1

    page = shopper.get(f"/orders/{token}")
    assert page.status_code == 200 and "Payment successful" in page.text


def _steps(app, order_id, kind):
    """The order's timeline steps of one kind, as (old status, new status, notification id)."""
    with app.app_context():
        try:
            return db.session.execute(
                select(OrderEvent.old_status, OrderEvent.new_status, OrderEvent.notification_id)
                .where(OrderEvent.order_id == order_id, OrderEvent.kind == kind)
                .order_by(OrderEvent.id)
            ).all()
        finally:
            db.session.rollback()


def test_concurrent_checkouts_of_one_form_make_one_order_and_one_payment(live_server):
    """A double click from many tabs at once: one order, created → pending once, one /payments."""
    shopper = Shopper(live_server.url)
    shopper.add_to_cart()
    page = shopper.checkout_page()
    index = next(i for i, f in enumerate(forms_of(page.text)) if "first_name" in f["fields"])
    fields = dict(
        forms_of(page.text)[index]["fields"],
        first_name="Fatima",
        last_name="Al-Sabah",
        email="fatima@example.com",
        phone="5000 0000",
    )
    url = live_server.url + "/checkout"
    cookies = shopper.http.cookies.get_dict()

    def press_pay():
        return requests.post(url, data=fields, cookies=cookies, allow_redirects=False, timeout=30)

    results = all_at_once([press_pay] * 10)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert {r.status_code for r in results} == {303}
    app = live_server.app
    assert count(app, Order) == 1
    assert count(app, ApiCall, ApiCall.endpoint == "/payments") == 1
    assert count(app, OrderEvent, OrderEvent.kind == "payment_started") == 1


# Two servers, each with several gunicorn workers, on one database -------------------------------------------


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """`gunicorn wsgi:app` in a process of its own, as production runs it, on a loopback port."""

    def __init__(self, log_path, port, env):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--workers",
                "2",
                "--worker-class",
                "gthread",
                "--threads",
                "4",
                "--bind",
                f"127.0.0.1:{port}",
                "--timeout",
                "30",
                "--graceful-timeout",
                "5",
                "wsgi:app",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if requests.get(self.url + "/", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gunicorn on {self.url} did not start:\n{self.output()}")

    def output(self):
        self.log.flush()
        return Path(self.log_path).read_text(errors="replace")[-4000:]

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()


def test_two_servers_with_background_workers_deliver_and_process_each_webhook_once(tmp_path):
    payments_count = 24
    # The test's own app makes the database (from the migrations) and reads it; it runs no worker.
    app = build_app(tmp_path)
    database_url = app.config["SQLALCHEMY_DATABASE_URI"]
    port_a, port_b = free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ADYEN_", "SIMULATOR_", "WEBHOOK_", "MAIL_", "TEST_DATABASE"))
    }
    env.update(
        ADYEN_ENVIRONMENT="simulator",
        DATABASE_URL=database_url,
        # Both servers are one shop: its address (the webhook URL, the return URL) is server A's.
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port_a}",
        SIMULATOR_WEBHOOK_DELAY="0",
        SECRET_KEY="two-servers-one-shop",
    )
    servers = [Gunicorn(tmp_path / "a.log", port_a, env), Gunicorn(tmp_path / "b.log", port_b, env)]
    try:
        for server in servers:
            server.wait_ready()
        orders = [make_order(app, amount_value=12500 + n) for n in range(payments_count)]
        live = SimpleNamespace(url=servers[0].url, app=app)
        # Payments started and finished on either server: each queues one AUTHORISATION at once,
        # and the four background loops (two workers per server) race to deliver and process them.
        for n, reference in enumerate(orders):
            server = servers[n % 2]
            body = payment_request(live, reference=reference, amount={"currency": "KWD", "value": 12500 + n})
            answer = requests.post(
                server.url + "/_sim/checkout/v71/payments",
                json=body,
                headers={"X-API-Key": app.config["ADYEN_API_KEY"]},
                timeout=20,
            )
            assert answer.status_code == 200, answer.text
            page = submit_page(
                SimpleNamespace(url=servers[(n + 1) % 2].url, app=app), answer.json()["action"], **KNET_CARD
            )
            assert page.status_code == 303, page.text

        def settled():
            with app.app_context():
                try:
                    paid = db.session.execute(
                        select(func.count()).select_from(Order).where(Order.status == "paid")
                    ).scalar()
                    open_notifications = db.session.execute(
                        select(func.count()).select_from(Notification).where(Notification.status != "processed")
                    ).scalar()
                    undelivered = db.session.execute(
                        select(func.count())
                        .select_from(SimWebhookDelivery)
                        .where(SimWebhookDelivery.status != "delivered")
                    ).scalar()
                    return paid == payments_count and open_notifications == 0 and undelivered == 0
                finally:
                    db.session.rollback()

        wait_for(settled, timeout=60, interval=0.2, message="every payment delivered, processed and paid")
    except BaseException:
        for server in servers:
            print(f"--- {server.url}\n{server.output()}")
        raise
    finally:
        for server in servers:
            server.stop()

    with app.app_context():
        deliveries = db.session.execute(select(SimWebhookDelivery)).scalars().all()
        assert len(deliveries) == payments_count
        # Each delivery was sent once: one attempt, and the shop saw no second copy.
        assert {(d.status, d.attempts) for d in deliveries} == {("delivered", 1)}
        notifications = db.session.execute(select(Notification)).scalars().all()
        assert len(notifications) == payments_count
        assert {(n.status, n.attempts, n.duplicates) for n in notifications} == {("processed", 1, 0)}
        per_order = db.session.execute(
            select(OrderEvent.order_id, func.count())
            .where(OrderEvent.kind == "transition")
            .group_by(OrderEvent.order_id)
        ).all()
        assert len(per_order) == payments_count and {n for _, n in per_order} == {1}
        emails = db.session.execute(select(Email.order_id, func.count()).group_by(Email.order_id)).all()
        assert len(emails) == payments_count and {n for _, n in emails} == {1}
        db.session.rollback()
        db.engine.dispose()
