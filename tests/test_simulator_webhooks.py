"""The simulated Adyen's webhook sender, against a stand-in receiver on its own loopback port."""

import base64
import logging
import re
import socket
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests
from sqlalchemy import select, update

from shop.adyen.signature import is_valid
from shop.db import db
from shop.simulator import sender
from shop.simulator.models import SimWebhookDelivery
from tests.conftest import build_app
from tests.simulator_helpers import (
    GOOD_CARD,
    PAGE_PATH,
    WebhookReceiver,
    details,
    page_token,
    pay,
    redirect_result_from,
    start_payment,
    submit_page,
    wait_for,
)

EVENT_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")


@pytest.fixture
def receiver():
    stand_in = WebhookReceiver()
    yield stand_in
    stand_in.stop()


def simulator(live_server_factory, receiver, **settings):
    """A live shop whose simulator posts webhooks to `receiver`, at once, with a fast retry schedule."""
    defaults = {"SIMULATOR_WEBHOOK_URL": receiver.url, "SIMULATOR_WEBHOOK_DELAY": 0, "SIMULATOR_RETRY_SCALE": 0.001}
    return live_server_factory(**dict(defaults, **settings))


def deliveries(live, psp_reference):
    """The deliveries queued for a payment, as plain dicts, oldest first."""
    with live.app.app_context():
        rows = db.session.execute(
            select(SimWebhookDelivery)
            .where(SimWebhookDelivery.psp_reference == psp_reference)
            .order_by(SimWebhookDelivery.id)
        ).scalars()
        return [
            {column.name: getattr(row, column.name) for column in SimWebhookDelivery.__table__.columns} for row in rows
        ]


def delivered(live, psp_reference, count=1):
    found = deliveries(live, psp_reference)
    done = [row for row in found if row["status"] == "delivered"]
    return found if len(done) >= count else None


# What arrives --------------------------------------------------------------------------------------


def test_authorisation_arrives_signed_with_basic_auth(live_server_factory, receiver):
    live = simulator(live_server_factory, receiver)
    response, psp_reference, body = pay(live)
    assert response.status_code == 303
    item = wait_for(lambda: receiver.items("AUTHORISATION"))[0]

    entry = receiver.received[0]
    config = live.app.config
    assert entry["authorization"].type == "basic"
    assert (entry["authorization"].username, entry["authorization"].password) == (
        config["WEBHOOK_USERNAME"],
        config["WEBHOOK_PASSWORD"],
    )
    assert entry["content_type"] == "application/json"
    assert entry["json"]["live"] == "false"
    assert len(entry["json"]["notificationItems"]) == 1

    assert is_valid(item, [config["ADYEN_HMAC_KEY"]])
    assert not is_valid(item, ["00" * 32])
    assert item["eventCode"] == "AUTHORISATION"
    assert item["success"] == "true"
    assert item["pspReference"] == psp_reference
    assert item["merchantReference"] == body["reference"]
    assert item["merchantAccountCode"] == config["ADYEN_MERCHANT_ACCOUNT"]
    assert item["amount"] == {"currency": "KWD", "value": 12500}
    assert item["paymentMethod"] == "knet"
    assert item["operations"] == ["CANCEL", "CAPTURE", "REFUND"]
    assert item["reason"] == "null"  # as in Adyen's AUTHORISATION examples
    assert EVENT_DATE.match(item["eventDate"])
    # Amsterdam time, whatever the zone of the shop or the shopper: +01:00 in winter, +02:00 in summer.
    happened = datetime.fromisoformat(item["eventDate"])
    assert happened.utcoffset() == happened.astimezone(ZoneInfo("Europe/Amsterdam")).utcoffset()
    assert abs(happened - datetime.now(UTC)) < timedelta(minutes=5)

    row = wait_for(lambda: delivered(live, psp_reference))[0]
    assert (row["attempts"], row["last_status_code"], row["last_response_body"]) == (1, 200, "[accepted]")
    assert row["delivered_at"] is not None and row["target_url"] == receiver.url
    # Stored unsigned: the signature is made at send time and never kept.
    assert "hmacSignature" not in row["payload"]["notificationItems"][0]["NotificationRequestItem"]["additionalData"]


