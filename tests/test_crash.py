"""The server is killed (SIGKILL: no clean-up, no last commit) in the middle of a purchase, of a
webhook burst and of a simulator delivery, and started again: every order ends as it should,
each webhook has one effect and each outcome one email (issue 12, points 3 to 5).

The shop runs as deployed (README, Production deployment): gunicorn with the documented
arguments, and either a `flask --app wsgi worker` process beside it (BACKGROUND_WORKER=0) or the
background loop in each gunicorn worker (the default). "Killed" is os.kill(SIGKILL) of the gunicorn
master, each of its workers and the worker process. The moments are chosen, not hoped for: Adyen
holds its answer to /payments (the simulator's `timeout` fault), a proxy between the simulated
Adyen and the shop holds a webhook delivery or the shop's answer to one, and the SMTP server holds
its answer to an email, until the kill. Emails go to a real SMTP server (aiosmtpd) on loopback.
Runs on SQLite and on PostgreSQL (TEST_DATABASE_URL).
"""

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from aiosmtpd.controller import Controller
from sqlalchemy import func, select
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from shop.db import db
from shop.models import ApiCall, Email, Notification, Order, OrderEvent
from shop.simulator.models import SimPayment, SimWebhookDelivery
from tests.conftest import build_app, process_env
from tests.shopper import Shopper, forms_of, link, order_token, text_of
from tests.simulator_helpers import GOOD_CARD as KNET_CARD
from tests.simulator_helpers import pay
from tests.test_concurrency_pg import free_port
from tests.test_deployment import documented_gunicorn_arguments
from tests.test_mail import Collector
from tests.webhook_helpers import make_order, wait_for

ROOT = Path(__file__).resolve().parent.parent
PAID = "Payment successful"
# Short leases and quick retries, so that what a killed process held is taken over within seconds.
SETTINGS = {
    "SIMULATOR_WEBHOOK_DELAY": "0",
    "SIMULATOR_RETRY_SCALE": "0.001",
    "SIMULATOR_DELIVERY_LEASE": "10.5",  # just over the 10 s a delivery may take
    "WEBHOOK_LEASE_SECONDS": "1",
    "WEBHOOK_RETRY_SECONDS": "0.1",
    "MAIL_TIMEOUT": "0.3",
    "MAIL_LEASE_SECONDS": "1",
    "MAIL_RETRY_SECONDS": "0.1",
    "WORKER_INTERVAL": "0.1",
    "SECRET_KEY": "one-shop-before-and-after-the-crash",
}


