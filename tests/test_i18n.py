"""The shopper pages in English and Arabic: right to left in Arabic, a language switch on every
page, a translated message for every resultCode and webhook outcome, shopperLocale ar-KW for
Adyen, emails in the order's language, and a catalog with every string translated.

Over real HTTP (live_server) with the simulator, as test_checkout_flow does in English."""

import os
import re
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from shop import ROOT, i18n
from shop.models import OrderStatus
from shop.orders.state import WebhookEvent
from tests.shopper import Shopper, text_of
from tests.test_checkout_flow import api_calls, only_order
from tests.webhook_helpers import apply_event, emails, get_order, kept_emails, make_order, wait_for

PO_FILE = os.path.join(ROOT, "shop", "translations", "ar", "LC_MESSAGES", "messages.po")
# The extraction keywords of `make translations` (Makefile), beyond pybabel's defaults.
EXTRA_KEYWORDS = {"_l": None, "lazy_gettext": None}

NO_WEBHOOKS_YET = {"SIMULATOR_WEBHOOK_DELAY": "600", "SIMULATOR_PENDING_DELAY": "600"}
RTL_HTML = '<html lang="ar" dir="rtl">'
LTR_HTML = '<html lang="en" dir="ltr">'

# Arabic for what each resultCode and webhook outcome tells the shopper (shop/checkout/views.py).
AR_SUCCESS = ("تمت عملية الدفع بنجاح", "تمت عملية الدفع بنجاح. شكرًا لك على طلبك.")
AR_RECEIVED = ("استلمنا طلبك", "استلمنا طلبك، وننتظر اكتمال عملية الدفع.")
AR_REFUSED = ("رُفضت عملية الدفع", "رفضت كي نت عملية الدفع. يُرجى المحاولة مرة أخرى باستخدام طريقة دفع أخرى.")
AR_CANCELLED = ("أُلغيت عملية الدفع", "هل تريد متابعة طلبك؟ يمكنك المحاولة مرة أخرى أو اختيار طريقة دفع أخرى.")
AR_ERROR = ("خطأ في عملية الدفع", "حدث خطأ أثناء معالجة عملية الدفع.")
AR_PAID = ("تمت عملية الدفع بنجاح", "نحن نجهّز طلبك الآن.")
AR_FAILED = ("أُلغي الطلب", "لم تنجح عملية الدفع، لذا ألغينا الطلب.")
AR_EXPIRED = ("أُلغي الطلب", "انتهت مهلة عملية الدفع، لذا ألغينا الطلب.")