@pytest.mark.parametrize(
    "card, reason",
    [
        (dict(GOOD_CARD, pin="9999"), "Invalid Pin"),
        (dict(GOOD_CARD, card_number="8888880000000003"), "Acquirer Error"),
        ("cancel", "Shopper Cancelled"),
    ],
)
def test_failed_outcomes_send_authorisation_false_with_the_reason(live_server_factory, receiver, card, reason):
    live = simulator(live_server_factory, receiver)
    _, psp_reference, _ = pay(live, card)
    item = wait_for(lambda: receiver.items("AUTHORISATION"))[0]
    assert (item["pspReference"], item["success"], item["reason"]) == (psp_reference, "false", reason)
    assert is_valid(item, [live.app.config["ADYEN_HMAC_KEY"]])


@pytest.mark.parametrize("card_number, success", [("8888880000000004", "true"), ("8888880000000005", "false")])
def test_pending_and_received_get_their_final_webhook_later(live_server_factory, receiver, card_number, success):
    live = simulator(live_server_factory, receiver, SIMULATOR_PENDING_DELAY=0.4)
    response, psp_reference, _ = pay(live, dict(GOOD_CARD, card_number=card_number))
    [queued] = deliveries(live, psp_reference)
    assert (queued["due_at"] - queued["created_at"]).total_seconds() == pytest.approx(0.4, abs=0.05)

    item = wait_for(lambda: receiver.items("AUTHORISATION"))[0]
    assert (item["pspReference"], item["success"]) == (psp_reference, success)
    result = details(live, redirect_result_from(response.headers["Location"])).json()
    assert result["resultCode"] == {"true": "Pending", "false": "Received"}[success]


def test_abandoned_payment_gets_one_offer_closed(live_server_factory, receiver):
    live = simulator(live_server_factory, receiver, SIMULATOR_OFFER_EXPIRY=0.2)
    answer, psp_reference, body = start_payment(live)
    item = wait_for(lambda: receiver.items("OFFER_CLOSED"))[0]
    assert (item["pspReference"], item["merchantReference"]) == (psp_reference, body["reference"])
    assert item["success"] == "true"
    assert is_valid(item, [live.app.config["ADYEN_HMAC_KEY"]])

    # The worker keeps scanning every 50 ms; a few more ticks must not close the offer again.
    time.sleep(0.3)
    assert [row["event_code"] for row in deliveries(live, psp_reference)] == ["OFFER_CLOSED"]
    assert len(receiver.items()) == 1
    late = submit_page_after_expiry(live, answer)
    assert late.status_code == 410 and "This payment has expired" in late.text


def submit_page_after_expiry(live, answer):
    return requests.post(
        live.url + PAGE_PATH,
        data={"paymentId": page_token(answer["action"]), "action": "submit", **GOOD_CARD},
        timeout=10,
    )


# Retries -------------------------------------------------------------------------------------------------


def test_failed_delivery_is_retried_until_accepted(live_server_factory, receiver):
    receiver.statuses = [500, 503]
    live = simulator(live_server_factory, receiver)
    _, psp_reference, _ = pay(live)
    [row] = wait_for(lambda: delivered(live, psp_reference), timeout=15)
    assert row["attempts"] == 3
    assert [attempt["status_code"] for attempt in row["history"]] == [500, 503, 200]
    assert row["last_status_code"] == 200
    assert [entry["status"] for entry in receiver.received] == [500, 503, 200]
    # The same event each time, signed the same way.
    signatures = {
        entry["json"]["notificationItems"][0]["NotificationRequestItem"]["additionalData"]["hmacSignature"]
        for entry in receiver.received
    }
    assert len(signatures) == 1


