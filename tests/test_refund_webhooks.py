"""Refund notifications over HTTP, signed as Adyen signs them (originalReference in the HMAC), on a
refund the shop saved: each outcome, duplicates, any arrival order, and refunds nobody here asked for.

The refunds are stored as request_refund leaves them after Adyen's `received` answer; the calls
themselves are tested against the simulator in tests/test_refunds.py.
"""

import pytest
from sqlalchemy import select

from shop.db import db
from shop.models import Order, Refund, RefundKind
from tests.webhook_helpers import emails, envelope, events, get_order, item, make_order, notifications, post
from tests.webhook_helpers import wait_for as wait

PAYMENT = "PAYMENT000000001"


def paid_order(app, amount=12500, psp=PAYMENT, **fields):
    return make_order(app, status="paid", amount_value=amount, psp_reference=psp, **fields)


def saved_refund(
    app, reference, amount, number=1, psp=None, kind=RefundKind.REFUND, status="received", payment=PAYMENT
):
    """A refund as the shop keeps it once Adyen acknowledged it (or, psp=None, before its answer)."""
    with app.app_context():
        order = db.session.execute(select(Order).where(Order.reference == reference)).scalar_one()
        refund = Refund(
            order_id=order.id,
            kind=kind,
            amount_value=amount,
            payment_psp_reference=payment,
            reference=f"{reference}-R{number}",
            psp_reference=psp,
            status=status,
            requested_by="console",
        )
        order.status = "refund_pending"
        db.session.add(refund)
        db.session.commit()
        return refund.reference


def refund_item(app, merchant_reference, psp, event_code="REFUND", success="true", value=12500, **extra):
    return item(
        app,
        merchant_reference,
        event_code=event_code,
        success=success,
        value=value,
        psp=psp,
        originalReference=extra.pop("original", PAYMENT),
        **extra,
    )


def deliver(server, *items):
    response = post(server, envelope(*items))
    assert response.text == "[accepted]"


def settled(app, count):
    return wait(
        lambda: len([n for n in notifications(app) if n.status == "processed"]) >= count,
        message=f"{count} notifications processed",
    )


def kept_emails(app, reference):
    """The order's emails once the worker has written them all (kept: no MAIL_SERVER in tests)."""
    return wait(
        lambda: (rows := emails(app, reference)) and all(e.status == "kept" for e in rows) and rows,
        message="the emails written",
    )


def refund_row(app, reference):
    with app.app_context():
        row = db.session.execute(select(Refund).where(Refund.reference == reference)).scalar_one()
        db.session.expunge(row)
        return row


def test_a_full_refund_succeeds_once_however_often_it_is_delivered(live_server):
    app = live_server.app
    order = paid_order(app)
    refund = saved_refund(app, order, 12500, psp="REFUND0000000001")
    for _ in range(3):
        deliver(live_server, refund_item(app, refund, "REFUND0000000001"))
    settled(app, 1)
    assert get_order(app, order).status == "refunded"
    assert refund_row(app, refund).status == "succeeded"
    (email,) = kept_emails(app, order)
    assert email.subject == f"We refunded 12.500 KWD: order {order}"
    assert "We have refunded 12.500 KWD of your payment" in email.body
    (step,) = events(app, order, kind="refund_settled")
    assert (step.old_status, step.new_status) == ("refund_pending", "refunded")
    assert len(events(app, order, kind="webhook_duplicate")) == 0  # counted on the notification instead
    assert notifications(app)[0].duplicates == 2


def test_two_partial_refunds_make_the_order_partially_refunded_then_refunded(live_server):
    app = live_server.app
    order = paid_order(app)
    first = saved_refund(app, order, 2000, 1, psp="REFUND0000000011")
    deliver(live_server, refund_item(app, first, "REFUND0000000011", value=2000))
    settled(app, 1)
    assert get_order(app, order).status == "partially_refunded"
    second = saved_refund(app, order, 10500, 2, psp="REFUND0000000012")
    deliver(live_server, refund_item(app, second, "REFUND0000000012", value=10500))
    settled(app, 2)
    assert get_order(app, order).status == "refunded"
    assert [e.subject for e in kept_emails(app, order)] == [
        f"We refunded 2.000 KWD: order {order}",
        f"We refunded 10.500 KWD: order {order}",
    ]


def test_a_refused_refund_is_an_outcome_the_order_goes_back_to_paid_flagged_with_adyens_reason(live_server):
    app = live_server.app
    order = paid_order(app)
    refund = saved_refund(app, order, 12500, psp="REFUND0000000021")
    reason = "Transaction hasn't been captured, refund not possible"
    deliver(live_server, refund_item(app, refund, "REFUND0000000021", success="false", reason=reason))
    settled(app, 1)
    paid = get_order(app, order)
    assert (paid.status, paid.refund_failed) == ("paid", True)
    assert "refund_failed" in paid.flags
    row = refund_row(app, refund)
    assert (row.status, row.failure_reason) == ("failed", reason)
    (email,) = kept_emails(app, order)
    assert email.subject == f"Your refund could not be completed: order {order}"
    assert notifications(app)[0].status == "processed"  # a normal outcome, not an error


