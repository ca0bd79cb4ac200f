"""Refunds end to end: a real purchase on the simulator, then the shop's refund over HTTP (/refunds,
/reversals), the simulator's signed notifications, and what the order, the console, the command line
and the shopper show. Each transition, the faults, and one refund however it is asked: a double
submit, a retry after a timeout, two consoles at once (on PostgreSQL too, with TEST_DATABASE_URL).
"""

import html
import re
import threading
from datetime import timedelta

import pytest
import requests
from sqlalchemy import select

from shop.db import db
from shop.models import ApiCall, Order, Refund
from shop.orders import refunds
from shop.simulator.models import SimModification, SimPayment
from tests.console_helpers import FAST, buy, count, post_form, release_webhooks, settled, status_of
from tests.fault_helpers import inject
from tests.shopper import forms_of, text_of
from tests.simulator_helpers import pay
from tests.webhook_helpers import in_app, wait_for

REFUNDS = "/payments/{paymentPspReference}/refunds"
REVERSALS = "/payments/{paymentPspReference}/reversals"
# Refund calls retried at once in tests; a 1 s read timeout for the timeout case.
QUICK = {"REFUND_RETRY_BACKOFF": (0.05,)}


@pytest.fixture
def server(live_server_factory):
    return live_server_factory(ENV=FAST, **QUICK)


def the_order(server, order_id):
    def read():
        order = db.session.get(Order, order_id)
        db.session.expunge(order)
        return order

    return in_app(server.app, read)()


def refunds_of(server, order_id):
    def read():
        rows = db.session.execute(select(Refund).where(Refund.order_id == order_id).order_by(Refund.id)).scalars()
        rows = rows.all()
        for row in rows:
            db.session.expunge(row)
        return rows

    return in_app(server.app, read)()


def refund(server, order_id, **options):
    with server.app.app_context():
        return refunds.request_refund(order_id, **options)


def becomes(server, order_id, status, timeout=15):
    release_webhooks(server)
    wait_for(
        lambda: the_order(server, order_id).status == status and settled(server.app),
        timeout=timeout,
        message=f"order {order_id} {status}",
    )
    return the_order(server, order_id)


def calls(server, endpoint):
    """The shop's recorded calls to `endpoint`, as (request JSON, Idempotency-Key, response JSON)."""

    def read():
        rows = db.session.execute(select(ApiCall).where(ApiCall.endpoint == endpoint).order_by(ApiCall.id)).scalars()
        return [(c.request_json, c.idempotency_key, c.response_json) for c in rows]

    return in_app(server.app, read)()


def modifications(server):
    return count(server.app, SimModification)


def emails_of(server, order_id):
    """The order's refund emails once the worker has written them (no MAIL_SERVER in tests: kept)."""
    from shop.models import Email

    def read():
        rows = db.session.execute(select(Email).where(Email.order_id == order_id).order_by(Email.id)).scalars().all()
        return [(e.kind.partition(":")[0], e.subject, e.body) for e in rows if e.status == "kept"]

    return in_app(server.app, read)()


def test_a_full_refund_is_received_then_refunded_by_its_notification(server):
    order_id = buy(server)
    made = refund(server, order_id, reason="CUSTOMER REQUEST")
    assert (made.status, made.amount_value, made.kind) == ("received", 12500, "refund")
    assert made.psp_reference and made.reference.endswith("-R1")
    ((request_json, key, response_json),) = calls(server, REFUNDS)
    assert request_json == {
        "merchantAccount": server.app.config["ADYEN_MERCHANT_ACCOUNT"],
        "reference": made.reference,
        "amount": {"currency": "KWD", "value": 12500},
        "merchantRefundReason": "CUSTOMER REQUEST",
    }
    assert key == made.idempotency_key and response_json["status"] == "received"
    order = becomes(server, order_id, "refunded")
    assert not order.refund_failed
    wait_for(lambda: any(kind == "refunded" for kind, *_ in emails_of(server, order_id)), message="the email")
    (subject, body) = [(s, b) for kind, s, b in emails_of(server, order_id) if kind == "refunded"][0]
    assert subject == f"We refunded 12.500 KWD: order {order.reference}"
    # The shopper's page says what was refunded, and when.
    page = requests.get(f"{server.url}/orders/{order.token}", timeout=10)
    assert "Refunded 12.500 KWD on " in text_of(page.text)
    shopper = requests.Session()
    shopper.get(f"{server.url}/language/ar?next=/", timeout=10)  # the language switch
    arabic = shopper.get(f"{server.url}/orders/{order.token}", timeout=10)
    assert "تم استرداد 12.500 د.ك في" in text_of(arabic.text)