# Latin words an Arabic page may show: names of things (KNET's method name from /paymentMethods,
# Adyen and its API's name) and the field name developers look for.
LATIN_ALLOWED = {"KNET", "Adyen", "Checkout", "pspReference"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _ArabicText(HTMLParser):
    """The visible text of a page without the parts marked lang="en" (the switch to English and
    the simulator's English test-card sheet), nor scripts, styles and the head."""

    def __init__(self):
        super().__init__()
        self.parts, self._skip = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in _VOID:
            return
        if self._skip or dict(attrs).get("lang") == "en" or tag in ("script", "style", "head"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag not in _VOID and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def english_words(html, *allowed):
    """Latin-script words left on an Arabic page (beyond names and the given references)."""
    parser = _ArabicText()
    parser.feed(html)
    text = " ".join(parser.parts)
    for value in allowed:
        text = text.replace(value, " ")
    return sorted({w for w in re.findall(r"\b[A-Za-z][A-Za-z']+\b", text) if w not in LATIN_ALLOWED})


def arabic_shopper(server):
    """A shopper who chose Arabic with the switch (from the catalog)."""
    shopper = Shopper(server.url)
    response = shopper.get("/language/ar?next=/")
    assert response.status_code == 200 and RTL_HTML in response.text
    return shopper


def switch_link(html):
    """(href, lang, hreflang, text) of the page's language switch."""
    pattern = r'<a class="language-switch" href="([^"]+)" lang="(\w+)"\s+hreflang="(\w+)">([^<]+)</a>'
    match = re.search(pattern, html)
    assert match, "no language switch on the page"
    return match.group(1).replace("&amp;", "&"), match.group(2), match.group(3), match.group(4)


def arabic_at_knet(server, quantity=1):
    shopper = arabic_shopper(server)
    shopper.add_to_cart("medjool-dates", quantity)
    knet_page = shopper.place_order()
    assert knet_page.status_code == 200, text_of(knet_page.text)[:500]
    return shopper, knet_page


# Language choice --------------------------------------------------------------------------------


def test_arabic_pages_render_right_to_left_with_arabic_names_and_amounts(live_server):
    shopper = arabic_shopper(live_server)
    catalog = shopper.get("/")
    assert RTL_HTML in catalog.text
    text = text_of(catalog.text)
    assert "المنتجات" in text and "تمر مجدول، 1 كغ" in text and "كوب الدلة" in text
    assert "12.500 د.ك" in text  # ASCII digits, the dinar in Arabic
    assert "Medjool dates" not in text
    added = shopper.add_to_cart("dallah-mug", 2)
    assert "أضفنا 2 × كوب الدلة إلى سلتك." in text_of(added.text)
    cart = shopper.get("/cart")
    assert RTL_HTML in cart.text
    assert "الإجمالي (قطعتان)" in text_of(cart.text)  # Arabic's dual, from the plural forms
    assert '<label for="quantity-dallah-mug" class="visually-hidden">كمية كوب الدلة</label>' in cart.text
    checkout = shopper.checkout_page()
    assert RTL_HTML in checkout.text
    assert "ادفع 7.500 د.ك عبر كي نت" in text_of(checkout.text)
    assert english_words(checkout.text) == []  # the simulator's test-card sheet too
    assert "بطاقات الاختبار في المحاكي" in text_of(checkout.text)


def test_english_is_the_default_and_accept_language_can_ask_for_arabic(live_server):
    shopper = Shopper(live_server.url)
    assert LTR_HTML in shopper.get("/").text  # no Accept-Language
    assert LTR_HTML in shopper.get("/", headers={"Accept-Language": "fr-FR,fr;q=0.9"}).text
    page = shopper.get("/", headers={"Accept-Language": "ar-KW,ar;q=0.9,en;q=0.5"})
    assert RTL_HTML in page.text
    assert "Accept-Language" in page.headers["Vary"]
    assert RTL_HTML in shopper.get("/", headers={"Accept-Language": "ar"}).text
    # A choice made with the switch wins over the browser's header.
    shopper.get("/language/en?next=/")
    assert LTR_HTML in shopper.get("/", headers={"Accept-Language": "ar"}).text


def test_default_language_follows_shopper_locale_setting(live_server_factory):
    server = live_server_factory(ENV={"SHOPPER_LOCALE": "ar-KW"})
    shopper = Shopper(server.url)
    assert RTL_HTML in shopper.get("/").text
    assert LTR_HTML in shopper.get("/", headers={"Accept-Language": "en-GB"}).text


def test_language_switch_on_every_shopper_page_returns_to_that_page(live_server_factory):
    server = live_server_factory(ENV=NO_WEBHOOKS_YET)
    shopper = Shopper(server.url)
    shopper.add_to_cart()
    result = shopper.pay_on_knet(shopper.place_order())
    order_page = urlsplit(result.url).path
    shopper.add_to_cart()  # the paid cart was emptied; the checkout page needs one again
    for path in ("/", "/cart", "/checkout", order_page):
        english = shopper.get(path)
        assert english.status_code == 200 and LTR_HTML in english.text, path
        href, lang, hreflang, name = switch_link(english.text)
        assert (lang, hreflang, name) == ("ar", "ar", "العربية")
        assert parse_qs(urlsplit(href).query)["next"] == [path]
        arabic = shopper.get(href)
        assert urlsplit(arabic.url).path == path and RTL_HTML in arabic.text, path
        href, lang, hreflang, name = switch_link(arabic.text)
        assert (lang, hreflang, name) == ("en", "en", "English")
        back = shopper.get(href)
        assert urlsplit(back.url).path == path and LTR_HTML in back.text, path


def test_switch_keeps_the_query_string_and_leaves_a_post_for_its_page(live_server):
    shopper = Shopper(live_server.url)
    shopper.add_to_cart()
    page = shopper.place_order(first_name="")  # the form answered to a POST, with errors
    assert page.status_code == 422
    href = switch_link(page.text)[0]
    assert parse_qs(urlsplit(href).query)["next"] == ["/checkout"]
    back = shopper.get("/language/ar", params={"next": "/?utm=1"}, allow_redirects=False)
    assert back.headers["Location"] == "/?utm=1"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/path",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "http:/evil.example",
        "/\r\nSet-Cookie:x=1",
        "evil.example",
        "",
    ],
)
def test_switch_never_sends_the_shopper_to_another_site(live_server, target):
    shopper = Shopper(live_server.url)
    response = shopper.get("/language/ar", params={"next": target}, allow_redirects=False)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert "Set-Cookie: x" not in str(response.headers)