def test_retries_are_one_ordered_queue_per_endpoint(live_server_factory, receiver):
    """As at Adyen: while a webhook to an endpoint is failing, the ones after it wait; once it is
    accepted, the rest follow, in order. The console's deliveries page says so meanwhile."""
    receiver.statuses = [500]
    # The first retry comes 9 s later on Adyen's schedule (scale 1): long enough to look meanwhile.
    live = simulator(live_server_factory, receiver, BACKGROUND_WORKER=False, SIMULATOR_RETRY_SCALE=1)
    _, first, _ = pay(live)
    with live.app.app_context():
        assert sender.deliver_due() == 1  # refused with a 500: the endpoint is failing now
    _, second, _ = pay(live)
    with live.app.app_context():
        assert sender.deliver_due() == 0  # the second waits behind the first, although it is due
        (endpoint,) = sender.endpoints()
    assert [entry["status"] for entry in receiver.received] == [500]
    assert (endpoint["url"], endpoint["failing"], endpoint["retries"], endpoint["waiting"]) == (
        receiver.url,
        True,
        1,
        1,
    )
    assert endpoint["failing_since"] == deliveries(live, first)[0]["history"][0]["at"]
    assert deliveries(live, second)[0]["attempts"] == 0

    with live.app.app_context():  # the retry's time comes
        db.session.execute(update(SimWebhookDelivery).values(due_at=SimWebhookDelivery.created_at))
        db.session.commit()
        assert sender.deliver_due() == 1  # the first, accepted this time
        assert sender.deliver_due() == 1  # then the one that waited
        assert sender.endpoints() == []
    sent = [
        entry["json"]["notificationItems"][0]["NotificationRequestItem"]["pspReference"] for entry in receiver.received
    ]
    assert sent == [first, first, second]


def test_unreachable_endpoint_is_retried_with_the_error_recorded(live_server_factory, receiver):
    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    live = simulator(live_server_factory, receiver, SIMULATOR_WEBHOOK_URL=f"http://127.0.0.1:{closed_port}/webhooks")
    _, psp_reference, _ = pay(live)
    row = wait_for(lambda: (rows := deliveries(live, psp_reference)) and rows[0]["attempts"] >= 2 and rows[0])
    assert row["status"] in ("pending", "delivering")
    assert row["last_error"].startswith("could not connect")
    assert row["last_status_code"] is None


def test_delivery_gives_up_after_the_retry_period(live_server_factory, receiver):
    receiver.statuses = [500] * 10_000
    # 30 days × 2e-7 ≈ 0.5 s of retries.
    live = simulator(live_server_factory, receiver, SIMULATOR_RETRY_SCALE=2e-7)
    _, psp_reference, _ = pay(live)
    row = wait_for(lambda: (rows := deliveries(live, psp_reference)) and rows[0]["status"] == "failed" and rows[0])
    assert row["attempts"] >= 2  # retried within the period (how often depends on the loop's pace)
    assert row["last_status_code"] == 500
    assert len(row["history"]) == min(row["attempts"], sender.HISTORY_LIMIT)


def test_retry_schedule_is_adyens_scaled(tmp_path):
    app = build_app(tmp_path, ENV={"SIMULATOR_RETRY_SCALE": "1/60"})
    with app.app_context():
        delays = [sender.retry_delay(failures) for failures in range(1, 14)]
    # With 1/60 Adyen's minutes become seconds: three quick retries (9 s → 0.15 s), then 2 min → 2 s, … 8 h → 480 s.
    assert delays[:3] == pytest.approx([0.15, 0.15, 0.15])
    assert delays[3:12] == pytest.approx([2, 5, 10, 15, 30, 60, 120, 240, 480])
    assert delays[12] == pytest.approx(480)


# Several workers, crashes and restarts ---------------------------------------------------------------------


def test_a_claimed_delivery_is_not_sent_by_another_worker(live_server_factory, receiver, tmp_path):
    live = simulator(live_server_factory, receiver, BACKGROUND_WORKER=False)
    _, psp_reference, _ = pay(live)
    # A second process on the same database, as another gunicorn worker would be.
    other_worker = build_app(
        tmp_path / "other",
        SQLALCHEMY_DATABASE_URI=live.app.config["SQLALCHEMY_DATABASE_URI"],
        SIMULATOR_WEBHOOK_URL=receiver.url,
    )
    with live.app.app_context():
        [claim] = sender.QUEUE.claim(1)
    with other_worker.app_context():
        assert sender.deliver_due() == 0
    assert receiver.received == []

    with live.app.app_context():
        assert sender.deliver(claim) is True
    with other_worker.app_context():
        assert sender.deliver_due() == 0
    assert len(receiver.items()) == 1
    assert deliveries(live, psp_reference)[0]["status"] == "delivered"


