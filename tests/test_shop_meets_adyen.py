"""The shop against what Adyen does that surprises integrators, over real HTTP with its simulator:
704 as HTTP 422 or 409, redirectResults of up to 20,000 characters, and `reason: "null"`."""

import base64
import html
import json
import re
from urllib.parse import quote, unquote, urlsplit

import pytest
import requests
from sqlalchemy import select

from shop.db import db
from shop.models import ApiCall, Email, OrderStatus
from tests.fault_helpers import (
    TIMEOUTS,
    api_calls,
    in_context,
    inject,
    shopper_with_cart,
    sim_payments,
    start,
    the_order,
)
from tests.shopper import order_token, text_of
from tests.simulator_helpers import LONGEST_REDIRECT_RESULT, details, pay, redirect_result_from
from tests.webhook_helpers import wait_for


def paid(server):
    order, _ = the_order(server)
    return order.status == OrderStatus.PAID


def visible_text(html):
    """What a person reads on a page, without the raw JSON bodies shown for developers."""
    return text_of(re.sub(r"(?s)<(pre|details)\b.*?</\1>", " ", html))


# 704 in both forms -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["422", "409"])
def test_payments_in_progress_is_retried_with_the_same_key_as_422_or_409(live_server_factory, status):
    server = start(live_server_factory, env=dict(TIMEOUTS, SIMULATOR_704_STATUS=status))
    inject(server, "/payments", "timeout", count=1)  # the first try is done at Adyen, its answer late
    inject(server, "/payments", "http_704_on_repeat", count=1)  # the retry finds it "in progress"
    shopper = shopper_with_cart(server)
    knet_page = shopper.place_order()
    assert "Card Number" in text_of(knet_page.text), text_of(knet_page.text)[:300]

    calls = api_calls(server, "/payments")
    assert [(c["status"], (c["response"] or {}).get("errorCode")) for c in calls] == [
        (None, None),
        (int(status), "704"),
        (200, None),
    ]
    assert len({c["key"] for c in calls}) == 1 and sim_payments(server) == 1
    shopper.pay_on_knet(knet_page)
    wait_for(lambda: paid(server), message="the webhook to settle the order")


@pytest.mark.parametrize("status", ["422", "409"])
def test_details_in_progress_as_422_or_409_is_not_a_failure(live_server_factory, status):
    server = start(live_server_factory, env={"SIMULATOR_704_STATUS": status, "SIMULATOR_PENDING_DELAY": "0"})
    inject(server, "webhooks", "webhook_burst")  # the webhook waits, so the page shows the return's result
    shopper = shopper_with_cart(server)
    result = shopper.pay_on_knet(shopper.place_order(), card_number="8888880000000004")  # Pending
    return_url = next(r.url for r in result.history if "/checkout/return/" in r.url)

    inject(server, "/payments/details", "http_704_on_repeat", count=1)
    again = shopper.get(return_url)  # the same return again, while Adyen is "still processing" it
    text = text_of(again.text)
    assert again.status_code == 200 and "Order received" in text
    for word in ("refused", "error", "failed", "cancelled"):
        assert word not in text.lower()
    last = api_calls(server, "/payments/details")[-1]
    assert (last["status"], last["response"]["errorCode"]) == (int(status), "704")
    order, _ = the_order(server)
    assert (order.status, order.result_code) == (OrderStatus.PENDING, "Pending")


def test_the_shops_own_key_makes_a_repeated_return_safe(live_server_factory):
    """Adyen answers a repeated /payments/details without a key with 704 (the simulator too); the
    shop's key, derived from the redirectResult, gets the first answer back instead."""
    server = start(live_server_factory, env={"SIMULATOR_WEBHOOK_DELAY": "600"})
    shopper = shopper_with_cart(server)
    result = shopper.pay_on_knet(shopper.place_order())
    return_url = next(r.url for r in result.history if "/checkout/return/" in r.url)
    for _ in range(2):  # a refresh, and the back button
        assert "Payment successful" in text_of(shopper.get(return_url).text)
    calls = api_calls(server, "/payments/details")
    assert [c["status"] for c in calls] == [200]  # the later visits show the stored result: no call
    value = redirect_result_from(return_url)
    assert details(server, value).json()["errorCode"] == "704"  # a client without a key
    assert (
        details(
            server, value, headers={"X-API-Key": server.app.config["ADYEN_API_KEY"], "Idempotency-Key": calls[0]["key"]}
        ).json()["resultCode"]
        == "Authorised"
    )


# redirectResult: long, as Adyen's ----------------------------------------------------------------------------