def test_error_pages_speak_the_shoppers_language(live_server):
    """A 404 has no room of its own: it speaks the shopper's language, so does every shopper page's error."""
    stranger = Shopper(live_server.url)
    asked = stranger.get("/no-such-page", headers={"Accept-Language": "ar-KW,ar;q=0.9"})
    assert asked.status_code == 404 and RTL_HTML in asked.text
    assert "الصفحة غير موجودة" in text_of(asked.text) and english_words(asked.text) == []
    assert "Accept-Language" in asked.headers["Vary"]
    assert LTR_HTML in stranger.get("/no-such-page").text and "Page not found" in stranger.get("/no-such-page").text

    shopper = arabic_shopper(live_server)  # chose Arabic; the browser asks for nothing
    for path, status, words in (
        ("/orders/no-such-order", 404, "الصفحة غير موجودة"),  # e.g. a link from an Arabic email, mistyped
        ("/cart/add", 405, "هذا الإجراء غير متاح هنا"),
    ):
        page = shopper.get(path)
        assert page.status_code == status and RTL_HTML in page.text and words in text_of(page.text), path
    expired = shopper.http.post(live_server.url + "/cart/add", data={"product_id": "dallah-mug"}, timeout=10)
    assert expired.status_code == 400 and "انتهت صلاحية هذه الصفحة" in text_of(expired.text)
    # The developer rooms stay English, also where no route matched.
    for path in ("/console/orders/999999", "/console/no-such-page", "/_sim/no-such-page"):
        assert LTR_HTML in shopper.get(path).text, path


def test_unknown_language_is_404(live_server):
    assert Shopper(live_server.url).get("/language/fr?next=/").status_code == 404


def test_local_path_checks():
    assert i18n.local_path("/orders/abc?x=1") == "/orders/abc?x=1"
    for bad in ("https://a.example", "//a.example", "/\\a.example", "/a\nb", None, 42, "a/b"):
        assert i18n.local_path(bad) is None


# Adyen gets the language -------------------------------------------------------------------------


def test_arabic_checkout_sends_shopper_locale_ar_kw_and_knet_answers_in_arabic(live_server):
    shopper, knet_page = arabic_at_knet(live_server)
    assert api_calls(live_server, "/paymentMethods")[0]["request"]["shopperLocale"] == "ar-KW"
    assert api_calls(live_server, "/payments")[0]["request"]["shopperLocale"] == "ar-KW"
    assert only_order(live_server).shopper_locale == "ar-KW"
    assert '<html lang="ar" dir="rtl">' in knet_page.text  # the simulator's KNET page follows shopperLocale


def test_switching_back_to_english_before_paying_sends_en_kw(live_server):
    shopper = arabic_shopper(live_server)
    shopper.add_to_cart()
    shopper.get("/language/en?next=/checkout")
    shopper.place_order()
    assert api_calls(live_server, "/payments")[0]["request"]["shopperLocale"] == "en-KW"


# Checkout form -------------------------------------------------------------------------------------


def test_checkout_errors_in_arabic_and_tied_to_their_fields(live_server):
    shopper = arabic_shopper(live_server)
    shopper.add_to_cart()
    response = shopper.place_order(first_name="", last_name="123", email="not-an-email", phone="123")
    assert response.status_code == 422
    assert RTL_HTML in response.text
    text = text_of(response.text)
    for message in (
        "أدخل اسمك الأول.",
        "يجب أن يقتصر اسم عائلتك على الحروف والمسافات والشرطات والفواصل العليا.",
        "أدخل عنوان بريد إلكتروني صحيحًا، مثل name@example.com.",
        "أدخل رقم هاتف كويتيًا من 8 أرقام، مثل 50000000.",
    ):
        assert message in text
    for label in ("الاسم الأول", "اسم العائلة", "البريد الإلكتروني", "رقم الهاتف"):
        assert label in text
    for field in ("first_name", "last_name", "email", "phone"):
        tag = re.search(rf'<input[^>]*\bid="{field}"[^>]*>', response.text).group(0)
        assert 'aria-invalid="true"' in tag
        described = re.search(r'aria-describedby="([^"]+)"', tag).group(1).split()
        assert f"{field}-error" in described
        assert f'id="{field}-error"' in response.text
        assert f'<label for="{field}">' in response.text
    assert 'dir="ltr"' in re.search(r'<input[^>]*\bid="phone"[^>]*>', response.text).group(0)
    assert english_words(response.text, "name@example.com") == []
    assert api_calls(live_server, "/payments") == []