@pytest.mark.parametrize("undo", ["REFUND_FAILED", "REFUNDED_REVERSED"])
@pytest.mark.parametrize("failure_first", [False, True])
def test_a_refund_undone_after_its_success_fails_in_any_arrival_order(live_server, undo, failure_first):
    app = live_server.app
    order = paid_order(app)
    refund = saved_refund(app, order, 12500, psp="REFUND0000000031")
    success = refund_item(app, refund, "REFUND0000000031")
    failure = refund_item(app, refund, "REFUND0000000031", event_code=undo, reason="Refund Failed")
    for one in [failure, success] if failure_first else [success, failure]:
        deliver(live_server, one)
        settled(app, len(notifications(app)))
    assert get_order(app, order).status == "paid" and get_order(app, order).refund_failed
    assert refund_row(app, refund).status == "failed"
    subjects = [e.subject for e in kept_emails(app, order)]
    expected_failed = f"Your refund could not be completed: order {order}"
    assert (
        subjects == [expected_failed] if failure_first else [f"We refunded 12.500 KWD: order {order}", expected_failed]
    )


def test_a_notification_quicker_than_the_answer_is_matched_by_reference_and_amount(live_server):
    """No pspReference of the refund is known yet: the notification names the order (or the refund)."""
    app = live_server.app
    order = paid_order(app)
    refund = saved_refund(app, order, 5000, psp=None, status="requested")
    deliver(live_server, refund_item(app, order, "REFUND0000000041", value=5000))
    settled(app, 1)
    row = refund_row(app, refund)
    assert (row.status, row.psp_reference) == ("succeeded", "REFUND0000000041")
    assert get_order(app, order).status == "partially_refunded"


def test_a_cancel_or_refund_decides_a_reversal(live_server):
    app = live_server.app
    order = paid_order(app)
    refund = saved_refund(app, order, 12500, psp="REVERSAL00000051", kind=RefundKind.REVERSAL)
    deliver(
        live_server,
        refund_item(
            app,
            refund,
            "REVERSAL00000051",
            event_code="CANCEL_OR_REFUND",
            additionalData={"modification.action": "refund"},
        ),
    )
    settled(app, 1)
    assert get_order(app, order).status == "refunded"


def test_a_refund_made_in_the_customer_area_shows_on_the_order(live_server):
    app = live_server.app
    order = paid_order(app)
    deliver(live_server, refund_item(app, order, "REFUND0000000061", value=2500))
    settled(app, 1)
    assert get_order(app, order).status == "partially_refunded"
    with app.app_context():
        (row,) = db.session.execute(select(Refund)).scalars().all()
        assert (row.amount_value, row.requested_by, row.status) == (2500, "Adyen", "succeeded")


def test_a_refund_notification_for_no_payment_of_ours_changes_nothing(live_server):
    app = live_server.app
    order = paid_order(app)
    deliver(live_server, refund_item(app, "SOMEONE-ELSE", "REFUND0000000071", original="NOTOURPAYMENT001"))
    settled(app, 1)
    assert get_order(app, order).status == "paid"
    assert "no refund of this shop matches" in notifications(app)[0].note


def test_a_replayed_refund_notification_changes_nothing_and_shows_on_the_timeline(live_server):
    from shop.webhooks import processing

    app = live_server.app
    order = paid_order(app)
    refund = saved_refund(app, order, 12500, psp="REFUND0000000081")
    deliver(live_server, refund_item(app, refund, "REFUND0000000081"))
    settled(app, 1)
    (notification,) = notifications(app)
    with app.app_context():
        assert processing.replay_now(notification.id) == "processed"
    settled(app, 1)
    assert get_order(app, order).status == "refunded"
    assert len(events(app, order, kind="webhook_replayed")) == 1
    assert len(events(app, order, kind="refund_settled")) == 1
    assert "no change: the refund succeeded already" in notifications(app)[0].note
    assert len(kept_emails(app, order)) == 1


def test_the_refund_email_is_written_in_the_orders_language(live_server):
    app = live_server.app
    order = paid_order(app, shopper_locale="ar-KW")
    refund = saved_refund(app, order, 2500, psp="REFUND0000000091")
    deliver(live_server, refund_item(app, refund, "REFUND0000000091", value=2500))
    settled(app, 1)
    (email,) = kept_emails(app, order)
    assert email.subject == f"رددنا إليك 2.500 د.ك: الطلب {order}"
    assert f"رددنا إليك 2.500 د.ك من مبلغ دفعتك للطلب {order}." in email.body