def test_two_partial_refunds_then_nothing_is_left(server):
    order_id = buy(server)
    refund(server, order_id, amount_minor=1250)
    refund(server, order_id, amount_minor=2000)  # while the first is still pending
    assert becomes(server, order_id, "partially_refunded")
    with pytest.raises(refunds.AmountNotAllowed, match="more than what is left to refund.*9.250 KWD"):
        refund(server, order_id, amount_minor=9251)
    refund(server, order_id)  # what is left
    becomes(server, order_id, "refunded")
    assert [r.amount_value for r in refunds_of(server, order_id)] == [1250, 2000, 9250]
    with pytest.raises(refunds.NotRefundable, match="nothing left to refund"):
        refund(server, order_id, amount_minor=1)
    assert modifications(server) == 3


def test_a_reversal_cancels_or_refunds_the_whole_payment(server):
    order_id = buy(server)
    made = refund(server, order_id, reversal=True)
    assert (made.kind, made.amount_value, made.status) == ("reversal", 12500, "received")
    ((request_json, _key, _response),) = calls(server, REVERSALS)
    assert "amount" not in request_json and request_json["reference"] == made.reference
    becomes(server, order_id, "refunded")


def test_a_refused_refund_puts_the_order_back_to_paid_flagged_with_adyens_reason(server):
    order_id = buy(server)
    inject(server, REFUNDS, "refund_refused")
    refund(server, order_id, amount_minor=5000)
    order = becomes(server, order_id, "paid")
    assert order.refund_failed
    (row,) = refunds_of(server, order_id)
    assert (row.status, row.failure_reason) == ("failed", "Transaction hasn't been captured, refund not possible")
    page = requests.get(f"{server.url}/console/orders/{order_id}", timeout=10).text
    assert "refund_failed" in page and "Transaction hasn&#39;t been captured, refund not possible" in page
    # The merchant may try again: what failed is not counted against what is left.
    assert refund(server, order_id).amount_value == 12500


def test_a_refund_failed_after_it_succeeded_gives_the_order_back_flagged(server):
    order_id = buy(server)
    inject(server, REFUNDS, "refund_failed", seconds=1)
    refund(server, order_id)
    wait_for(lambda: the_order(server, order_id).refund_failed, timeout=15, message="REFUND_FAILED applied")
    assert becomes(server, order_id, "paid").refund_failed
    (row,) = refunds_of(server, order_id)
    assert (row.status, row.failure_reason) == ("failed", "Refund Failed")
    # One email per outcome: refunded, then failed.
    kinds = lambda: [kind for kind, *_ in emails_of(server, order_id)]  # noqa: E731
    wait_for(lambda: kinds() == ["paid", "refunded", "refund_failed"], message=f"the emails, not {kinds()}")


def test_only_a_paid_order_with_its_payment_can_be_refunded(server):
    order_id = buy(server)
    with pytest.raises(refunds.AmountNotAllowed, match="more than 0"):
        refund(server, order_id, amount_minor=0)
    with pytest.raises(refunds.RefundError, match="reason must be one of"):
        refund(server, order_id, reason="BECAUSE")
    refund(server, order_id, amount_minor=100)
    with pytest.raises(refunds.NotRefundable, match="cancel or refund gives back the whole payment"):
        refund(server, order_id, reversal=True)
    with server.app.app_context():
        order = db.session.get(Order, order_id)
        order.status = "failed"
        db.session.commit()
    with pytest.raises(refunds.NotRefundable, match="only a paid order can be refunded"):
        refund(server, order_id)


# --- One refund, however it is asked ---------------------------------------------------------------