def test_cart_errors_in_arabic(live_server):
    shopper = arabic_shopper(live_server)
    page = shopper.get("/")
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text).group(1)
    response = shopper.http.post(
        live_server.url + "/cart/add",
        data={"csrf_token": csrf, "product_id": "oud-candle", "quantity": "11"},
        timeout=10,
    )
    assert "اختر كمية من 1 إلى 10." in text_of(response.text)
    shopper.add_to_cart("oud-candle", 9)
    response = shopper.http.post(
        live_server.url + "/cart/add",
        data={"csrf_token": csrf, "product_id": "oud-candle", "quantity": "2"},
        timeout=10,
    )
    assert "الحد الأقصى من «شمعة العود» في سلتك هو 10، وفي سلتك منه الآن 9." in text_of(response.text)


# Every resultCode and webhook outcome, in Arabic ---------------------------------------------------


@pytest.mark.parametrize(
    "card, action, expected, english",
    [
        ({}, "submit", AR_SUCCESS, "Payment successful"),
        ({"expiry_month": "05", "expiry_year": "2031"}, "submit", AR_REFUSED, "Payment refused"),
        ({"pin": "9999"}, "submit", AR_REFUSED, "Payment refused"),
        ({}, "cancel", AR_CANCELLED, "Payment cancelled"),
        ({"card_number": "8888880000000003"}, "submit", AR_ERROR, "Payment error"),
        ({"card_number": "8888880000000004"}, "submit", AR_RECEIVED, "Order received"),
        ({"card_number": "8888880000000005"}, "submit", AR_RECEIVED, "Order received"),
    ],
    ids=["authorised", "refused-expiry", "refused-pin", "cancelled", "error", "pending", "received"],
)
def test_each_result_code_has_its_arabic_message(live_server_factory, card, action, expected, english):
    server = live_server_factory(ENV=NO_WEBHOOKS_YET)  # the page shows the redirect's resultCode
    shopper, knet_page = arabic_at_knet(server)
    result = shopper.pay_on_knet(knet_page, action=action, **card)
    assert result.status_code == 200 and urlsplit(result.url).path.startswith("/orders/")
    assert RTL_HTML in result.text
    title, message = expected
    text = text_of(result.text)
    assert title in text and message in text
    live_region = r'<div role="status" aria-live="polite"[^>]*>\s*<h1 id="result-title">'
    assert re.search(live_region + re.escape(title), result.text)
    assert english not in text
    assert "12.500 د.ك" in text
    order = only_order(server)
    assert order.status == OrderStatus.PENDING
    assert english_words(result.text, order.reference, order.psp_reference) == []


@pytest.mark.parametrize(
    "env, card, expected, email_subject, email_words",
    [
        (
            {"SIMULATOR_WEBHOOK_DELAY": "0", "SIMULATOR_PENDING_DELAY": "0.2"},
            "8888880000000004",
            AR_PAID,
            "تمت عملية الدفع بنجاح: الطلب",
            "ونعمل الآن على تنفيذ طلبك",
        ),
        (
            {"SIMULATOR_WEBHOOK_DELAY": "0", "SIMULATOR_PENDING_DELAY": "0.2"},
            "8888880000000005",
            AR_FAILED,
            "لم تنجح عملية الدفع",
            "لذا ألغينا الطلب",
        ),
        (
            {"SIMULATOR_WEBHOOK_DELAY": "0", "SIMULATOR_OFFER_EXPIRY": "1"},
            None,
            AR_EXPIRED,
            "انتهت مهلة عملية الدفع",
            "انتهت مهلة دفع مبلغ 12.500 د.ك",
        ),
    ],
    ids=["paid", "failed", "expired"],
)
def test_webhook_outcomes_in_arabic_on_the_page_and_in_the_email(
    live_server_factory, env, card, expected, email_subject, email_words
):
    server = live_server_factory(ENV=env)
    shopper, knet_page = arabic_at_knet(server)
    if card:
        path = urlsplit(shopper.pay_on_knet(knet_page, card_number=card).url).path
    else:  # the shopper leaves KNET's page open: the offer closes
        path = f"/orders/{only_order(server).token}"
    title, message = expected
    page = shopper.wait_for_text(path, message, timeout=20)
    assert RTL_HTML in page.text and title in text_of(page.text)
    assert "تحقّق مرة أخرى" not in text_of(page.text)  # no Check again: the order is final
    order = only_order(server)
    assert english_words(page.text, order.reference, order.psp_reference or "") == []
    # The email is in the order's language too.
    (email,) = wait_for(
        lambda: [e for e in emails(server.app, order.reference) if e.body], timeout=20, message="the email written"
    )
    assert email_words in email.body and "مرحبًا Fatima،" in email.body
    assert email_subject in email.subject and order.reference in email.subject
    # Its link opens the order in that language, also in a browser without the shopper's cookie.
    stranger = Shopper(server.url)
    assert RTL_HTML in stranger.get(path).text  # the email's link opens in the order's language


