"""The payment flow end to end: cart → /paymentMethods → /payments → KNET page → return →
/payments/details → result page, over real HTTP between the shop and its simulator."""

import re
import threading
from urllib.parse import urlsplit

import pytest

from shop.db import db
from shop.models import ApiCall, Order, OrderStatus
from shop.simulator import faults
from tests.fault_helpers import in_context
from tests.shopper import GOOD_CARD, Shopper, forms_of, text_of
from tests.webhook_helpers import wait_for

PSP_REFERENCE = re.compile(r"\b[A-Z0-9]{16}\b")


def api_calls(server, endpoint=None):
    with server.app.app_context():
        query = db.select(ApiCall).order_by(ApiCall.id)
        if endpoint:
            query = query.filter_by(endpoint=endpoint)
        return [
            {"endpoint": c.endpoint, "request": c.request_json, "status": c.status_code, "response": c.response_json}
            for c in db.session.execute(query).scalars()
        ]


def only_order(server):
    with server.app.app_context():
        orders = db.session.execute(db.select(Order)).scalars().all()
        assert len(orders) == 1, f"expected one order, found {len(orders)}"
        db.session.expunge(orders[0])
        return orders[0]


def return_url_of(result):
    """The shop's return URL the shopper passed through on the way to the result page."""
    return next(r.url for r in result.history if "/checkout/return/" in r.url)


def shopper_at_knet(server, quantity=1):
    shopper = Shopper(server.url)
    shopper.add_to_cart("medjool-dates", quantity)
    knet_page = shopper.place_order()
    assert knet_page.status_code == 200, text_of(knet_page.text)[:500]
    assert "Card Number" in text_of(knet_page.text)
    return shopper, knet_page


def test_checkout_shows_knet_with_its_logo_and_the_test_cards(live_server):
    shopper = Shopper(live_server.url)
    shopper.add_to_cart("medjool-dates", 2)
    page = shopper.checkout_page()
    assert page.status_code == 200
    assert 'src="/static/logos/knet.svg"' in page.text
    text = text_of(page.text)
    assert "Pay 25.000 KWD with KNET" in text
    assert "8888880000000001" in text  # the simulator's test-card sheet
    logo = shopper.get("/static/logos/knet.svg")
    assert logo.status_code == 200 and "<svg" in logo.text
    request = api_calls(live_server, "/paymentMethods")[0]["request"]
    assert request["countryCode"] == "KW"
    assert request["amount"] == {"currency": "KWD", "value": 25000}
    assert request["channel"] == "Web"
    assert request["shopperLocale"] == "en-KW"


def test_adyen_hosted_logo_is_a_setting(live_server_factory):
    server = live_server_factory(ENV={"KNET_LOGO_SOURCE": "adyen"})
    shopper = Shopper(server.url)
    shopper.add_to_cart()
    page = shopper.checkout_page()
    assert 'src="https://checkoutshopper-test.adyen.com/checkoutshopper/images/logos/knet.svg"' in page.text


def test_payment_methods_unreachable_shows_a_plain_message_and_no_pay_button(live_server):
    live_server.app.extensions["adyen"].base_url = "http://127.0.0.1:9/checkout/v71"  # nothing listens there
    shopper = Shopper(live_server.url)
    shopper.add_to_cart()
    page = shopper.checkout_page()
    text = text_of(page.text)
    assert "We can't load the payment methods right now" in text
    assert "with KNET" not in text
    assert '<button type="submit">Pay' not in page.text


def test_empty_cart_cannot_check_out(live_server):
    shopper = Shopper(live_server.url)
    response = shopper.checkout_page()
    assert response.url.endswith("/cart")
    assert "Your cart is empty" in text_of(response.text)


