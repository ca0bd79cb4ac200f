"""The developer console (/console): timelines, inbox, outbox, doctor, demo scenarios, access, secrets.

The end-to-end tests run the shop and its simulator in a real threaded server and talk to them over
HTTP, as a browser would; they poll with deadlines, never fixed sleeps.
"""

import base64
import json
import re

import pytest
import requests
from sqlalchemy import select

from shop.console import redact
from shop.db import db
from shop.models import ApiCall, Email, Notification, Order, OrderEvent, WebhookRejection
from shop.simulator.models import SimPayment, SimWebhookDelivery
from shop.webhooks import rejections
from tests.conftest import build_app
from tests.console_helpers import (
    CONSOLE_PAGES,
    FAST,
    HELD,
    buy,
    count,
    order_id_from,
    post_form,
    release_webhooks,
    run_scenario,
    settled,
    steps_of,
    wait_for_status,
)
from tests.shopper import Shopper, forms_of, text_of
from tests.webhook_helpers import envelope, in_app, item, make_order, post, wait_for

FULL_TEST_ENV = {
    "ADYEN_ENVIRONMENT": "test",
    "ADYEN_API_KEY": "AQE-test-key-for-the-console-tests",
    "ADYEN_MERCHANT_ACCOUNT": "ConsoleTestECOM",
    "ADYEN_HMAC_KEY": "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056",
    "WEBHOOK_USERNAME": "console-test-user",
    "WEBHOOK_PASSWORD": "console-test-webhook-password",
    "SECRET_KEY": "console-test-secret-key-0123456789",
    "TRUSTED_HOSTS": "localhost",  # Flask's test client calls itself localhost
}


def app_in(tmp_path, env, **overrides):
    """An app in test or live mode (its Adyen calls need not succeed), for Flask's test client."""
    return build_app(tmp_path, public_base_url="https://shop.example.com", ENV=env, **overrides)


# --- The timeline of a finished order ---------------------------------------------------------


def in_order(steps, expected):
    """Each (kind, words) of `expected` matches a later step than the one before it."""
    position = 0
    for kind, words in expected:
        for index in range(position, len(steps)):
            if steps[index][0] == kind and words in steps[index][1]:
                position = index + 1
                break
        else:
            listing = "\n".join(f"  {k}: {t}" for k, t in steps)
            raise AssertionError(f"no {kind} step with {words!r} after step {position}; the timeline:\n{listing}")