def test_a_double_submitted_confirmation_makes_one_refund(server):
    order_id = buy(server)
    http = requests.Session()
    confirm = http.get(f"{server.url}/console/orders/{order_id}/refund?amount=2.500&reason=RETURN", timeout=10)
    assert confirm.status_code == 200
    assert "Refund 2.500 KWD" in text_of(confirm.text)
    form = next(f for f in forms_of(confirm.text) if "/refunds" in f["action"])
    for _ in range(2):
        landed = http.post(server.url + form["action"], data=form["fields"], timeout=20)
        assert landed.status_code == 200
    (row,) = refunds_of(server, order_id)
    assert (row.amount_value, row.reason, row.requested_by) == (2500, "RETURN", "console")
    assert modifications(server) == 1
    page = becomes(server, order_id, "partially_refunded")
    assert page.status == "partially_refunded"
    # Without its CSRF token the form does nothing.
    refused = requests.post(
        server.url + form["action"], data={k: v for k, v in form["fields"].items() if k != "csrf_token"}, timeout=10
    )
    assert refused.status_code == 400 and len(refunds_of(server, order_id)) == 1


def test_a_retry_after_a_timeout_reuses_the_key_and_makes_one_refund(live_server_factory):
    # The simulator's webhooks held until released, so the refund is seen before its notification.
    server = live_server_factory(
        ENV=dict(FAST, ADYEN_READ_TIMEOUT="1", SIMULATOR_WEBHOOK_DELAY="600"), REFUND_RETRIES=0
    )
    order_id = buy(server)
    inject(server, REFUNDS, "timeout", seconds=1.5)
    with pytest.raises(refunds.RefundOutcomeUnknown, match="same Idempotency-Key"):
        refund(server, order_id, request_key="console-form-1")
    (row,) = refunds_of(server, order_id)
    assert row.status == "requested"
    # The simulator did the work; the same request again gets its first answer, not a second refund.
    again = refund(server, order_id, request_key="console-form-1")
    assert (again.id, again.status) == (row.id, "received")
    assert [key for _request, key, _response in calls(server, REFUNDS)] == [row.idempotency_key] * 2
    becomes(server, order_id, "refunded")
    assert modifications(server) == 1


def test_a_refund_that_got_no_answer_is_sent_again_by_the_worker_with_its_key(live_server_factory):
    server = live_server_factory(ENV=FAST, REFUND_RETRIES=0)
    order_id = buy(server)
    inject(server, REFUNDS, "refuse")  # the connection closed, no answer: nothing was done
    with pytest.raises(refunds.RefundOutcomeUnknown):
        refund(server, order_id)
    (row,) = refunds_of(server, order_id)
    assert row.status == "requested"
    with server.app.app_context():  # as if WORKER_TIMEOUT had passed since the call
        db.session.get(Refund, row.id).updated_at = row.updated_at - timedelta(hours=1)
        db.session.commit()
    server.app.extensions["worker"].wake()
    becomes(server, order_id, "refunded")
    assert [key for _request, key, _response in calls(server, REFUNDS)] == [row.idempotency_key] * 2
    assert modifications(server) == 1


