"""The simulated KNET hosted payment page that action.url points to.

Like the real page (Tap's test guide: https://developers.tap.company/reference/testing-cards):
choose the bank ("KNET Test Card [KNET1]" for test cards), enter card number, expiry month and
year and PIN, then Submit or Cancel. Works with JavaScript off. The shopper then goes back to
returnUrl with `redirectResult`, by GET (303) or by an auto-submitted POST form
(https://docs.adyen.com/online-payments/api-only/handling-redirects).
The card number and PIN are never stored or logged; only the last four digits are kept.
"""

import hmac
import logging
import re
from datetime import date

from flask import current_app, redirect, render_template, request

from shop.checkout.knet_test_cards import TEST_BANK_OPTION
from shop.money import format_amount
from shop.simulator import bp, outcomes, payments
from shop.simulator.models import SimPaymentStatus
from shop.simulator.references import append_redirect_result, page_signature

log = logging.getLogger(__name__)

PAGE_PATH = "/knet/kpg/PaymentHTTP.htm"  # the real gateway's page is …/kpg/PaymentHTTP.htm

# (value, label) of the bank drop-down; the first is the one Tap's test cards need.
BANKS = (
    ("KNET1", TEST_BANK_OPTION),
    ("ABK", "Al Ahli Bank of Kuwait [ABK]"),
    ("BBK", "Bank of Bahrain and Kuwait [BBK]"),
    ("BOUBYAN", "Boubyan Bank [Boubyan]"),
    ("BURGAN", "Burgan Bank [Burgan]"),
    ("CBK", "Commercial Bank of Kuwait [CBK]"),
    ("GULF", "Gulf Bank of Kuwait [Gulf]"),
    ("KFH", "Kuwait Finance House [KFH]"),
    ("KIB", "Kuwait International Bank [KIB]"),
    ("NBK", "National Bank of Kuwait [NBK]"),
    ("WARBA", "Warba Bank [Warba]"),
)
BANK_CODES = {code for code, _ in BANKS}
FIRST_YEAR = 2020  # early enough for Tap's expired example 05/21

STRINGS = {
    "en": {
        "title": "KNET Payment Gateway",
        "simulated": "Simulated KNET page for testing. No money moves.",
        "merchant": "Merchant",
        "amount": "Amount",
        "bank": "Select Your Bank",
        "bank_placeholder": "Select your bank",
        "card_number": "Card Number",
        "expiry": "Expiration Date",
        "expiry_month": "Expiry Month",
        "expiry_year": "Expiry Year",
        "month_placeholder": "MM",
        "year_placeholder": "YYYY",
        "pin": "PIN",
        "submit": "Submit",
        "cancel": "Cancel",
        "errors_heading": "Please correct the fields below.",
        "error_bank": "Select your bank.",
        "error_card_number": "Enter the 16-digit card number (digits only).",
        "error_expiry_month": "Select the expiry month.",
        "error_expiry_year": "Select the expiry year.",
        "error_pin": "Enter your 4-digit PIN.",
        "already_completed": "This payment is already completed.",
        "already_completed_detail": (
            "It cannot be submitted again. You are being sent back to the shop with its result."
        ),
        "expired": "This payment has expired.",
        "expired_detail": "The time to complete it has run out. Go back to the shop to try again.",
        "unknown": "This payment could not be found.",
        "invalid_request": "This payment request is not valid.",
        "returning": "Returning you to the shop…",
        "return_to_shop": "Return to the shop",
        "other_language_name": "عربي",
        "other_language": "ar",
    },
    "ar": {
        "title": "بوابة الدفع كي نت",
        "simulated": "صفحة كي نت تجريبية للاختبار. لا تُحوَّل أي أموال.",
        "merchant": "التاجر",
        "amount": "المبلغ",
        "bank": "اختر البنك",
        "bank_placeholder": "اختر البنك",
        "card_number": "رقم البطاقة",
        "expiry": "تاريخ الانتهاء",
        "expiry_month": "شهر الانتهاء",
        "expiry_year": "سنة الانتهاء",
        "month_placeholder": "شهر",
        "year_placeholder": "سنة",
        "pin": "الرقم السري",
        "submit": "تنفيذ",
        "cancel": "إلغاء",
        "errors_heading": "يرجى تصحيح الحقول أدناه.",
        "error_bank": "يرجى اختيار البنك.",
        "error_card_number": "أدخل رقم البطاقة المكوّن من 16 رقمًا (أرقام فقط).",
        "error_expiry_month": "اختر شهر الانتهاء.",
        "error_expiry_year": "اختر سنة الانتهاء.",
        "error_pin": "أدخل الرقم السري المكوّن من 4 أرقام.",
        "already_completed": "تمت معالجة هذه العملية مسبقًا.",
        "already_completed_detail": "لا يمكن إرسالها مرة أخرى. جارٍ إعادتك إلى المتجر مع نتيجتها.",
        "expired": "انتهت صلاحية عملية الدفع هذه.",
        "expired_detail": "انتهى الوقت المتاح لإتمامها. عد إلى المتجر للمحاولة مرة أخرى.",
        "unknown": "لم يتم العثور على عملية الدفع هذه.",
        "invalid_request": "طلب الدفع هذا غير صالح.",
        "returning": "جارٍ إعادتك إلى المتجر…",
        "return_to_shop": "العودة إلى المتجر",
        "other_language_name": "English",
        "other_language": "en",
    },
}


@bp.get(PAGE_PATH)
def knet_page():
    """The page, opened by GET from action.url (`?paymentId=…`)."""
    payment = payments.by_page_token(request.args.get("paymentId"))
    if payment is None:
        return _message(_language(None), "unknown", status=404)
    return _show(payment, _language(payment))