def test_timeline_of_a_finished_order_shows_every_step_in_order(live_server_factory):
    server = live_server_factory(ENV=HELD)
    order_id = buy(server)
    page = requests.get(f"{server.url}/console/orders/{order_id}", timeout=20)
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    steps = steps_of(page.text)
    in_order(
        steps,
        [
            ("api", "POST /paymentMethods → HTTP 200, KNET offered"),
            ("order_created", "created from the cart"),
            ("payment_started", "created → pending"),
            ("api", "POST /payments → HTTP 200, RedirectShopper"),
            ("payment_answered", "RedirectShopper"),
            ("redirect", "Shopper sent to KNET by GET"),
            ("return", "Shopper back from KNET by GET"),
            ("api", "POST /payments/details → HTTP 200, Authorised"),
            ("result_shown", "'Authorised'"),
            ("webhook", "AUTHORISATION success=true"),
            ("transition", "pending → paid: AUTHORISATION success=true"),
            ("email", "Your payment was successful"),
        ],
    )
    received = next(title for kind, title in steps if kind == "webhook" and "received" in title)
    assert "verified" in received and "first delivery" in received
    # Each thing is said once: the rule of the state change appears under that step only, and no
    # two steps of different kinds share an explanation.
    assert text_of(page.text).count("proceed with the order") == 1
    whys = {}
    for kind, why in re.findall(r'data-kind="([^"]+)">.*?<p class="why">(.*?)<a', page.text, re.S):
        assert whys.setdefault(why.strip(), kind) == kind, (why, kind)

    text = text_of(page.text)
    # Each step says why, and links to Adyen's docs.
    assert text.count("docs.adyen.com") == 0  # links, not text
    step_html = page.text.split('<ol class="timeline">', 1)[1]
    for chunk in step_html.split('<li class="step')[1:]:
        assert 'class="why"' in chunk and 'href="https://docs.adyen.com/' in chunk, chunk[:300]
    for url in (
        "https://docs.adyen.com/api-explorer/Checkout/71/post/paymentMethods",
        "https://docs.adyen.com/api-explorer/Checkout/71/post/payments",
        "https://docs.adyen.com/api-explorer/Checkout/71/post/payments/details",
        "https://docs.adyen.com/online-payments/api-only/handling-redirects",
        "https://docs.adyen.com/development-resources/webhooks",
        "https://docs.adyen.com/development-resources/webhooks/secure-webhooks/verify-hmac-signatures",
        "https://docs.adyen.com/payment-methods/knet/api-only",
    ):
        assert f'href="{url}"' in page.text, url
    # Request and response JSON, pretty-printed; HTTP status and durations.
    assert '"countryCode": "KW"' in text
    assert '"resultCode": "RedirectShopper"' in text
    assert "HTTP status 200" in text
    assert re.search(r"Duration \d+ ms", text)
    # Timestamps in order.
    times = re.findall(r'<time datetime="([^"]+)">', page.text)
    assert len(times) == len(steps) and times == sorted(times)
    # The redirectResult appears only shortened.
    with server.app.app_context():
        redirect_result = db.session.execute(select(SimPayment.redirect_result)).scalar()
    assert redirect_result and redirect_result[:12] in text
    assert redirect_result not in page.text
    assert redirect_result.replace("+", "&#43;") not in page.text


def test_timeline_shows_post_redirect_and_post_return_with_their_parameters(live_server_factory):
    server = live_server_factory(ENV=dict(HELD, SIMULATOR_ACTION_METHOD="POST", SIMULATOR_RETURN_METHOD="POST"))
    order_id = buy(server)
    page = requests.get(f"{server.url}/console/orders/{order_id}", timeout=20)
    steps = steps_of(page.text)
    in_order(steps, [("redirect", "Shopper sent to KNET by POST"), ("return", "Shopper back from KNET by POST")])
    text = text_of(page.text)
    assert re.search(r'Parameters \{ "paymentId": "[^"]+", "sig": "\*\*\*" \}', text), text
    assert re.search(r"redirectResult X6XtfGC3!\S{3}… ", text)


def test_a_timeline_that_is_not_final_asks_for_news_instead_of_reloading(app):
    client = app.test_client()
    with app.app_context():
        waiting, final = (
            db.session.execute(select(Order.id).filter_by(reference=make_order(app, status=status))).scalar()
            for status in ("pending", "paid")
        )
    page = client.get(f"/console/orders/{waiting}").get_data(as_text=True)
    assert 'http-equiv="refresh"' not in page and "/static/js/live-status.js" in page
    assert f'data-status-url="/console/orders/{waiting}/status"' in page and "Check again" in text_of(page)
    first = client.get(f"/console/orders/{waiting}/status")
    assert first.headers["Cache-Control"] == "no-store" and first.json["waiting"] is True
    with app.app_context():
        db.session.add(OrderEvent(order_id=waiting, kind="webhook", summary="AUTHORISATION success=true received"))
        db.session.commit()
    assert client.get(f"/console/orders/{waiting}/status").json["state"] != first.json["state"]  # a new step
    done = client.get(f"/console/orders/{final}").get_data(as_text=True)
    assert "data-status-url" not in done and "Check again" not in text_of(done)
    assert client.get(f"/console/orders/{final}/status").json["waiting"] is False
    assert client.get("/console/orders/999999/status").status_code == 404