def test_two_consoles_at_once_never_refund_more_than_was_paid(server):
    order_id = buy(server)
    outcomes = []
    start = threading.Barrier(4)

    def one_console(number):
        start.wait()
        try:
            outcomes.append(refund(server, order_id, amount_minor=5000, request_key=f"console-{number}").status)
        except refunds.RefundError as error:
            outcomes.append(type(error).__name__)

    threads = [threading.Thread(target=one_console, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # 12.500 KWD paid: two refunds of 5.000 fit, a third does not, pending ones counted.
    assert sorted(outcomes) == ["AmountNotAllowed", "AmountNotAllowed", "received", "received"]
    assert modifications(server) == 2
    becomes(server, order_id, "partially_refunded")


def test_a_double_click_at_once_makes_one_refund(server):
    order_id = buy(server)
    made, start = [], threading.Barrier(3)

    def click():
        start.wait()
        made.append(refund(server, order_id, amount_minor=3000, request_key="one-confirmation").id)

    threads = [threading.Thread(target=click) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(made) == 3 and len(set(made)) == 1
    assert len(refunds_of(server, order_id)) == 1 and modifications(server) == 1
    becomes(server, order_id, "partially_refunded")


# --- The console and the command line --------------------------------------------------------------


def test_the_console_offers_what_is_left_and_refuses_more(server):
    order_id = buy(server)
    page = requests.get(f"{server.url}/console/orders/{order_id}", timeout=10)
    assert 'id="refund-amount" inputmode="decimal" value="12.500"' in page.text
    assert 'value="CUSTOMER REQUEST" selected' in page.text
    too_much = requests.get(f"{server.url}/console/orders/{order_id}/refund?amount=12.501", timeout=10)
    assert too_much.status_code == 400
    assert "12.501 KWD is more than what is left to refund, 12.500 KWD." in text_of(too_much.text)
    typo = requests.get(f"{server.url}/console/orders/{order_id}/refund?amount=1.2345", timeout=10)
    assert typo.status_code == 400 and "more than 3 decimals" in text_of(typo.text)
    reversal = requests.get(f"{server.url}/console/orders/{order_id}/refund?reversal=1", timeout=10)
    assert "Cancel or refund 12.500 KWD" in text_of(reversal.text)
    http = requests.Session()
    confirm = http.get(f"{server.url}/console/orders/{order_id}/refund?reversal=1", timeout=10)
    landed = post_form(http, confirm, "/refunds")
    assert "sent: Adyen answered received" in text_of(landed.text)
    assert status_of(landed.text) in ("refund_pending", "refunded")
    becomes(server, order_id, "refunded")
    timeline = requests.get(f"{server.url}/console/orders/{order_id}", timeout=10).text
    for words in (
        "saved with its Idempotency-Key, before the call",
        "POST /payments/{paymentPspReference}/reversals → HTTP 201",
        "status received, not the outcome yet",
        "CANCEL_OR_REFUND success=true",
        "refund_pending → refunded",
    ):
        assert words in text_of(timeline), words
    assert 'href="https://docs.adyen.com/online-payments/reversal"' in timeline
    listed = requests.get(f"{server.url}/console/orders", timeout=10).text
    assert "status-refunded" in listed


def test_a_flagged_payment_shows_a_prefilled_refund_button(server):
    order_id = buy(server)
    with server.app.app_context():
        db.session.get(Order, order_id).needs_refund_decision = True
        db.session.commit()
    page = requests.get(f"{server.url}/console/orders/{order_id}", timeout=10).text
    assert "Refund 12.500 KWD (DUPLICATE)" in text_of(page)
    listed = requests.get(f"{server.url}/console/orders", timeout=10).text
    assert f"/console/orders/{order_id}/refund?amount=12.500&amp;reason=DUPLICATE" in listed
    # Refunding it is the decision: the flag gives way to the refund's own status.
    refund(server, order_id, reason="DUPLICATE")
    order = becomes(server, order_id, "refunded")
    assert order.needs_refund_decision and order.flags == []  # the fact is kept; the decision is made


def test_the_command_line_refunds_an_amount_in_kwd(server):
    order_id = buy(server)
    reference = the_order(server, order_id).reference
    runner = server.app.test_cli_runner()
    done = runner.invoke(args=["orders", "refund", reference, "--amount", "1.250", "--reason", "RETURN"])
    assert done.exit_code == 0, done.output
    assert f"Refund {reference}-R1 of 1.250 KWD: Adyen answered received" in done.output
    for args, error in (
        (["--amount", "1,250"], "--amount: '1,250' is not an amount"),
        (["--amount", "0.0001"], "more than 3 decimals"),
        (["--amount", "20"], "20.000 KWD is more than what is left to refund"),
        (["--reversal"], "cancel or refund gives back the whole payment"),
    ):
        refused = runner.invoke(args=["orders", "refund", reference, *args])
        assert refused.exit_code == 1 and error in refused.output, refused.output
    assert "No order has the reference NOPE" in runner.invoke(args=["orders", "refund", "NOPE"]).output
    becomes(server, order_id, "partially_refunded")
    listed = runner.invoke(args=["orders", "list"]).output
    assert "partially_refunded" in listed and "1.250 KWD" in listed


def test_flagged_payments_are_refunded_automatically_only_when_the_setting_is_on(live_server_factory):
    server = live_server_factory(ENV=dict(FAST, AUTO_REFUND_FLAGGED="1"), **QUICK)
    assert server.app.config["AUTO_REFUND_FLAGGED"] is True
    order_id = buy(server)
    assert refunds_of(server, order_id) == []  # not flagged: left alone
    with server.app.app_context():
        db.session.get(Order, order_id).duplicate_of_id = order_id  # flagged as a second payment
        db.session.commit()
    server.app.extensions["worker"].wake()
    order = becomes(server, order_id, "refunded")
    (row,) = refunds_of(server, order_id)
    assert (row.requested_by, row.reason, row.amount_value) == ("auto", "DUPLICATE", order.amount_value)


def paid_twice(server):
    """A real purchase, then the shopper pays the same order again on the simulator: a second successful
    AUTHORISATION with another pspReference. Returns (order id, first pspReference, second)."""
    order_id = buy(server)
    order = the_order(server, order_id)
    first = order.psp_reference
    paid_again, second, _ = pay(
        server, reference=order.reference, amount={"currency": "KWD", "value": order.amount_value}
    )
    assert paid_again.status_code in (302, 303) and second != first
    release_webhooks(server)
    wait_for(lambda: the_order(server, order_id).extra_psp_reference == second, message="the second payment kept")
    return order_id, first, second


def test_an_order_paid_twice_refunds_its_second_payment_from_the_flag_and_stays_paid_by_the_first(server):
    order_id, first, second = paid_twice(server)
    order = the_order(server, order_id)
    assert (order.status, order.psp_reference, order.flags) == ("paid", first, ["needs refund decision"])

    http = requests.Session()
    page = http.get(f"{server.url}/console/orders/{order_id}", timeout=10)
    assert "Refund 12.500 KWD (DUPLICATE)" in text_of(page.text)
    assert f"The payment {second} is flagged (a second payment: the order was paid by {first}" in text_of(page.text)
    # The flag's Refund button, and the form below it, give back the second payment.
    (href,) = re.findall(r'id="refund-flagged" href="([^"]+)"', page.text)
    assert f"payment={second}" in html.unescape(href)
    assert next(f for f in forms_of(page.text) if "/refund" in f["action"])["fields"]["payment"] == second
    confirm = http.get(server.url + html.unescape(href), timeout=10)
    assert f"POST /payments/{second}/refunds" in text_of(confirm.text)
    landed = post_form(http, confirm, "/refunds")
    assert landed.status_code == 200

    order = becomes(server, order_id, "paid")
    (row,) = refunds_of(server, order_id)
    assert (row.payment_psp_reference, row.status, row.amount_value) == (second, "succeeded", 12500)
    # The simulator refunded the second payment; the order is still paid by the first, its flag resolved.
    (url,) = [
        c[0]
        for c in in_app(
            server.app, lambda: db.session.execute(select(ApiCall.url).where(ApiCall.endpoint == REFUNDS)).all()
        )()
    ]
    assert url.endswith(f"/payments/{second}/refunds")
    refunded = in_app(
        server.app,
        lambda: (
            db.session.execute(
                select(SimPayment.psp_reference).join(SimModification, SimModification.payment_id == SimPayment.id)
            )
            .scalars()
            .all()
        ),
    )()
    assert refunded == [second]
    assert (order.psp_reference, order.needs_refund_decision, order.flags) == (first, False, [])
    page = http.get(f"{server.url}/console/orders/{order_id}", timeout=10).text
    assert f"{second} (the second payment)" in text_of(page)
    assert f"-R1: 12.500 KWD of payment {second}" in text_of(page)  # the timeline's refund steps
    # What is left is counted per payment: all of the first payment may still be refunded.
    assert "up to 12.500 KWD" in text_of(page) and f"Of payment {first}" in text_of(page)


def test_an_order_paid_twice_has_its_second_payment_refunded_automatically_and_by_the_command_line(
    live_server_factory,
):
    server = live_server_factory(ENV=dict(FAST, AUTO_REFUND_FLAGGED="1"), **QUICK)
    order_id, first, second = paid_twice(server)
    server.app.extensions["worker"].wake()
    wait_for(lambda: len(refunds_of(server, order_id)) == 1, message="the automatic refund")
    order = becomes(server, order_id, "paid")
    (row,) = refunds_of(server, order_id)
    assert (row.requested_by, row.payment_psp_reference, row.status) == ("auto", second, "succeeded")
    assert (order.psp_reference, order.flags) == (first, [])
    # The decision made, the command line refunds the order's own payment, all of it left.
    runner = server.app.test_cli_runner()
    refused = runner.invoke(args=["orders", "refund", order.reference, "--payment", "NOTAPAYMENT00001"])
    assert refused.exit_code == 1 and "was not paid by NOTAPAYMENT00001" in refused.output, refused.output
    done = runner.invoke(args=["orders", "refund", order.reference, "--amount", "1.000"])
    assert done.exit_code == 0 and f"of payment {first}." in done.output, done.output
    becomes(server, order_id, "partially_refunded")