def children(pid):
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def gone(pid):
    """The process has exited (a zombie that nobody reaped yet counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


class Deployment:
    """The shop as deployed on one host: gunicorn (two workers) and, unless `loop_in_gunicorn`, a
    `flask worker` process; on a fixed port, so that it comes back at the same address."""

    def __init__(self, tmp_path, app, loop_in_gunicorn=False, **settings):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop_in_gunicorn = loop_in_gunicorn
        self.logs = tmp_path / "deployment.log"
        self.env = process_env(
            app,
            **SETTINGS,
            PUBLIC_BASE_URL=self.url,
            BACKGROUND_WORKER="1" if loop_in_gunicorn else "0",
            **settings,
        )
        self.processes = []
        self.starts = 0

    def start(self):
        self.starts += 1
        log = open(self.logs, "ab")
        log.write(f"\n===== start {self.starts}\n".encode())
        arguments = documented_gunicorn_arguments()
        arguments[arguments.index("--bind") + 1] = f"127.0.0.1:{self.port}"
        arguments[arguments.index("--workers") + 1] = "2"
        commands = [[sys.executable, "-m", "gunicorn", *arguments]]
        if not self.loop_in_gunicorn:
            commands.append([sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--interval", "0.1"])
        self.processes = [
            subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
            for command in commands
        ]
        log.close()
        # Ready when both gunicorn workers answer: with --reuse-port each has a socket of its own.
        deadline, answered = time.monotonic() + 90, 0
        while answered < 8:
            assert all(p.poll() is None for p in self.processes), f"did not start:\n{self.output()}"
            assert time.monotonic() < deadline, f"gunicorn did not answer:\n{self.output()}"
            try:
                requests.get(self.url + "/", timeout=2).raise_for_status()
                answered += 1
            except requests.RequestException:
                answered = 0
                time.sleep(0.1)

    def kill(self):
        """SIGKILL the gunicorn master, each of its workers and the worker process, at once."""
        gunicorn = self.processes[0]
        pids = [gunicorn.pid, *children(gunicorn.pid), *(p.pid for p in self.processes[1:])]
        assert len(pids) == len(self.processes) + 2, "gunicorn's two workers were not found"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for process in self.processes:
            process.wait(10)
        wait_for(lambda: all(gone(pid) for pid in pids), timeout=10, message="every killed process gone")
        self.processes = []

    def stop(self):
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.processes = []

    def output(self):
        return self.logs.read_text(errors="replace")[-6000:]

    def inject(self, fault, **fields):
        """Inject a simulator fault from its page, /_sim/faults, as a person would."""
        return self._fault_form(lambda form: form["fields"].get("action") == "inject", fault=fault, **fields)

    def release_burst(self):
        # The form of the "Clear all" and "Release the webhook burst" buttons.
        return self._fault_form(lambda form: set(form["fields"]) == {"csrf_token"}, action="release_burst")

    def _fault_form(self, which, **fields):
        http = Shopper(self.url)
        page = http.get("/_sim/faults")
        index = next(i for i, form in enumerate(forms_of(page.text)) if which(form))
        done = http.submit(page, index, **fields)
        assert done.status_code == 200 and "Not injected" not in text_of(done.text), text_of(done.text)[:300]
        return done


class WebhookProxy:
    """Between the simulated Adyen and the shop's /webhooks/adyen, on a port of its own.

    Forwards every delivery, except that from the `hold_from`-th one (counted from 0) it holds:
    with `before_forwarding`, the delivery itself (the shop never sees it); otherwise the shop's
    answer (the shop stored the webhook, Adyen never hears so). `holding` is set while one is held;
    `release()` lets everything through from then on.
    """

    def __init__(self, hold_from=None, before_forwarding=False):
        self.target = None
        self.hold_from = hold_from
        self.before_forwarding = before_forwarding
        self.holding = threading.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()
        self.received = 0
        self.server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhooks/adyen"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def _app(self, environ, start_response):
        request = Request(environ)
        with self._lock:
            number = self.received
            self.received += 1
        hold = self.hold_from is not None and number >= self.hold_from and not self._released.is_set()
        if hold and self.before_forwarding:
            self._hold()
            return Response("the sender is gone", status=502)(environ, start_response)
        answer = requests.post(
            self.target,
            data=request.get_data(),
            headers={"Content-Type": request.content_type, "Authorization": request.headers.get("Authorization", "")},
            allow_redirects=False,
            timeout=20,
        )
        if hold:
            self._hold()
        return Response(answer.content, status=answer.status_code)(environ, start_response)

    def _hold(self):
        self.holding.set()
        self._released.wait(120)

    def release(self):
        self._released.set()

    def stop(self):
        self.release()
        self.server.shutdown()
        self.server.server_close()


class HoldingCollector(Collector):
    """An SMTP server's handler that keeps every message, and holds its "250 OK" to the first one
    until `release()`: the sender dies after the server took the email and before it heard so."""

    def __init__(self):
        super().__init__()
        self.holding = threading.Event()
        self._released = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        answer = await super().handle_DATA(server, session, envelope)
        if len(self.messages) == 1 and not self._released.is_set():
            self.holding.set()
            while not self._released.is_set():
                await asyncio.sleep(0.02)
        return answer

    def release(self):
        self._released.set()

    def message_ids(self):
        with self.lock:
            return Counter(message["Message-ID"] for _, message in self.messages)


@pytest.fixture
def smtp():
    """A real SMTP server on loopback: yields (handler, port)."""
    handler = HoldingCollector()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, controller.port
    handler.release()
    controller.stop()


@pytest.fixture
def deployment(tmp_path, smtp):
    """`deploy(**settings)`: the Deployment (not started) and the test's own app on its database."""
    app = build_app(tmp_path)  # makes the database from the migrations; reads it for the test
    made = []

    def deploy(loop_in_gunicorn=False, **settings):
        made.append(
            Deployment(tmp_path, app, loop_in_gunicorn, MAIL_SERVER="127.0.0.1", MAIL_PORT=str(smtp[1]), **settings)
        )
        return made[-1]

    yield deploy, app
    for one in made:
        one.stop()
    with app.app_context():
        db.engine.dispose()


def read(app, fn):
    with app.app_context():
        try:
            return fn()
        finally:
            db.session.rollback()


def count(app, model, *where):
    return read(app, lambda: db.session.execute(select(func.count()).select_from(model).where(*where)).scalar())


def transitions_to(app, status):
    """{order_id: how many transitions to `status`}."""
    rows = read(
        app,
        lambda: db.session.execute(
            select(OrderEvent.order_id, func.count())
            .where(OrderEvent.kind == "transition", OrderEvent.new_status == status)
            .group_by(OrderEvent.order_id)
        ).all(),
    )
    return dict(rows)