def test_a_delivery_whose_worker_died_mid_send_is_taken_over(live_server_factory, receiver):
    live = simulator(live_server_factory, receiver, BACKGROUND_WORKER=False, SIMULATOR_DELIVERY_LEASE=0.3)
    _, psp_reference, _ = pay(live)
    with live.app.app_context():
        [crashed_claim] = sender.QUEUE.claim(1)  # claimed, then the worker "dies" before sending
        assert sender.deliver_due() == 0  # the lease still holds
        wait_for(sender.deliver_due)  # the lease ran out: another worker takes it over
        assert len(receiver.items()) == 1
        # The dead worker's claim is void: it sends nothing and records nothing.
        assert sender.deliver(crashed_claim) is False
    assert len(receiver.items()) == 1
    [row] = deliveries(live, psp_reference)
    # Two claims (the dead worker's counts, as on every queue of the shop), one POST, one attempt logged.
    assert (row["status"], row["attempts"], len(row["history"])) == ("delivered", 2, 1)


def test_queued_work_survives_a_restart(live_server_factory, receiver):
    first = simulator(live_server_factory, receiver, BACKGROUND_WORKER=False)
    answer, psp_reference, _ = start_payment(first)
    _, finished_psp, _ = pay(first)  # its webhook is queued, not sent: no worker runs here
    assert deliveries(first, finished_psp)[0]["status"] == "pending"
    first.stop()

    database = first.app.config["SQLALCHEMY_DATABASE_URI"]
    second = simulator(live_server_factory, receiver, SQLALCHEMY_DATABASE_URI=database)
    # The queued webhook goes out from the new process...
    item = wait_for(lambda: receiver.items("AUTHORISATION"))[0]
    assert item["pspReference"] == finished_psp
    # ...and a payment started before the restart can still be paid and resolved.
    moved_action = dict(answer["action"], url=answer["action"]["url"].replace(first.url, second.url))
    returned = submit_page(second, moved_action, **GOOD_CARD)
    result = details(second, redirect_result_from(returned.headers["Location"])).json()
    assert (result["pspReference"], result["resultCode"]) == (psp_reference, "Authorised")
    wait_for(lambda: len(receiver.items("AUTHORISATION")) == 2)


# Console helpers -------------------------------------------------------------------------------------------


def test_duplicate_and_resend(live_server_factory, receiver):
    live = simulator(live_server_factory, receiver)
    _, psp_reference, _ = pay(live)
    [original] = wait_for(lambda: delivered(live, psp_reference))

    with live.app.app_context():
        duplicate_id = sender.enqueue_duplicate(original["id"])
    wait_for(lambda: len(receiver.items()) == 2)
    first, second = receiver.items()
    assert first == second  # the very same event, signature included
    assert deliveries(live, psp_reference)[1]["duplicate_of"] == original["id"] != duplicate_id

    with live.app.app_context():
        assert sender.resend(original["id"]) is True
    wait_for(lambda: len(receiver.items()) == 3)
    row = wait_for(lambda: (rows := delivered(live, psp_reference, count=2)) and rows[0]["attempts"] == 2 and rows[0])
    assert len(row["history"]) == 2
    with live.app.app_context():
        with pytest.raises(LookupError):
            sender.enqueue_duplicate(999_999)


def test_no_secret_or_card_data_is_logged(live_server_factory, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    receiver.statuses = [500]
    live = simulator(live_server_factory, receiver)
    _, psp_reference, _ = pay(live)
    wait_for(lambda: delivered(live, psp_reference))
    item = receiver.items()[0]
    config = live.app.config
    secrets = [
        config["ADYEN_HMAC_KEY"],
        config["WEBHOOK_PASSWORD"],
        config["ADYEN_API_KEY"],
        item["additionalData"]["hmacSignature"],
        base64.b64encode(f"{config['WEBHOOK_USERNAME']}:{config['WEBHOOK_PASSWORD']}".encode()).decode(),
        GOOD_CARD["card_number"],
    ]
    assert psp_reference in caplog.text  # the sender did log its work
    for secret in secrets:
        assert secret not in caplog.text