def test_order_page_follows_the_shoppers_choice_over_the_orders_language(live_server):
    shopper, _ = arabic_at_knet(live_server)
    order = only_order(live_server)
    assert RTL_HTML in Shopper(live_server.url).get(f"/orders/{order.token}").text
    shopper.get(f"/language/en?next=/orders/{order.token}")
    assert LTR_HTML in shopper.get(f"/orders/{order.token}").text


# Emails --------------------------------------------------------------------------------------------


PSP = "PSP0000000000001"


AUTHORISED = WebhookEvent("AUTHORISATION", True, 12500, "KWD", PSP)
NOT_AUTHORISED = WebhookEvent("AUTHORISATION", False, 12500, "KWD", PSP, "NOT CAPTURED")
OFFER_CLOSED = WebhookEvent("OFFER_CLOSED", True, 12500, "KWD", PSP)


@pytest.mark.parametrize(
    "status, event, subject, body",
    [
        ("pending", AUTHORISED, "تمت عملية الدفع بنجاح: الطلب", "استلمنا مبلغ 12.500 د.ك للطلب"),
        ("pending", NOT_AUTHORISED, "لم تنجح عملية الدفع", "لم تنجح عملية دفع مبلغ 12.500 د.ك"),
        ("pending", OFFER_CLOSED, "انتهت مهلة عملية الدفع", "انتهت مهلة دفع مبلغ"),
        ("expired", AUTHORISED, "تمت عملية الدفع بنجاح: الطلب", "لردّ المبلغ كاملًا"),
    ],
    ids=["paid", "failed", "expired", "late-paid"],
)
def test_emails_are_written_in_the_orders_language(app, status, event, subject, body):
    arabic = make_order(app, status=status, shopper_locale="ar-KW")
    english = make_order(app, status=status, shopper_locale="en-KW")
    with app.app_context():
        apply_event(arabic, event)
        apply_event(english, event)
    (message,) = kept_emails(app, arabic)
    assert subject in message.subject and arabic in message.subject
    assert body in message.body and "متجر كي نت التجريبي" in message.body
    assert f"/orders/{get_order(app, arabic).token}" in message.body
    (message,) = kept_emails(app, english)
    assert "KWD" in message.body and "د.ك" not in message.body and "KNET Demo Shop" in message.body


# The catalog ---------------------------------------------------------------------------------------


def _po():
    with open(PO_FILE, "rb") as source:
        return read_po(source)


def test_every_message_has_an_arabic_translation():
    catalog = _po()
    assert catalog.locale.language == "ar" and catalog.num_plurals == 6
    untranslated = []
    for message in catalog:
        if not message.id:
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        forms = catalog.num_plurals if message.pluralizable else 1
        if message.fuzzy or len(strings) != forms or not all(s and s.strip() for s in strings):
            untranslated.append(message.id)
    assert untranslated == []
    assert [(m.id, errors) for m, errors in catalog.check()] == []  # placeholders match the msgid
    assert len(catalog) > 100


def test_every_string_in_the_code_is_in_the_catalog():
    """A string wrapped for translation but not in the .po yet: run `make translations`, translate it."""
    with open(os.path.join(ROOT, "babel.cfg")) as config:
        method_map, options_map = parse_mapping_cfg(config)
    keywords = {**DEFAULT_KEYWORDS, **EXTRA_KEYWORDS}
    in_code = set()
    for _filename, _lineno, message, _comments, _context in extract_from_dir(
        ROOT, method_map, options_map, keywords=keywords
    ):
        in_code.add(message[0] if isinstance(message, tuple) else message)
    in_po = {m.id[0] if isinstance(m.id, tuple) else m.id for m in _po() if m.id}
    assert in_code, "nothing extracted: is babel.cfg right?"
    assert sorted(in_code - in_po) == []


def test_compiled_catalog_is_used(app):
    assert not i18n.stale_catalogs()
    with app.test_request_context("/", headers={"Accept-Language": "ar"}):
        from flask_babel import gettext

        assert gettext("Payment successful") == "تمت عملية الدفع بنجاح"


def test_shopper_locale_setting_is_checked_at_start_up():
    from shop.config import ConfigError, load_settings

    assert load_settings({"SHOPPER_LOCALE": "ar_kw"})["SHOPPER_LOCALE"] == "ar-KW"
    assert load_settings({})["SHOPPER_LOCALE"] == "en-KW"
    with pytest.raises(ConfigError, match="SHOPPER_LOCALE"):
        load_settings({"SHOPPER_LOCALE": "fr-FR"})