@pytest.mark.parametrize(
    "card, action, title, message",
    [
        ({}, "submit", "Payment successful", "Your payment was successful."),
        ({"card_number": "8888880000000002"}, "submit", "Payment successful", "Your payment was successful."),
        ({"expiry_month": "05", "expiry_year": "2031"}, "submit", "Payment refused", "refused by KNET"),
        ({"pin": "9999"}, "submit", "Payment refused", "refused by KNET"),
        ({}, "cancel", "Payment cancelled", "Do you want to continue with your order?"),
        ({"card_number": "8888880000000003"}, "submit", "Payment error", "There was an error processing your payment."),
        ({"card_number": "8888880000000004"}, "submit", "Order received", "waiting for the payment to be completed"),
        ({"card_number": "8888880000000005"}, "submit", "Order received", "waiting for the payment to be completed"),
    ],
    ids=["authorised-1", "authorised-2", "refused-expiry", "refused-pin", "cancelled", "error", "pending", "received"],
)
def test_each_outcome_shows_the_docs_message(live_server_factory, card, action, title, message):
    # Webhooks are held back so the page shows the redirect's resultCode, not the final state.
    server = live_server_factory(ENV={"SIMULATOR_WEBHOOK_DELAY": "600", "SIMULATOR_PENDING_DELAY": "600"})
    shopper, knet_page = shopper_at_knet(server)
    result = shopper.pay_on_knet(knet_page, action=action, **card)
    assert result.status_code == 200
    assert urlsplit(result.url).path.startswith("/orders/")
    text = text_of(result.text)
    assert title in text and message in text
    assert "12.500 KWD" in text
    order = only_order(server)
    assert order.reference in text
    assert order.psp_reference and order.psp_reference in text
    assert order.status == OrderStatus.PENDING  # the redirect never decides the order
    assert result.headers["Cache-Control"] == "no-store"
    if title.startswith("Payment ") and "successful" not in title:
        # KNET is the only payment method: one way to try again, not two buttons to the same page.
        assert text.count("Try again") == 1 and "Choose another payment method" not in text
    else:
        assert "Continue shopping" in text and "Try again" not in text


def test_error_keeps_its_refusal_reason_for_developers_only(live_server_factory):
    server = live_server_factory(ENV={"SIMULATOR_WEBHOOK_DELAY": "600"})
    shopper, knet_page = shopper_at_knet(server)
    result = shopper.pay_on_knet(knet_page, card_number="8888880000000003")
    order = only_order(server)
    assert order.result_code == "Error" and order.refusal_reason
    assert order.refusal_reason not in text_of(result.text)


def test_payments_request_carries_what_knet_needs(live_server):
    shopper, _ = shopper_at_knet(live_server, quantity=3)
    order = only_order(live_server)
    request = api_calls(live_server, "/payments")[0]["request"]
    assert request["merchantAccount"] == live_server.app.config["ADYEN_MERCHANT_ACCOUNT"]
    assert request["amount"] == {"currency": "KWD", "value": 37500}
    assert request["reference"] == order.reference and len(order.reference) <= 80
    assert request["paymentMethod"] == {"type": "knet"}
    assert request["returnUrl"] == f"{live_server.url}/checkout/return/{order.token}"
    assert request["countryCode"] == "KW" and request["channel"] == "Web" and request["shopperLocale"] == "en-KW"
    assert request["shopperName"] == {"firstName": "Fatima", "lastName": "Al-Sabah"}
    assert request["shopperEmail"] == "fatima@example.com"
    assert request["telephoneNumber"] == "+96550000000"


def checkout_data(shopper, **fields):
    page = shopper.checkout_page()
    form = next(f for f in forms_of(page.text) if "first_name" in f["fields"])
    defaults = {"first_name": "A", "last_name": "B", "email": "a@example.com", "phone": "50000000"}
    return dict(form["fields"], **defaults, **fields)


def test_browser_cannot_set_the_amount(live_server):
    shopper = Shopper(live_server.url)
    shopper.add_to_cart()
    data = checkout_data(shopper, amount="1", value="1", currency="USD", returnUrl="https://evil.example/")
    shopper.http.post(live_server.url + "/checkout", data=data, timeout=20)
    request = api_calls(live_server, "/payments")[0]["request"]
    assert request["amount"] == {"currency": "KWD", "value": 12500}
    assert request["returnUrl"].startswith(live_server.url + "/checkout/return/")


def test_forged_host_header_never_reaches_the_return_url(live_server):
    shopper = Shopper(live_server.url)
    shopper.add_to_cart()
    data = checkout_data(shopper)
    shopper.http.post(live_server.url + "/checkout", data=data, headers={"Host": "evil.example"}, timeout=20)
    assert all("evil.example" not in c["request"]["returnUrl"] for c in api_calls(live_server, "/payments"))


def test_invalid_details_are_shown_next_to_fields_and_nothing_is_charged(live_server):
    shopper = Shopper(live_server.url)
    shopper.add_to_cart()
    response = shopper.place_order(first_name="", last_name="", email="not-an-email", phone="123")
    assert response.status_code == 422
    text = text_of(response.text)
    assert "Enter your first name." in text
    assert "Kuwaiti phone number" in text
    assert 'aria-invalid="true"' in response.text
    assert api_calls(live_server, "/payments") == []