def emails_by_order(app):
    return read(
        app,
        lambda: [
            (row.order_id, row.kind, row.status, row.message_id)
            for row in db.session.execute(select(Email).order_by(Email.id)).scalars()
        ],
    )


@contextmanager
def log_shown_on_failure(deployment):
    """Print the deployment's log (gunicorn's and the worker's lines) if the block fails."""
    try:
        yield
    except BaseException:
        print(f"--- deployment log\n{deployment.output()}")
        raise


def orders(app):
    """[(reference, status, [(attempt status, Idempotency-Key)])], oldest first."""
    return read(
        app,
        lambda: [
            (o.reference, o.status, [(a.status, a.idempotency_key) for a in o.attempts])
            for o in db.session.execute(select(Order).order_by(Order.id)).scalars()
        ],
    )


def test_a_purchase_killed_while_adyen_answers_is_charged_once_after_the_restart(deployment, smtp):
    """Adyen has created the payment and is about to answer /payments when the server dies. After
    the restart the shopper finds the order, presses Try again (the same Idempotency-Key), gets
    Adyen's stored answer, pays: one payment at Adyen, one order paid, one email."""
    deploy, app = deployment
    handler, _ = smtp
    handler.release()  # this test holds no email
    shop = deploy()
    with log_shown_on_failure(shop):
        shop.start()
        shop.inject("/payments|timeout", count="1", seconds="120")
        shopper = Shopper(shop.url)
        shopper.add_to_cart()
        outcome = {}

        def press_pay():
            try:
                outcome["page"] = shopper.place_order()
            except requests.RequestException as exc:
                outcome["error"] = exc

        paying = threading.Thread(target=press_pay)
        paying.start()
        wait_for(lambda: count(app, SimPayment) == 1, timeout=30, message="Adyen to have made the payment")
        shop.kill()
        paying.join(30)
        assert isinstance(outcome.get("error"), requests.ConnectionError), outcome  # no answer at all, not a 500
        [(_, status, attempts)] = orders(app)
        assert (status, [state for state, _ in attempts]) == ("pending", ["calling"])

        shop.start()
        page = shopper.checkout_page()  # the shopper comes back to the shop
        assert "Your payment is in progress" in text_of(page.text)
        result = shopper.get(link(page, "Check the result"))
        assert "We couldn't reach the payment provider yet" in text_of(result.text)
        index = next(i for i, f in enumerate(forms_of(result.text)) if f["action"].endswith("/pay"))
        knet_page = shopper.submit(result, index)  # Try again
        assert "Card Number" in text_of(knet_page.text), text_of(knet_page.text)[:300]
        token = order_token(knet_page)
        assert PAID in text_of(shopper.pay_on_knet(knet_page).text)
        wait_for(lambda: count(app, Order, Order.status == "paid") == 1, timeout=30, message="the order paid")
        wait_for(lambda: [e[2] for e in emails_by_order(app)] == ["sent"], timeout=30, message="its email sent")

    assert count(app, SimPayment) == 1  # charged once
    [(reference, status, attempts)] = orders(app)
    assert status == "paid" and len(attempts) == 1
    keys = {key for _, key in attempts}
    calls = read(
        app,
        lambda: (
            db.session.execute(select(ApiCall.idempotency_key).where(ApiCall.endpoint == "/payments")).scalars().all()
        ),
    )
    assert calls and set(calls) == keys  # every try, before and after the crash, with the one key
    assert list(transitions_to(app, "paid").values()) == [1]
    assert handler.message_ids() == {f"<{reference}.paid@example.com>": 1}
    assert shopper.get(f"/orders/{token}").status_code == 200


BURST = 12