def test_orders_page_lists_orders_with_state_and_flags(live_server):
    reference = make_order(live_server.app, status="paid", needs_refund_decision=True)
    page = requests.get(live_server.url + "/console/orders", timeout=10)
    text = text_of(page.text)
    assert reference in text and "paid" in text and "needs refund decision" in text
    assert "Fatima Al-Sabah" in text  # simulator mode: made-up data is shown as it is
    found = requests.get(live_server.url + "/console/orders", params={"q": reference[-6:]}, timeout=10)
    assert reference in found.text
    none = requests.get(live_server.url + "/console/orders", params={"q": "NO-SUCH-ORDER"}, timeout=10)
    assert reference not in none.text


def test_every_list_is_paged_newest_first_keeping_the_search(tmp_path):
    app = build_app(tmp_path, CONSOLE_PAGE_SIZE=2)
    references = [make_order(app, reference=f"PAGED-{n}") for n in range(5)]
    with app.app_context():
        db.session.add_all(Email(to="fatima@example.com", subject=f"Email {n}", body="…") for n in range(3))
        db.session.commit()
        for _ in range(3):
            rejections.record("bad signature", 401, "127.0.0.1", 10)
    client = app.test_client()
    first = client.get("/console/orders").get_data(as_text=True)
    assert references[4] in first and references[3] in first and references[2] not in first
    assert "Page 1 of 3" in text_of(first) and "(5 orders)" in text_of(first)
    assert 'href="/console/orders?page=2" rel="next"' in first
    last = client.get("/console/orders?page=3").get_data(as_text=True)
    assert references[0] in last and references[1] not in last and 'rel="prev"' in last and 'rel="next"' not in last
    assert references[0] in client.get("/console/orders?page=99").get_data(as_text=True)  # the nearest page
    found = client.get("/console/orders?q=PAGED&page=2").get_data(as_text=True)
    assert references[2] in found and 'href="/console/orders?q=PAGED&amp;page=3"' in found
    emails = text_of(client.get("/console/emails?page=2").get_data(as_text=True))
    assert "Email 0" in emails and "Email 2" not in emails and "(3 emails)" in emails
    # The inbox's two lists have a page each.
    inbox = client.get("/console/webhooks?rejected=2").get_data(as_text=True)
    assert "(3 refused requests)" in text_of(inbox) and 'href="/console/webhooks?rejected=1" rel="prev"' in inbox


def test_console_tables_label_every_column_and_let_shopper_text_set_its_direction(live_server_factory):
    server = live_server_factory(ENV=HELD)
    shopper = Shopper(server.url)
    shopper.get("/language/ar?next=/")
    shopper.add_to_cart("medjool-dates", 1)
    shopper.pay_on_knet(shopper.place_order())
    release_webhooks(server)
    wait_for(lambda: count(server.app, Email) == 1, message="the Arabic email")
    for path in ("/console/webhooks", "/console/deliveries", "/console/emails", "/console/orders"):
        page = requests.get(server.url + path, timeout=10).text
        assert not re.search(r"<th[^>]*>\s*</th>", page), path  # each header says what its column is
    emails = requests.get(server.url + "/console/emails", timeout=10).text
    # An Arabic subject ends with the reference: in a right-to-left cell its colon and reference read right.
    assert re.search(r'<td dir="auto">[^<]*تمت عملية الدفع[^<]*KNET-', emails)
    assert '<pre dir="auto">مرحبًا Fatima،' in emails


# --- Demo scenarios ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, result_code, final",
    [
        ("authorised", "Authorised", "paid"),
        ("refused", "Refused", "failed"),
        ("cancelled", "Cancelled", "failed"),
        ("error", "Error", "failed"),
        ("pending", "Pending", "paid"),
        ("abandoned", None, "expired"),
    ],
)
def test_demo_scenario_lands_on_its_timeline_and_ends_in_its_state(live_server_factory, name, result_code, final):
    server = live_server_factory(ENV=FAST)
    landed = run_scenario(server, name)
    assert landed.status_code == 200, text_of(landed.text)[:500]
    order_id = order_id_from(landed.url)
    assert 'class="timeline"' in landed.text
    page = wait_for_status(server, order_id, final)
    steps = steps_of(page.text)
    with server.app.app_context():
        order = db.session.get(Order, order_id)
        assert order.result_code == result_code
        assert order.shopper_first_name == "Demo"
    expected = [
        ("api", "POST /paymentMethods"),
        ("note", "Demo scenario"),
        ("api", "POST /payments → HTTP 200, RedirectShopper"),
        ("redirect", "Shopper sent to KNET"),
    ]
    if result_code:
        expected += [("return", "Shopper back from KNET"), ("api", f"POST /payments/details → HTTP 200, {result_code}")]
    in_order(steps, expected)
    # The webhook races the shopper's return (no delay here), so it is checked from the redirect on.
    event = "OFFER_CLOSED" if name == "abandoned" else "AUTHORISATION"
    in_order(steps, expected[:4] + [("webhook", event), ("transition", f"→ {final}"), ("email", "")])


