"""Hardening on every page type: CSP, nosniff, Referrer-Policy, framing, HSTS outside the simulator,
no-store on private pages, session cookie flags, debug off, error pages with no stack trace, and no
inline script or style in any template (the CSP would block them)."""

import pathlib
import re

import pytest
import requests
from sqlalchemy import select

from shop.db import db
from shop.models import Order, PaymentAttempt
from tests.conftest import build_app
from tests.fault_helpers import in_context, shopper_with_cart, the_order
from tests.shopper import forms_of, text_of
from tests.webhook_helpers import make_order

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEST_ENV = {
    "ADYEN_ENVIRONMENT": "test",
    "ADYEN_API_KEY": "test-key",
    "ADYEN_MERCHANT_ACCOUNT": "ShopECOM",
    "ADYEN_HMAC_KEY": "00" * 32,
    "WEBHOOK_USERNAME": "hook",
    "WEBHOOK_PASSWORD": "hook-password",
    "SECRET_KEY": "a-secret-key",
}
PUBLIC = "https://shop.example.com"


def directives(response):
    policy = response.headers["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in policy.split("; ")}


def assert_hardened(response, label):
    csp = directives(response)
    assert csp["default-src"] == ["'self'"], label
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"], label
    assert csp["object-src"] == ["'none'"], label
    assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'self'"], label
    assert csp["form-action"][0] == "'self'", label
    assert response.headers["X-Content-Type-Options"] == "nosniff", label
    assert response.headers["X-Frame-Options"] == "DENY", label
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin", label
    return csp


@pytest.fixture
def shop_pages(live_server):
    """Every kind of page of the simulator-mode shop, with an order waiting at KNET."""
    shopper = shopper_with_cart(live_server)
    knet = shopper.place_order()
    order, _ = the_order(live_server)
    get = lambda path, **kw: shopper.get(path, allow_redirects=False, **kw)  # noqa: E731
    pages = {
        "catalog": (get("/"), 200, False),
        "cart": (get("/cart"), 200, False),
        "checkout": (get("/checkout"), 200, True),
        "result": (get(f"/orders/{order.token}"), 200, True),
        "result status": (get(f"/orders/{order.token}/status"), 200, True),
        "pay": (get(f"/orders/{order.token}/pay"), 303, True),
        "return": (get(f"/checkout/return/{order.token}"), 400, True),
        "knet page": (knet, 200, True),
        "fault page": (get("/_sim/faults"), 200, True),
        "stylesheet": (get("/static/style.css"), 200, False),
        "logo": (get("/static/logos/knet.svg"), 200, False),
        "icon": (get("/favicon.ico"), 200, False),
        "not found": (get("/no-such-page"), 404, False),
        "wrong method": (get("/cart/add"), 405, False),
        "webhook": (requests.post(live_server.url + "/webhooks/adyen", data=b"{}", timeout=10), 401, False),
    }
    if any(rule.rule.startswith("/console") for rule in live_server.app.url_map.iter_rules()):
        pages["console"] = (get("/console/"), None, True)
    return pages


def test_every_page_type_has_the_security_headers(live_server, shop_pages):
    for label, (response, status, private) in shop_pages.items():
        if status is not None:
            assert response.status_code == status, (label, response.status_code)
        csp = assert_hardened(response, label)
        # The simulated KNET page and the return are the shop itself: forms may post to it.
        assert csp["form-action"] == ["'self'", live_server.url], label
        assert "Strict-Transport-Security" not in response.headers, label  # plain http on the simulator
        if private:
            assert response.headers["Cache-Control"] == "no-store", label
        else:
            assert "no-store" not in response.headers.get("Cache-Control", ""), label


def test_error_pages_are_friendly(shop_pages):
    not_found, _, _ = shop_pages["not found"]
    assert "Page not found" in text_of(not_found.text)
    wrong_method, _, _ = shop_pages["wrong method"]
    assert "That action isn't available here" in text_of(wrong_method.text)
    assert "POST" in wrong_method.headers["Allow"]
    webhook, _, _ = shop_pages["webhook"]
    assert "<html" not in webhook.text  # Adyen gets plain text, not a page
    icon, _, _ = shop_pages["icon"]  # for the clients that ask for /favicon.ico whatever the page says
    assert icon.headers["Content-Type"].startswith("image/svg+xml") and "<svg" in icon.text


def test_test_mode_allows_adyen_and_knet_pages_and_sends_hsts(tmp_path):
    app = build_app(tmp_path, public_base_url=PUBLIC, ENV=dict(TEST_ENV, KNET_LOGO_SOURCE="adyen"))
    response = app.test_client().get("/", base_url=PUBLIC)
    csp = assert_hardened(response, "catalog")
    for source in (
        "https://*.adyen.com",
        "https://*.adyenpayments.com",
        "https://*.knet.com.kw",
        "https://kpay.com.kw",
        "https://kpaytest.com.kw",
    ):
        assert source in csp["form-action"]
    assert "https://checkoutshopper-test.adyen.com" in csp["img-src"]  # the hosted KNET logo
    hsts = response.headers["Strict-Transport-Security"]
    assert int(re.search(r"max-age=(\d+)", hsts).group(1)) >= 31536000 and "includeSubDomains" in hsts


def test_post_action_page_may_post_to_that_page_only(tmp_path):
    app = build_app(tmp_path, public_base_url=PUBLIC, ENV=TEST_ENV)
    action_url = "https://checkoutshopper-test.adyen.com/checkoutshopper/checkoutPaymentRedirect"
    reference = make_order(app, status="pending")
    with app.app_context():
        order = db.session.execute(select(Order).filter_by(reference=reference)).scalar_one()
        db.session.add(
            PaymentAttempt(
                order_id=order.id,
                status="redirected",
                action_method="POST",
                action_url=action_url,
                action_data={"redirectData": "abc"},
            )
        )
        db.session.commit()
        token = order.token
    response = app.test_client().get(f"/orders/{token}/pay", base_url=PUBLIC)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    form = forms_of(response.get_data(as_text=True))[-1]
    assert form["action"] == action_url and form["fields"] == {"redirectData": "abc"}
    assert "https://checkoutshopper-test.adyen.com" in directives(response)["form-action"]
    assert 'src="/static/js/autosubmit.js"' in response.get_data(as_text=True)


def test_session_cookie_is_httponly_lax_and_secure_outside_the_simulator(live_server, tmp_path):
    shopper = shopper_with_cart(live_server)
    cookie = next(c for c in shopper.http.cookies if c.name == "session")
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite") == "Lax"
    assert not cookie.secure  # the simulator runs on plain http

    app = build_app(tmp_path, public_base_url=PUBLIC, ENV=TEST_ENV)
    client = app.test_client()
    page = client.get("/", base_url=PUBLIC)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.get_data(as_text=True)).group(1)
    response = client.post(
        "/cart/add",
        data={"csrf_token": token, "product_id": "medjool-dates", "quantity": "1"},
        base_url=PUBLIC,
        headers={"Referer": PUBLIC + "/"},
    )
    set_cookie = response.headers["Set-Cookie"]
    assert "Secure" in set_cookie and "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie


def test_debug_is_off_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("FLASK_DEBUG", raising=False)
    app = build_app(tmp_path)
    assert app.debug is False and app.config["DEBUG"] is False


def test_an_unexpected_error_shows_a_generic_page_without_a_stack_trace(tmp_path):
    app = build_app(tmp_path, PROPAGATE_EXCEPTIONS=False)

    def boom():
        raise RuntimeError("internal detail: ADYEN_API_KEY=sentinel-value")

    app.add_url_rule("/boom", "boom", boom)
    response = app.test_client().get("/boom")
    body = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "Something went wrong on our side" in text_of(body)
    for leak in ("Traceback", "RuntimeError", "internal detail", "sentinel-value", 'File "'):
        assert leak not in body
    assert_hardened(response, "500")


def test_templates_have_no_inline_script_style_or_event_handlers():
    offenders = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        text = path.read_text(encoding="utf-8")
        for pattern, what in (
            (r"<script(?![^>]*\bsrc=)[^>]*>", "inline <script>"),
            (r"<style\b", "<style> element"),
            (r"\sstyle\s*=", "style attribute"),
            (r"\son[a-z]+\s*=", "event handler attribute"),
            (r"javascript:", "javascript: URL"),
        ):
            for match in re.finditer(pattern, text, flags=re.IGNORECASE):
                offenders.append(f"{path.relative_to(ROOT)}: {what}: {match.group(0)[:60]}")
    assert offenders == []


def test_static_scripts_are_files_the_csp_allows(live_server):
    for path in ("/static/js/autosubmit.js", "/static/js/live-status.js"):
        response = requests.get(live_server.url + path, timeout=10)
        assert response.status_code == 200 and "javascript" in response.headers["Content-Type"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_order_pages_are_no_store_for_every_outcome(live_server):
    reference = make_order(live_server.app, status="paid")
    token = in_context(
        live_server, lambda: db.session.execute(select(Order.token).filter_by(reference=reference)).scalar()
    )
    response = requests.get(f"{live_server.url}/orders/{token}", timeout=10)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