def test_a_webhook_burst_killed_midway_has_one_effect_per_webhook_and_one_email_per_outcome(deployment, smtp):
    """After an outage Adyen delivers a backlog at once; the server is killed while the shop has
    stored half of it and one answer is on its way back (the background loop in each gunicorn worker,
    the default). After the restart the rest is delivered, the unacknowledged one again: every
    order paid once, each webhook applied once, one email per order."""
    deploy, app = deployment
    handler, _ = smtp
    handler.release()
    proxy = WebhookProxy(hold_from=BURST // 2)
    shop = deploy(loop_in_gunicorn=True, SIMULATOR_WEBHOOK_URL=proxy.url)
    proxy.target = shop.url + "/webhooks/adyen"
    try:
        with log_shown_on_failure(shop):
            shop.start()
            shop.inject("webhooks|webhook_burst")
            live = SimpleNamespace(url=shop.url, app=app)
            references = [make_order(app, amount_value=12500 + n) for n in range(BURST)]
            for n, reference in enumerate(references):
                page, _, _ = pay(live, KNET_CARD, reference=reference, amount={"currency": "KWD", "value": 12500 + n})
                assert page.status_code == 303  # back to the shop; the AUTHORISATION is queued, and held
            assert count(app, SimWebhookDelivery) == BURST and count(app, Notification) == 0  # all held
            shop.release_burst()
            assert proxy.holding.wait(60), "the burst never reached the shop"
            shop.kill()
            stored_at_the_kill = count(app, Notification)
            assert BURST // 2 < stored_at_the_kill < BURST, stored_at_the_kill
            proxy.release()

            shop.start()

            def settled():
                return (
                    count(app, Order, Order.status == "paid") == BURST
                    and count(app, Notification, Notification.status != "processed") == 0
                    and count(app, SimWebhookDelivery, SimWebhookDelivery.status != "delivered") == 0
                    and count(app, Email, Email.status != "sent") == 0
                )

            wait_for(settled, timeout=90, interval=0.2, message="every order paid and every email sent")
    finally:
        proxy.stop()

    notifications = read(app, lambda: db.session.execute(select(Notification.duplicates)).scalars().all())
    assert len(notifications) == BURST  # one stored row per event
    assert sum(notifications) >= 1  # the one whose answer was lost came again: counted, not applied
    paid = transitions_to(app, "paid")
    assert len(paid) == BURST and set(paid.values()) == {1}
    emails = emails_by_order(app)
    assert len(emails) == BURST and {kind for _, kind, _, _ in emails} == {"paid"}
    assert len({order_id for order_id, *_ in emails}) == BURST
    # One Message-ID per order and outcome; a copy sent again (a kill between SMTP's answer and the
    # sent mark) would carry the same one.
    received = handler.message_ids()
    assert set(received) == {message_id for *_, message_id in emails}
    assert set(received.values()) <= {1, 2}


def test_a_delivery_and_an_email_killed_in_flight_happen_once_after_the_restart(deployment, smtp):
    """The server dies while the simulated Adyen's webhook is on its way (the shop never got it),
    and again while the SMTP server is taking the order's email (it took it; the sender never heard
    so). After each restart the webhook is delivered again and applied once, and the email is sent
    again with the same Message-ID: the one repeat SMTP cannot rule out (README, Email)."""
    deploy, app = deployment
    handler, _ = smtp
    proxy = WebhookProxy(hold_from=0, before_forwarding=True)
    shop = deploy(SIMULATOR_WEBHOOK_URL=proxy.url)
    proxy.target = shop.url + "/webhooks/adyen"
    try:
        with log_shown_on_failure(shop):
            shop.start()
            shopper = Shopper(shop.url)
            shopper.add_to_cart()
            knet_page = shopper.place_order()
            token = order_token(knet_page)
            assert PAID in text_of(shopper.pay_on_knet(knet_page).text)  # the redirect's Authorised
            assert proxy.holding.wait(60), "the webhook was never sent"
            shop.kill()  # the delivery in flight
            proxy.release()
            assert (count(app, Notification), count(app, Order, Order.status == "pending")) == (0, 1)

            shop.start()
            assert handler.holding.wait(60), "the email was never sent"
            shop.kill()  # the SMTP server has the email; the sender never heard "250 OK"
            handler.release()
            assert count(app, Order, Order.status == "paid") == 1
            assert [status for _, _, status, _ in emails_by_order(app)] == ["sending"]

            shop.start()
            wait_for(
                lambda: [status for _, _, status, _ in emails_by_order(app)] == ["sent"],
                timeout=30,
                message="the email sent after its lease ended",
            )
            wait_for(
                lambda: count(app, SimWebhookDelivery, SimWebhookDelivery.status != "delivered") == 0,
                timeout=30,
                message="the delivery recorded",
            )
    finally:
        proxy.stop()

    [(status, duplicates)] = read(
        app, lambda: db.session.execute(select(Notification.status, Notification.duplicates)).all()
    )
    assert (status, duplicates) == ("processed", 0)  # the shop never saw the first try
    assert list(transitions_to(app, "paid").values()) == [1]
    [(reference, *_)] = orders(app)
    assert handler.message_ids() == {f"<{reference}.paid@example.com>": 2}
    first, second = (message for _, message in handler.messages)
    assert first["Subject"] == second["Subject"] and first.get_content() == second.get_content()
    assert "Payment successful" in text_of(shopper.get(f"/orders/{token}").text)