def test_checkout_post_without_csrf_token_is_refused(live_server):
    shopper = Shopper(live_server.url)
    shopper.add_to_cart()
    response = shopper.http.post(live_server.url + "/checkout", data={"first_name": "A"}, timeout=10)
    assert response.status_code == 400
    assert api_calls(live_server, "/payments") == []


def test_double_click_and_second_tab_make_one_payment(live_server):
    shopper = Shopper(live_server.url)
    shopper.add_to_cart()
    data = checkout_data(shopper)
    results = []

    def click():
        results.append(shopper.http.post(live_server.url + "/checkout", data=data, timeout=30))

    clicks = [threading.Thread(target=click) for _ in range(5)]
    for thread in clicks:
        thread.start()
    for thread in clicks:
        thread.join()
    assert len(api_calls(live_server, "/payments")) == 1
    only_order(live_server)
    # A later tab opening checkout again reaches the same KNET page instead of paying twice.
    assert all(r.status_code == 200 for r in results)
    again = shopper.http.post(live_server.url + "/checkout", data=data, timeout=30)
    assert len(api_calls(live_server, "/payments")) == 1
    assert again.status_code == 200


def test_post_return_from_knet_works_without_cookies(live_server_factory):
    server = live_server_factory(ENV={"SIMULATOR_RETURN_METHOD": "POST", "SIMULATOR_WEBHOOK_DELAY": "600"})
    shopper, knet_page = shopper_at_knet(server)
    back = shopper.submit(knet_page, bank="KNET1", action="submit", **GOOD_CARD)
    form = forms_of(back.text)[-1]
    assert form["method"] == "POST" and "redirectResult" in form["fields"]
    # A cross-site POST carries no SameSite=Lax cookie: post it from a cookie-less client.
    stranger = Shopper(server.url)
    response = stranger.http.post(form["action"], data=form["fields"], timeout=20, allow_redirects=False)
    assert response.status_code == 303
    assert "Payment successful" in text_of(shopper.get(response.headers["Location"]).text)


def test_refresh_back_and_replay_never_call_adyen_twice_or_downgrade(live_server_factory):
    server = live_server_factory(ENV={"SIMULATOR_WEBHOOK_DELAY": "600"})
    shopper, knet_page = shopper_at_knet(server)
    result = shopper.pay_on_knet(knet_page, card_number="8888880000000001")
    return_url = return_url_of(result)
    assert "redirectResult=" in return_url
    details_calls = len(api_calls(server, "/payments/details"))
    for _ in range(3):  # refresh of the return, a replay, and the back button to KNET
        assert "Payment successful" in text_of(shopper.get(return_url).text)
    order = only_order(server)
    assert "Payment successful" in text_of(shopper.get(f"/orders/{order.token}/pay").text)
    assert len(api_calls(server, "/payments/details")) == details_calls
    assert only_order(server).result_code == "Authorised"


def test_pending_return_replayed_gives_the_same_answer(live_server_factory):
    server = live_server_factory(ENV={"SIMULATOR_WEBHOOK_DELAY": "600", "SIMULATOR_PENDING_DELAY": "600"})
    shopper, knet_page = shopper_at_knet(server)
    result = shopper.pay_on_knet(knet_page, card_number="8888880000000004")
    return_url = return_url_of(result)
    assert "Order received" in text_of(shopper.get(return_url).text)
    assert only_order(server).result_code == "Pending"
    assert "Check again" in text_of(result.text)  # it waits for the webhook


def test_missing_redirect_result_gets_a_clear_page_and_no_api_call(live_server):
    shopper, _ = shopper_at_knet(live_server)
    order = only_order(live_server)
    before = len(api_calls(live_server))
    for response in (
        shopper.get(f"/checkout/return/{order.token}"),
        shopper.http.post(f"{live_server.url}/checkout/return/{order.token}", data={"other": "x"}, timeout=10),
    ):
        assert response.status_code == 400
        assert "no payment result" in text_of(response.text)
    assert len(api_calls(live_server)) == before


def test_unknown_order_token_is_404(live_server):
    shopper = Shopper(live_server.url)
    assert shopper.get("/checkout/return/nope?redirectResult=x").status_code == 404
    assert shopper.get("/orders/nope").status_code == 404
    missing = "m" * 32  # the shape of a token, but no such order
    assert shopper.get(f"/orders/{missing}").status_code == 404
    assert shopper.get(f"/checkout/return/{missing}?redirectResult=x").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/orders/%00",
        "/orders/%00/pay",
        "/checkout/return/%00?redirectResult=x",
        "/orders/" + "a" * 31 + "%00",
        "/orders/" + "a" * 5000,
        "/orders/%F0%9F%92%B3" + "a" * 30,
        "/console/orders/99999999999",
        "/console/orders/0",
        "/console/orders/-1",
    ],
)
def test_malformed_path_parameters_are_404_and_never_reach_the_database(live_server, path):
    """A NUL byte or an out-of-range id used to reach PostgreSQL, which answered with an error (500)."""
    response = Shopper(live_server.url).get(path)
    assert response.status_code == 404
    assert "Traceback" not in response.text