def test_the_simulators_redirect_result_is_like_adyens(live_server_factory):
    server = live_server_factory(BACKGROUND_WORKER=False)
    response, psp_reference, body = pay(server)
    value = redirect_result_from(response.headers["Location"])
    assert len(value) > 1_100 and value.startswith("X6XtfGC3!")
    assert {"+", "/", "="} <= set(value)
    # Standard Base64 of a JSON document, then of a 32-byte signature, as in Adyen's.
    document = json.loads(base64.b64decode(value[9:-44]))["redirectPaymentData"]
    assert len(base64.b64decode(value[-44:])) == 32
    assert document["amount"] == body["amount"]
    assert document["merchantAccount"] == body["merchantAccount"]
    assert document["returnUrl"] == body["returnUrl"]
    assert document["originalPspReference"] == psp_reference


def test_a_long_return_url_gives_a_long_redirect_result_that_resolves(live_server_factory):
    server = live_server_factory(BACKGROUND_WORKER=False)
    return_url = f"{server.url}/checkout/return/abc?basket={'b' * 7_500}"
    response, psp_reference, _ = pay(server, returnUrl=return_url)
    value = redirect_result_from(response.headers["Location"])
    assert len(value) > 10_000  # far past the 255 characters the simulator once stored
    answer = details(server, value).json()
    assert (answer["resultCode"], answer["pspReference"]) == ("Authorised", psp_reference)
    # Cut short, or with one character changed, it names no payment.
    for wrong in (value[:255], value[:-1] + ("A" if value[-1] != "A" else "B")):
        assert details(server, wrong).json()["errorCode"] == "14_018"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_the_shop_takes_a_20000_character_redirect_result_back(live_server_factory, method):
    server = start(live_server_factory)
    shopper = shopper_with_cart(server)
    knet_page = shopper.place_order()
    token = order_token(knet_page)
    return_path = f"/checkout/return/{token}"
    if method == "GET":
        back = shopper.get(
            f"{return_path}?redirectResult={quote(LONGEST_REDIRECT_RESULT, safe='')}", allow_redirects=False
        )
    else:
        back = requests.post(
            server.url + return_path,
            data={"redirectResult": LONGEST_REDIRECT_RESULT},
            allow_redirects=False,
            timeout=20,
        )
    # The shop read it, sent it on exactly as it came (decoded once) and shows the order as it is.
    assert back.status_code == 303 and back.headers["Location"].endswith(f"/orders/{token}")
    sent = in_context(
        server,
        lambda: (
            db.session.execute(select(ApiCall.request_json).where(ApiCall.endpoint == "/payments/details"))
            .scalars()
            .all()
        ),
    )
    assert sent == [{"details": {"redirectResult": LONGEST_REDIRECT_RESULT}}]
    order, _ = the_order(server)
    assert order.status == OrderStatus.PENDING  # Adyen did not know that value (422): the webhook decides

    too_long = shopper.get(f"{return_path}?redirectResult={quote(LONGEST_REDIRECT_RESULT + 'A', safe='')}")
    assert too_long.status_code == 400 and "couldn't read the payment result" in text_of(too_long.text)
    assert len(api_calls(server, "/payments/details")) == 1


def test_the_console_shows_a_long_redirect_result_shortened(live_server_factory):
    server = start(live_server_factory)
    shopper = shopper_with_cart(server)
    knet_page = shopper.place_order()
    token = order_token(knet_page)
    shopper.get(f"/checkout/return/{token}?redirectResult={quote(LONGEST_REDIRECT_RESULT, safe='')}")
    order, _ = the_order(server)
    page = requests.get(f"{server.url}/console/orders/{order.id}", timeout=20)
    assert page.status_code == 200
    assert LONGEST_REDIRECT_RESULT[:12] in unquote(page.text) and "(20000 characters)" in text_of(page.text)
    assert (
        LONGEST_REDIRECT_RESULT[:200] not in page.text
        and LONGEST_REDIRECT_RESULT[:200].replace("+", "&#43;") not in page.text
    )


# reason "null" ---------------------------------------------------------------------------------------------------


def test_a_successful_authorisations_reason_null_is_shown_to_nobody(live_server_factory):
    server = start(live_server_factory)
    shopper = shopper_with_cart(server)
    result = shopper.pay_on_knet(shopper.place_order())
    wait_for(lambda: paid(server), message="the webhook to settle the order")
    order, _ = the_order(server)
    # Emails are written when they are sent (here: kept, as there is no MAIL_SERVER).
    written = select(Email.body).where(Email.body.is_not(None))
    emails = wait_for(
        lambda: in_context(server, lambda: db.session.execute(written).scalars().all()), message="the email written"
    )
    pages = [
        shopper.get(urlsplit(result.url).path).text,
        requests.get(f"{server.url}/console/orders/{order.id}", timeout=20).text,
        requests.get(f"{server.url}/console/webhooks", timeout=20).text,
    ]
    # The webhook did say "null" (as Adyen's do), in the raw body the console shows developers...
    assert '"reason": "null"' in html.unescape(pages[2])
    # ...and nowhere is it shown as a reason.
    for text in [visible_text(page) for page in pages] + emails:
        assert not re.search(r"\bnull\b", text, re.IGNORECASE), text[:500]