def test_the_simulators_console_pages_exist_only_where_it_is_mounted(tmp_path):
    """Its outbox and demo scenarios are the simulator plug-in's pages: in test mode they are not
    there, nor in the console's menu."""
    app = app_in(tmp_path, dict(FULL_TEST_ENV, CONSOLE_PASSWORD="open sesame"), WTF_CSRF_ENABLED=False)
    client = app.test_client()
    client.post("/console/login", data={"password": "open sesame"})
    menu = client.get("/console/orders").get_data(as_text=True)
    assert ">Orders</a>" in menu and ">Deliveries</a>" not in menu and ">Demo</a>" not in menu
    assert client.get("/console/demo").status_code == 404
    assert client.get("/console/deliveries").status_code == 404
    assert client.post("/console/demo/authorised").status_code == 404
    assert client.post("/console/deliveries/1/duplicate").status_code == 404


# --- The simulator's outbox and the webhook inbox ---------------------------------------------------


def test_send_a_duplicate_and_resend_are_acknowledged_with_no_second_effect(live_server_factory):
    server = live_server_factory(ENV=FAST)
    order_id = order_id_from(run_scenario(server, "authorised").url)
    wait_for_status(server, order_id, "paid")
    wait_for(lambda: settled(server.app) and count(server.app, Email) == 1, message="paid and settled")

    http = requests.Session()
    outbox = http.get(server.url + "/console/deliveries", timeout=10)
    with server.app.app_context():
        delivery_id = db.session.execute(select(SimWebhookDelivery.id)).scalar()
    duplicated = post_form(http, outbox, f"/console/deliveries/{delivery_id}/duplicate")
    assert duplicated.status_code == 200 and "a duplicate of" in text_of(duplicated.text)

    def duplicates():
        return in_app(server.app, lambda: db.session.execute(select(Notification.duplicates)).scalar())()

    wait_for(lambda: duplicates() == 1, message="the duplicate counted")
    # The sender records its attempt after the shop has answered: wait for that record too.
    copy = in_app(
        server.app,
        lambda: db.session.execute(
            select(SimWebhookDelivery.last_status_code, SimWebhookDelivery.last_response_body).where(
                SimWebhookDelivery.duplicate_of == delivery_id
            )
        ).one(),
    )
    wait_for(lambda: copy() == (200, "[accepted]"), message="the duplicate delivery acknowledged")

    resent = post_form(
        http, http.get(server.url + "/console/deliveries", timeout=10), f"/console/deliveries/{delivery_id}/resend"
    )
    assert "will be sent again" in text_of(resent.text)
    wait_for(lambda: duplicates() == 2, message="the resend counted")
    attempts = in_app(server.app, lambda: db.session.get(SimWebhookDelivery, delivery_id).attempts)
    wait_for(lambda: attempts() == 2, message="the resend recorded as a second attempt")

    # No second effect: one notification, one transition to paid, one email.
    assert count(server.app, Notification) == 1
    assert count(server.app, Email) == 1
    assert count(server.app, OrderEvent, OrderEvent.kind == "transition", OrderEvent.new_status == "paid") == 1
    steps = steps_of(requests.get(f"{server.url}/console/orders/{order_id}", timeout=10).text)
    again = [title for kind, title in steps if kind == "webhook_duplicate"]
    assert len(again) == 2 and all("delivered again" in title for title in again)