def test_another_orders_redirect_result_changes_nothing(live_server_factory):
    server = live_server_factory(ENV={"SIMULATOR_WEBHOOK_DELAY": "600"})
    alice, alice_knet = shopper_at_knet(server)
    # Taken before Alice's own return uses it (once used, Adyen answers any other request with 704).
    alice_back = alice.submit(alice_knet, allow_redirects=False, bank="KNET1", action="submit", **GOOD_CARD)
    stolen = alice_back.headers["Location"].split("redirectResult=", 1)[1]
    bob = Shopper(server.url)
    bob.add_to_cart()
    bob.place_order(first_name="Bob", email="bob@example.com")
    with server.app.app_context():
        bob_order = db.session.execute(db.select(Order).filter_by(shopper_email="bob@example.com")).scalar_one()
        token = bob_order.token
    response = bob.get(f"/checkout/return/{token}?redirectResult={stolen}")
    assert response.status_code == 400
    assert "not for this order" in text_of(response.text)
    with server.app.app_context():
        bob_order = db.session.execute(db.select(Order).filter_by(token=token)).scalar_one()
        assert bob_order.result_code is None


def test_every_adyen_call_is_recorded_without_the_api_key(live_server):
    shopper, knet_page = shopper_at_knet(live_server)
    shopper.pay_on_knet(knet_page)
    calls = api_calls(live_server)
    assert [c["endpoint"] for c in calls] == ["/paymentMethods", "/payments", "/payments/details"]
    assert all(c["status"] == 200 and c["response"] for c in calls)
    api_key = live_server.app.config["ADYEN_API_KEY"]
    assert api_key not in repr(calls)


def test_result_page_shows_the_webhook_verdict_once_it_lands(live_server_factory):
    server = live_server_factory(ENV={"SIMULATOR_WEBHOOK_DELAY": "0", "SIMULATOR_PENDING_DELAY": "0.2"})
    shopper, knet_page = shopper_at_knet(server)
    result = shopper.pay_on_knet(knet_page, card_number="8888880000000004")
    path = urlsplit(result.url).path
    page = shopper.wait_for_text(path, "We are preparing your order")
    assert "Check again" not in text_of(page.text)
    assert only_order(server).status == OrderStatus.PAID


def test_post_action_renders_an_auto_submitting_form_with_a_visible_button(live_server_factory):
    server = live_server_factory(ENV={"SIMULATOR_ACTION_METHOD": "POST", "SIMULATOR_WEBHOOK_DELAY": "600"})
    shopper = Shopper(server.url)
    shopper.add_to_cart()
    page = shopper.place_order()
    form = forms_of(page.text)[-1]
    assert form["method"] == "POST"
    assert form["action"] == server.url + "/_sim/knet/kpg/PaymentHTTP.htm"
    assert set(form["fields"]) == {"paymentId", "sig"}  # exactly action.data, nothing of ours
    assert "data-autosubmit" in page.text and "/static/js/autosubmit.js" in page.text
    assert "Continue to KNET" in text_of(page.text)  # what a shopper without JavaScript presses
    knet_page = shopper.submit(page)
    assert "Card Number" in text_of(knet_page.text)
    result = shopper.pay_on_knet(knet_page)
    assert "Payment successful" in text_of(result.text)


# While the result waits, and when it is a failure -------------------------------------------------


def held_webhooks(live_server_factory):
    """A server whose simulator holds every webhook until release(server)."""
    server = live_server_factory(ENV={"SIMULATOR_WEBHOOK_DELAY": "0", "SIMULATOR_PENDING_DELAY": "0"})
    in_context(server, lambda: faults.inject("webhooks", "webhook_burst", count=None))
    return server


def release(server):
    in_context(server, faults.release_burst)