@bp.post(PAGE_PATH)
def knet_page_post():
    """Either the shop's POST redirect (action.data: paymentId, sig) or the shopper's Submit / Cancel."""
    form = request.form
    payment = payments.by_page_token(form.get("paymentId"))
    lang = _language(payment)
    if payment is None:
        return _message(lang, "unknown", status=404)

    action = form.get("action")
    if action not in ("submit", "cancel"):
        expected = page_signature(payment.page_token, current_app.config["SECRET_KEY"])
        if not hmac.compare_digest(form.get("sig", "").encode("utf-8"), expected.encode("ascii")):
            return _message(lang, "invalid_request", status=400)
        return _show(payment, lang)

    if payment.status != SimPaymentStatus.AWAITING_SHOPPER or payments.is_overdue(payment):
        return _show(payment, lang, resubmitted=True)

    if action == "cancel":
        outcome, bank, last4 = outcomes.CANCELLED, None, None
    else:
        values, errors = _read_form(form)
        if errors:
            return _render_form(payment, lang, values, errors)
        outcome = outcomes.decide(
            values["card_digits"], int(values["expiry_month"]), int(values["expiry_year"]), form.get("pin", "")
        )
        bank, last4 = values["bank"], values["card_digits"][-4:]

    if not payments.complete(payment, outcome, bank=bank, card_last4=last4):
        # Another tab finished it, or it expired, between our check and our write.
        return _show(payment, lang, resubmitted=True)
    return _return_to_shop(payment, lang)


# Rendering -------------------------------------------------------------------------------------


def _show(payment, lang, resubmitted=False):
    """The page for the payment's current state: the form, "already completed" or "expired"."""
    if payment.status == SimPaymentStatus.COMPLETED:
        return _message(lang, "already_completed", payment=payment, status=409 if resubmitted else 200)
    if payments.is_overdue(payment):
        payments.expire(payment)
    if payment.status == SimPaymentStatus.EXPIRED:
        return _message(lang, "expired", payment=payment, status=410)
    return _render_form(payment, lang, {}, {})


def _render_form(payment, lang, values, errors):
    this_year = date.today().year
    return render_template(
        "simulator/knet_page.html",
        t=STRINGS[lang],
        lang=lang,
        payment=payment,
        amount=format_amount(payment.amount_value, payment.currency, lang),  # 12.500 KWD, 12.500 د.ك
        merchant_name=current_app.config["SIMULATOR_MERCHANT_NAME"],
        banks=BANKS,
        months=[f"{month:02d}" for month in range(1, 13)],
        years=[str(year) for year in range(FIRST_YEAR, this_year + 16)],
        values=values,
        errors={field: STRINGS[lang][f"error_{field}"] for field in errors},
        page_path=request.script_root + "/_sim" + PAGE_PATH,
    )


def _message(lang, key, payment=None, status=200):
    """A short page with one message; for a completed payment it also carries the shopper back."""
    return_url = return_method = redirect_result = None
    if payment is not None and key == "already_completed":
        return_method = _return_method(payment)
        redirect_result = payment.redirect_result
        return_url = payment.return_url
        if return_method == "GET":
            return_url = append_redirect_result(payment.return_url, redirect_result)
    elif payment is not None and key == "expired":
        return_method, return_url = "GET", payment.return_url
    return (
        render_template(
            "simulator/knet_message.html",
            t=STRINGS[lang],
            lang=lang,
            message=STRINGS[lang][key],
            detail=STRINGS[lang].get(f"{key}_detail"),
            return_url=return_url,
            return_method=return_method,
            redirect_result=redirect_result,
            auto_return=key == "already_completed",
        ),
        status,
    )


def _return_to_shop(payment, lang):
    """Back to returnUrl with the redirectResult: 303 for GET, an auto-submitting form for POST."""
    if _return_method(payment) == "GET":
        return redirect(append_redirect_result(payment.return_url, payment.redirect_result), code=303)
    return render_template(
        "simulator/return_post.html",
        t=STRINGS[lang],
        lang=lang,
        return_url=payment.return_url,
        redirect_result=payment.redirect_result,
    )


def _return_method(payment):
    if payment.redirect_from_issuer_method == "POST" or current_app.config["SIMULATOR_RETURN_METHOD"] == "POST":
        return "POST"
    return "GET"


def _language(payment):
    chosen = request.values.get("lang")
    if chosen in STRINGS:
        return chosen
    locale = (payment.shopper_locale or "") if payment is not None else ""
    return "ar" if locale.lower().startswith("ar") else "en"


def _read_form(form):
    """The typed values (never the PIN) and the names of the fields in error."""
    values = {
        "bank": form.get("bank", "").strip(),
        "card_number": form.get("card_number", "").strip()[:40],
        "expiry_month": form.get("expiry_month", "").strip(),
        "expiry_year": form.get("expiry_year", "").strip(),
    }
    # Spaces and dashes are how people copy card numbers; the digits are what count.
    values["card_digits"] = re.sub(r"[\s-]", "", values["card_number"])
    errors = []
    if values["bank"] not in BANK_CODES:
        errors.append("bank")
    if not re.fullmatch(r"[0-9]{16}", values["card_digits"]):
        errors.append("card_number")
    if not (values["expiry_month"].isdigit() and 1 <= int(values["expiry_month"]) <= 12):
        errors.append("expiry_month")
    if not (re.fullmatch(r"[0-9]{4}", values["expiry_year"]) and FIRST_YEAR <= int(values["expiry_year"]) <= 2099):
        errors.append("expiry_year")
    if not re.fullmatch(r"[0-9]{4}", form.get("pin", "")):
        errors.append("pin")
    return values, errors