def test_replay_from_the_inbox_is_a_no_op_for_an_applied_webhook(live_server_factory):
    server = live_server_factory(ENV=FAST)
    order_id = order_id_from(run_scenario(server, "authorised").url)
    wait_for_status(server, order_id, "paid")
    wait_for(lambda: settled(server.app), message="settled")
    with server.app.app_context():
        notification_id = db.session.execute(select(Notification.id)).scalar()

    http = requests.Session()
    inbox = http.get(server.url + "/console/webhooks", timeout=10)
    assert "Raw body (signature masked)" in inbox.text
    replayed = post_form(http, inbox, f"/console/webhooks/{notification_id}/replay")
    assert "queued to be applied again" in text_of(replayed.text)

    def note():
        return in_app(server.app, lambda: db.session.execute(select(Notification.status, Notification.note)).one())()

    wait_for(lambda: note()[0] == "processed" and "already paid" in (note()[1] or ""), message="the replay applied")
    with server.app.app_context():
        row = db.session.get(Notification, notification_id)
        note_of_replay = f"{row.event_code} success=true (pspReference {row.psp_reference})"
    assert count(server.app, Email) == 1
    steps = steps_of(requests.get(f"{server.url}/console/orders/{order_id}", timeout=10).text)
    assert any(kind == "webhook_replayed" and "replayed" in title for kind, title in steps)
    assert [title for kind, title in steps if kind == "webhook_processed"] == [
        f"Webhook applied, no change: {note_of_replay}"
    ]


def test_rejected_webhooks_are_listed_without_their_body(live_server):
    app = live_server.app
    reference = make_order(app)
    signed = envelope(item(app, reference))
    assert post(live_server, signed, auth_pair=("adyen-webhook", "wrong")).status_code == 401
    bad = envelope(item(app, reference, key="00" * 32))
    assert post(live_server, bad).status_code == 401
    assert count(app, Notification) == 0  # nothing stored for a rejected webhook
    with app.app_context():
        rows = db.session.execute(select(WebhookRejection).order_by(WebhookRejection.id)).scalars().all()
        assert [(r.reason, r.status_code) for r in rows] == [("bad basic auth", 401), ("bad signature", 401)]
        assert rows[1].body_size == len(bad.encode()) and rows[1].remote_addr == "127.0.0.1"
    page = text_of(requests.get(live_server.url + "/console/webhooks", timeout=10).text)
    assert "bad basic auth" in page and "bad signature" in page
    signature = json.loads(bad)["notificationItems"][0]["NotificationRequestItem"]["additionalData"]["hmacSignature"]
    assert signature not in page


def test_rejection_log_keeps_the_newest_200(app):
    with app.app_context():
        for _ in range(rejections.KEEP + 5):
            rejections.record("bad signature", 401, "127.0.0.1", 10)
        ids = db.session.execute(select(WebhookRejection.id).order_by(WebhookRejection.id)).scalars().all()
    assert len(ids) == rejections.KEEP and ids[0] == 6


# --- Secrets: none on any page ---------------------------------------------------------------------

SENTINELS = {
    "ADYEN_API_KEY": "SENTINEL-API-KEY-7f3c1a",
    "ADYEN_HMAC_KEY": "5E7715E1" * 8,
    "WEBHOOK_PASSWORD": "SENTINEL-WEBHOOK-PASSWORD-2b9d",
    "SECRET_KEY": "SENTINEL-SECRET-KEY-c40e",
    "CONSOLE_PASSWORD": "SENTINEL-CONSOLE-PASSWORD-91aa",
}


def forbidden_values(app):
    """The sentinels, their encodings, and every HMAC signature the shop received."""
    values = set(SENTINELS.values())
    values.add(SENTINELS["ADYEN_HMAC_KEY"].lower())
    values.add(base64.b64encode(f"adyen-webhook:{SENTINELS['WEBHOOK_PASSWORD']}".encode()).decode())
    with app.app_context():
        for body in db.session.execute(select(Notification.raw_body)).scalars():
            for wrapper in json.loads(body)["notificationItems"]:
                values.add(wrapper["NotificationRequestItem"]["additionalData"]["hmacSignature"])
    return values