def test_a_waiting_page_asks_a_status_that_tells_it_nothing_else(live_server_factory):
    server = held_webhooks(live_server_factory)
    shopper, knet_page = shopper_at_knet(server)
    result = shopper.pay_on_knet(knet_page, card_number="8888880000000004")
    token = only_order(server).token
    # The page waits without reloading itself (no <meta refresh>): its script asks the status URL;
    # without JavaScript, the shopper presses Check again, a link to the same page.
    assert 'http-equiv="refresh"' not in result.text
    assert f'data-status-url="/orders/{token}/status"' in result.text and "/static/js/live-status.js" in result.text
    assert f'href="/orders/{token}" data-check-now' in result.text and "Check again" in text_of(result.text)

    status = Shopper(server.url).get(f"/orders/{token}/status")  # the token is the key: no session needed
    assert status.status_code == 200 and status.headers["Content-Type"] == "application/json"
    assert status.headers["Cache-Control"] == "no-store"
    assert status.json() == {"state": "pending", "waiting": True}  # no amount, reference or shopper data
    release(server)
    wait_for(lambda: shopper.get(f"/orders/{token}/status").json() == {"state": "paid", "waiting": False})
    assert "We are preparing your order" in text_of(shopper.get(f"/orders/{token}").text)
    assert shopper.get("/orders/no-such-token/status").status_code == 404


def test_try_again_after_received_then_failed_puts_the_orders_items_back(live_server_factory):
    server = held_webhooks(live_server_factory)
    shopper = Shopper(server.url)
    shopper.add_to_cart("medjool-dates", 2)
    shopper.add_to_cart("dallah-mug", 1)
    result = shopper.pay_on_knet(shopper.place_order(), card_number="8888880000000005")
    assert "Order received" in text_of(result.text)
    assert "Your cart is empty" in text_of(shopper.get("/cart").text)  # the order was placed
    release(server)
    page = shopper.wait_for_text(urlsplit(result.url).path, "The payment failed, so we cancelled the order.")
    assert text_of(page.text).count("Try again") == 1
    order = only_order(server)

    # The items come from the order and the catalog; what the form carries besides the CSRF token is ignored.
    index = next(i for i, f in enumerate(forms_of(page.text)) if f["action"].endswith("/try-again"))
    checkout = shopper.submit(page, index, product_id="dallah-mug", quantity="9", price="1")
    assert urlsplit(checkout.url).path == "/checkout"
    text = text_of(checkout.text)
    assert f"Order {order.reference} was not paid, and nothing was charged. Its items are back in your cart" in text
    assert "Pay 28.750 KWD with KNET" in text  # 2 × 12.500 + 3.750
    assert shopper.get("/cart").text.count('class="num line-total"') == 2

    # Paid again from here: a new order, the failed one stays as it was.
    knet_page = shopper.submit(
        checkout, next(i for i, f in enumerate(forms_of(checkout.text)) if "first_name" in f["fields"])
    )
    assert "Payment successful" in text_of(shopper.pay_on_knet(knet_page).text)
    with server.app.app_context():
        statuses = dict(db.session.execute(db.select(Order.reference, Order.status)).all())
    assert len(statuses) == 2 and statuses[order.reference] == OrderStatus.FAILED


def test_try_again_leaves_a_cart_with_something_in_it_and_needs_the_csrf_token(live_server_factory):
    server = live_server_factory(ENV={"SIMULATOR_WEBHOOK_DELAY": "600"})
    shopper, knet_page = shopper_at_knet(server)
    result = shopper.pay_on_knet(knet_page, pin="9999")  # Refused: the cart stays as it was
    token = only_order(server).token
    assert shopper.http.post(f"{server.url}/orders/{token}/try-again", timeout=10).status_code == 400
    checkout = shopper.submit(
        result, next(i for i, f in enumerate(forms_of(result.text)) if "try-again" in f["action"])
    )
    assert urlsplit(checkout.url).path == "/checkout"
    assert "back in your cart" not in text_of(checkout.text) and "Pay 12.500 KWD with KNET" in text_of(checkout.text)


def test_try_again_on_a_paid_order_goes_back_to_it(live_server_factory):
    server = live_server_factory(ENV={"SIMULATOR_WEBHOOK_DELAY": "0"})
    shopper, knet_page = shopper_at_knet(server)
    result = shopper.pay_on_knet(knet_page)
    page = shopper.wait_for_text(urlsplit(result.url).path, "We are preparing your order")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', shopper.get("/").text).group(1)
    token = only_order(server).token
    answer = shopper.http.post(f"{server.url}/orders/{token}/try-again", data={"csrf_token": csrf}, timeout=10)
    assert urlsplit(answer.url).path == f"/orders/{token}" and "Try again" not in text_of(page.text)
    assert "Your cart is empty" in text_of(shopper.get("/cart").text)
