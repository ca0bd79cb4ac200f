"""No order hangs (issue 12, point 4): the background loop closes an order whose /payments never got
an answer, and one whose offer ran out with no webhook, after RECONCILE_AFTER_SECONDS; the shopper's
page and email say "we could not confirm", and a late AUTHORISATION success=true still wins.

RECONCILE_AFTER_SECONDS is 3 s here; it must be more than WORKER_TIMEOUT (2 s), which the Adyen
timeouts must fit in. The simulator's webhooks wait an hour: none comes by itself.
"""

import pytest

from shop.config import ConfigError, load_settings
from tests.console_helpers import steps_of
from tests.fault_helpers import inject, the_order
from tests.shopper import Shopper, forms_of, order_token, text_of
from tests.webhook_helpers import emails, envelope, get_order, item, post, wait_for

ENV = {
    "ADYEN_CONNECT_TIMEOUT": "0.25",
    "ADYEN_READ_TIMEOUT": "0.5",
    "ADYEN_PAYMENTS_DEADLINE": "1.5",
    "WORKER_TIMEOUT": "2",
    "RECONCILE_AFTER_SECONDS": "3",
    "SIMULATOR_WEBHOOK_DELAY": "3600",
}
UNCONFIRMED = "We could not confirm your payment with KNET in time, so we cancelled the order."
EMAIL = "We could not confirm the payment for order {reference} with KNET in time, so we cancelled the order."


def start(live_server_factory):
    return live_server_factory(ENV=ENV, PAYMENTS_RETRY_BACKOFF=(0.1, 0.2))


def closed_email(server, reference):
    """The order's "unconfirmed" email, once the loop has rendered it (and kept it: no MAIL_SERVER)."""
    rows = [e for e in emails(server.app, reference) if e.kind == "unconfirmed" and e.body]
    return rows[0] if rows else None


def test_an_order_whose_payments_call_never_got_an_answer_is_closed_and_the_shopper_told(live_server_factory):
    server = start(live_server_factory)
    inject(server, "/payments", "refuse", count=3)  # the first try and both retries: no answer at all
    shopper = Shopper(server.url)
    shopper.add_to_cart()
    page = shopper.place_order()
    assert "We couldn't reach the payment provider yet" in text_of(page.text)
    order, attempts = the_order(server)
    assert order.status == "pending" and [status for status, _ in attempts] == ["calling"]
    path = f"/orders/{order.token}"

    shown = shopper.wait_for_text(path, UNCONFIRMED, timeout=20)
    assert "Order cancelled" in text_of(shown.text)
    assert "Try again" in text_of(shown.text) and "/pay" not in [f["action"][-4:] for f in forms_of(shown.text)]
    closed = get_order(server.app, order.reference)
    assert (closed.status, closed.status_reason) == ("expired", "unconfirmed")
    email = wait_for(lambda: closed_email(server, order.reference), message="the unconfirmed email")
    assert EMAIL.format(reference=order.reference) in " ".join(email.body.split())
    assert email.subject == f"Order {order.reference} cancelled: we could not confirm the payment"
    timeline = Shopper(server.url).get(f"/console/orders/{order.id}")
    assert "reconciled" in [kind for kind, _ in steps_of(timeline.text)]
    assert "no answer to /payments within" in text_of(timeline.text)
    # The cart was not bought: the shopper can pay again, with a new order.
    again = shopper.checkout_page()
    assert any("first_name" in form["fields"] for form in forms_of(again.text))


def test_an_offer_no_webhook_came_for_is_closed_and_a_late_authorisation_still_wins(live_server_factory):
    server = start(live_server_factory)
    shopper = Shopper(server.url)
    shopper.add_to_cart()
    knet_page = shopper.place_order()
    assert "Card Number" in text_of(knet_page.text)  # the shopper leaves KNET's page here
    token = order_token(knet_page)
    path = f"/orders/{token}"
    order, attempts = the_order(server)
    assert [status for status, _ in attempts] == ["redirected"]

    shopper.wait_for_text(path, UNCONFIRMED, timeout=20)
    email = wait_for(lambda: closed_email(server, order.reference), message="the unconfirmed email")
    assert EMAIL.format(reference=order.reference) in " ".join(email.body.split())
    timeline = Shopper(server.url).get(f"/console/orders/{order.id}")
    assert "no webhook within" in text_of(timeline.text)

    # Adyen's AUTHORISATION success=true arrives after all (the offer was still open at KNET).
    late = item(server.app, order.reference, value=order.amount_value)
    assert post(server, envelope(late)).text == "[accepted]"
    wait_for(lambda: get_order(server.app, order.reference).status == "paid", message="the late payment applied")
    paid = get_order(server.app, order.reference)
    assert paid.needs_refund_decision
    assert "Payment successful" in text_of(shopper.get(path).text)
    wait_for(
        lambda: sorted(e.kind for e in emails(server.app, order.reference)) == ["late_paid", "unconfirmed"],
        message="the late_paid email after the unconfirmed one",
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"RECONCILE_AFTER_SECONDS": "30"}, "RECONCILE_AFTER_SECONDS must be more than WORKER_TIMEOUT"),
        ({"RECONCILE_AFTER_SECONDS": "0"}, "RECONCILE_AFTER_SECONDS must be more than 0 seconds"),
        ({"MAIL_LEASE_SECONDS": "30", "MAIL_TIMEOUT": "10"}, "MAIL_LEASE_SECONDS must be more than 3 × MAIL_TIMEOUT"),
        ({"WEBHOOK_LEASE_SECONDS": "-1"}, "WEBHOOK_LEASE_SECONDS must be more than 0 seconds"),
        ({"WEBHOOK_LEASE_SECONDS": "soon"}, "WEBHOOK_LEASE_SECONDS must be a number of seconds"),
    ],
)
def test_leases_and_the_reconciliation_delay_are_checked_at_start_up(settings, message):
    with pytest.raises(ConfigError, match=message):
        load_settings({"ADYEN_ENVIRONMENT": "simulator", **settings})


def test_an_order_the_shopper_was_told_is_placed_is_flagged_for_review_not_cancelled(live_server_factory):
    """/payments/details said Authorised, but no webhook came (Adyen may still be retrying an
    endpoint it could not reach): the shop never tells that shopper "cancelled"."""
    server = start(live_server_factory)
    shopper = Shopper(server.url)
    shopper.add_to_cart()
    result = shopper.pay_on_knet(shopper.place_order())
    assert "Payment successful" in text_of(result.text)
    order, _ = the_order(server)
    wait_for(lambda: get_order(server.app, order.reference).needs_review, timeout=20, message="the review flag")
    flagged = get_order(server.app, order.reference)
    assert (flagged.status, flagged.result_code, flagged.status_reason) == ("pending", "Authorised", None)
    assert emails(server.app, order.reference) == []
    timeline = text_of(Shopper(server.url).get(f"/console/orders/{order.id}").text)
    assert "Flagged for review by the shop" in timeline and "the shopper was told 'Authorised'" in timeline
    assert "Payment successful" in text_of(shopper.get(f"/orders/{order.token}").text)
    # The webhook, late: it settles the order as usual.
    assert post(server, envelope(item(server.app, order.reference, psp=flagged.psp_reference))).text == "[accepted]"
    wait_for(lambda: get_order(server.app, order.reference).status == "paid", message="paid by the late webhook")