def test_no_secret_appears_on_any_console_page(live_server_factory):
    server = live_server_factory(ENV=dict(HELD, **SENTINELS))
    order_id = buy(server)
    # A duplicate delivery and a rejected webhook, so those pages have rows too.
    http = requests.Session()
    outbox = http.get(server.url + "/console/deliveries", timeout=10)
    post_form(http, outbox, "/duplicate")
    wait_for(lambda: in_app(server.app, lambda: db.session.execute(select(Notification.duplicates)).scalar())() == 1)
    post(server, envelope(item(server.app, "NO-ORDER", key="00" * 32)))
    forbidden = forbidden_values(server.app)
    assert len(forbidden) > len(SENTINELS) + 1  # signatures were collected

    pages = list(CONSOLE_PAGES) + [f"/console/orders/{order_id}", "/console/login", "/console/"]
    for path in pages:
        response = http.get(server.url + path, timeout=30)
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == "no-store", path
        body = response.text
        for value in forbidden:
            assert value not in body, f"{path} shows a secret"
            assert json.dumps(value)[1:-1] not in body
    # The raw body is shown, with its signature masked.
    inbox = http.get(server.url + "/console/webhooks", timeout=10).text
    assert "hmacSignature" in inbox and "&#34;***&#34;" in inbox
    # Nothing needed the last-resort scrubber: each value was redacted where it is shown.
    assert server.app.extensions.get("console_scrubbed", 0) == 0


def test_the_last_resort_scrubber_masks_a_secret_that_slipped_through(live_server_factory):
    server = live_server_factory(ENV=dict(FAST, **SENTINELS))
    reference = make_order(server.app, reference="REF-" + SENTINELS["ADYEN_API_KEY"][-6:])
    with server.app.app_context():
        order = db.session.execute(select(Order).where(Order.reference == reference)).scalar_one()
        order.refusal_reason = "leaked " + SENTINELS["ADYEN_API_KEY"]  # as if a bug stored it
        db.session.commit()
        order_id = order.id
    page = requests.get(f"{server.url}/console/orders/{order_id}", timeout=10).text
    assert SENTINELS["ADYEN_API_KEY"] not in page and "leaked ***" in page
    assert server.app.extensions["console_scrubbed"] == 1


# --- redact() ------------------------------------------------------------------------------------------


def test_redact_masks_credentials_at_any_depth(app):
    with app.app_context():
        shown = redact.redact(
            {
                "apiKey": "k",
                "X-API-Key": "k",
                "additionalData": {"hmacSignature": "sig=", "paymentMethodVariant": "knet"},
                "headers": {"Authorization": "Basic abc"},
                "password": "p",
                "pin": "1234",
                "cardNumber": "8888880000000001",
                "nested": [{"encryptedCardNumber": "x"}],
                "details": {"redirectResult": "X6XtfGC3!" + "A" * 60},
                "reference": "KNET-1",
            },
            personal=True,
        )
    assert shown["apiKey"] == shown["X-API-Key"] == shown["password"] == shown["pin"] == "***"
    assert shown["additionalData"] == {"hmacSignature": "***", "paymentMethodVariant": "knet"}
    assert shown["headers"]["Authorization"] == "***"
    assert shown["cardNumber"] == "***" and shown["nested"][0]["encryptedCardNumber"] == "***"
    assert shown["details"]["redirectResult"] == "X6XtfGC3!AAA… (69 characters)"
    assert shown["reference"] == "KNET-1"


def test_redact_masks_shopper_data_outside_simulator_mode(tmp_path):
    app = app_in(tmp_path, dict(FULL_TEST_ENV, CONSOLE_PASSWORD="pw-123456"))
    body = {
        "shopperName": {"firstName": "Fatima", "lastName": "Al-Sabah"},
        "shopperEmail": "fatima@example.com",
        "telephoneNumber": "+96550000000",
        "amount": {"currency": "KWD", "value": 12500},
    }
    with app.app_context():
        shown = redact.redact(body)
        note = redact.text("Dear Fatima, we wrote to fatima@example.com", known=["Fatima", "fatima@example.com"])
    assert shown["shopperName"] == {"firstName": "F***", "lastName": "A***"}
    assert shown["shopperEmail"] == "f***@example.com"
    assert shown["telephoneNumber"] == "+965****0000"
    assert shown["amount"] == {"currency": "KWD", "value": 12500}
    assert note == "Dear F***, we wrote to f***@example.com"


# --- Access: test mode asks for a login, live mode is off unless enabled ------------------------------------


def csrf_of(page):
    return next(f["fields"]["csrf_token"] for f in forms_of(page.get_data(as_text=True)) if "csrf_token" in f["fields"])


def test_console_asks_for_a_login_in_test_mode(tmp_path):
    app = app_in(tmp_path, dict(FULL_TEST_ENV, CONSOLE_PASSWORD="correct horse battery"))
    client = app.test_client()
    for path in ("/console/orders", "/console/webhooks", "/console/doctor", "/console/orders/1", "/console/emails"):
        response = client.get(path)
        assert response.status_code == 303, path
        assert response.headers["Location"].startswith("/console/login?next=")
        assert response.headers["Cache-Control"] == "no-store"
    assert client.post("/console/webhooks/1/replay").status_code in (303, 400)  # never runs without a login
    login = client.get("/console/login?next=/console/webhooks")
    assert login.status_code == 200 and "Console password" in login.get_data(as_text=True)
    token = csrf_of(login)

    no_csrf = client.post("/console/login", data={"password": "correct horse battery"})
    assert no_csrf.status_code == 400
    wrong = client.post("/console/login", data={"csrf_token": token, "password": "wrong", "next": "/console/webhooks"})
    assert wrong.status_code == 401 and "not the console password" in wrong.get_data(as_text=True)
    assert client.get("/console/orders").status_code == 303

    right = client.post(
        "/console/login", data={"csrf_token": token, "password": "correct horse battery", "next": "/console/webhooks"}
    )
    assert right.status_code == 303 and right.headers["Location"] == "/console/webhooks"
    for path in ("/console/orders", "/console/webhooks", "/console/doctor", "/console/emails", "/console/test-cards"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert "correct horse battery" not in response.get_data(as_text=True)
    # An open redirect is refused.
    client.post("/console/logout", data={"csrf_token": csrf_of(client.get("/console/orders"))})
    assert client.get("/console/orders").status_code == 303
    token = csrf_of(client.get("/console/login"))
    elsewhere = client.post(
        "/console/login", data={"csrf_token": token, "password": "correct horse battery", "next": "//evil.example"}
    )
    assert elsewhere.headers["Location"] == "/console/orders"


def test_test_mode_without_a_password_stays_locked_and_says_how_to_enable(tmp_path):
    client = app_in(tmp_path, FULL_TEST_ENV).test_client()
    for path in ("/console/orders", "/console/login"):
        response = client.get(path)
        assert response.status_code == 403
        assert "CONSOLE_PASSWORD" in text_of(response.get_data(as_text=True))


LIVE_ENV = dict(FULL_TEST_ENV, ADYEN_ENVIRONMENT="live", ADYEN_LIVE_URL_PREFIX="1797a841fbb37ca7-AdyenDemo")


def test_live_mode_console_is_404_unless_enabled(tmp_path):
    off = app_in(tmp_path / "off", dict(LIVE_ENV, CONSOLE_PASSWORD="pw-live-1234")).test_client()
    for path in ("/console/", "/console/orders", "/console/login", "/console/doctor"):
        assert off.get(path).status_code == 404, path
    on = app_in(tmp_path / "on", dict(LIVE_ENV, CONSOLE_PASSWORD="pw-live-1234", CONSOLE_ENABLED="true"))
    client = on.test_client()
    assert client.get("/console/orders").status_code == 303
    token = csrf_of(client.get("/console/login"))
    assert client.post("/console/login", data={"csrf_token": token, "password": "pw-live-1234"}).status_code == 303
    page = client.get("/console/doctor")
    assert page.status_code == 200
    text = text_of(page.get_data(as_text=True))
    assert "Go-live checklist" in text and "KNET requested in the live Customer Area" in text
    assert "pw-live-1234" not in text and LIVE_ENV["ADYEN_API_KEY"] not in text


def test_timeline_masks_shopper_data_in_test_mode(tmp_path):
    app = app_in(tmp_path, dict(FULL_TEST_ENV, CONSOLE_PASSWORD="pw-123456"), WTF_CSRF_ENABLED=False)
    reference = make_order(app)
    with app.app_context():
        order = db.session.execute(select(Order).where(Order.reference == reference)).scalar_one()
        db.session.add(
            ApiCall(
                order_id=order.id,
                endpoint="/payments",
                url="https://checkout-test.adyen.com/v71/payments",
                request_json={
                    "reference": reference,
                    "shopperName": {"firstName": "Fatima", "lastName": "Al-Sabah"},
                    "shopperEmail": "fatima@example.com",
                    "telephoneNumber": "+96550000000",
                },
                status_code=200,
                response_json={"resultCode": "RedirectShopper"},
                duration_ms=120,
            )
        )
        db.session.add(Email(order_id=order.id, to="fatima@example.com", subject="Paid", body="Dear Fatima,\nthanks."))
        db.session.commit()
        order_id = order.id
    client = app.test_client()
    client.post("/console/login", data={"password": "pw-123456"})
    for path in (f"/console/orders/{order_id}", "/console/orders", "/console/emails"):
        page = client.get(path).get_data(as_text=True)
        for personal in ("Fatima", "Al-Sabah", "fatima@example.com", "+96550000000"):
            assert personal not in page, (path, personal)
    page = text_of(client.get(f"/console/orders/{order_id}").get_data(as_text=True))
    assert '"shopperEmail": "f***@example.com"' in page and "+965****0000" in page


def test_doctor_in_simulator_mode_marks_no_setting_as_missing(live_server):
    page = requests.get(live_server.url + "/console/doctor", timeout=20).text
    assert "The simulator needs none of these" in text_of(page)
    assert 'class="setting setting-not-set"' not in page  # no red pill: nothing is missing in this mode
    assert re.search(r"<code>ADYEN_HMAC_KEY_PREVIOUS</code>.*?class=\"setting setting-optional\">not set<", page, re.S)


def test_doctor_in_test_mode_shows_what_live_mode_will_need_as_a_note(tmp_path):
    app = app_in(tmp_path, dict(FULL_TEST_ENV, CONSOLE_PASSWORD="pw-123456"), WTF_CSRF_ENABLED=False)
    client = app.test_client()
    client.post("/console/login", data={"password": "pw-123456"})
    page = client.get("/console/doctor").get_data(as_text=True)
    assert "The simulator needs none of these" not in text_of(page)
    assert re.search(r"<code>ADYEN_LIVE_URL_PREFIX</code>.*?class=\"setting setting-optional\">not set<", page, re.S)
    assert re.search(r"<code>ADYEN_API_KEY</code>.*?class=\"setting setting-set\">set<", page, re.S)


def test_doctor_shows_which_settings_are_set_never_their_values(live_server_factory):
    server = live_server_factory(ENV=dict(FAST, **SENTINELS))
    page = requests.get(server.url + "/console/doctor?check=1", timeout=20)
    text = text_of(page.text)
    assert "ADYEN_API_KEY set" in text and "ADYEN_HMAC_KEY_PREVIOUS not set" in text
    assert "Adyen endpoint answers" in text and "KNET is offered" in text
    assert "Go-live checklist" in text and "Live URL prefix" in text
    assert "Webhook registered in the live Customer Area" in text
    for value in SENTINELS.values():
        assert value not in page.text
