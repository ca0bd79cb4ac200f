"""The shopper pages in English and Arabic (right to left), with Flask-Babel.

The language of a shopper page is the first of these that applies:
  1. the shopper's choice, made with the language link on every page and kept in the session;
  2. on an order's page, the language the order was placed in (so a link in an email opens in it);
  3. the browser's Accept-Language, if it asks for Arabic or English;
  4. the language of the SHOPPER_LOCALE setting (en-KW unless set).

Only the shopper rooms (storefront, checkout, and the language switch) are translated, and the error
pages of addresses that are no room's (a 404 has no blueprint), so a shopper's mistyped link gets
their language. The simulator has its own English/Arabic KNET page (it follows `shopperLocale`);
other pages stay English (the console, the simulator's developer pages).
The order's `shopperLocale` for Adyen is the page language in Kuwait: en-KW or ar-KW.

Strings live in shop/translations/<lang>/LC_MESSAGES/messages.po; `make translations` extracts
them again (babel.cfg) and compiles the .mo files, which are built, never committed.
"""

import logging
import os
from urllib.parse import urlsplit

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Blueprint, abort, current_app, g, has_request_context, redirect, request, session, url_for
from flask_babel import Babel, get_locale, refresh

log = logging.getLogger(__name__)

# Language code -> its name, written in that language (what the switch link shows).
LANGUAGES = {"en": "English", "ar": "العربية"}
RTL_LANGUAGES = frozenset({"ar"})
SESSION_KEY = "lang"
# Blueprints whose pages are translated; every other page is English.
SHOPPER_BLUEPRINTS = frozenset({"storefront", "checkout", "i18n"})
# Addresses of the developer rooms, English also when no route matched them (their 404s).
DEVELOPER_PATHS = ("/console", "/_sim")
TRANSLATIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "translations")

babel = Babel()
bp = Blueprint("i18n", __name__)


def default_language():
    """The language of SHOPPER_LOCALE (en-KW or ar-KW), for shoppers whose browser names neither."""
    locale = (current_app.config.get("SHOPPER_LOCALE") or "en-KW").replace("_", "-")
    language = locale.split("-")[0].lower()
    return language if language in LANGUAGES else "en"


def language_of_locale(locale):
    """'ar-KW' -> 'ar'; anything that is not one of our languages -> the default language."""
    language = (locale or "").replace("_", "-").split("-")[0].lower()
    return language if language in LANGUAGES else default_language()


def _is_shopper_page():
    return has_request_context() and request.blueprint in SHOPPER_BLUEPRINTS


def _speaks_shopper_language():
    """A shopper page, or the error page of an address that matched no route (404, 405, a refused Host)."""
    if request.url_rule is None:
        return not request.path.startswith(DEVELOPER_PATHS)
    return request.blueprint in SHOPPER_BLUEPRINTS


def select_language():
    """Flask-Babel's locale selector (see the module docstring for the order)."""
    if not has_request_context():
        return default_language()  # the worker: emails choose theirs with force_locale
    if not _speaks_shopper_language():
        return "en"
    chosen = session.get(SESSION_KEY)
    if chosen in LANGUAGES:
        return chosen
    order_language = g.get("order_language")
    if order_language in LANGUAGES:
        return order_language
    return request.accept_languages.best_match(list(LANGUAGES)) or default_language()


def prefer_order_language(shopper_locale):
    """On an order's page: use the order's language unless the shopper has chosen one.

    The locale is worked out once per request, so it is worked out again here."""
    g.order_language = language_of_locale(shopper_locale)
    refresh()


def current_language():
    locale = get_locale()
    return locale.language if locale is not None and locale.language in LANGUAGES else default_language()


def is_rtl(language=None):
    return (language or current_language()) in RTL_LANGUAGES


def shopper_locale():
    """The `shopperLocale` for Adyen (and the order's language): the page language in Kuwait."""
    return f"{current_language()}-KW"


def local_path(target):
    """`target` if it is a path on this site ('/cart', '/orders/x?y=1'), else None.

    Refuses what a browser could take to another site: 'https://evil.example', '//evil.example',
    '/\\evil.example', and anything with control characters or backslashes.
    """
    if not isinstance(target, str) or not target.startswith("/") or target.startswith("//"):
        return None
    if len(target) > 2000 or "\\" in target or any(ord(char) < 32 or ord(char) == 127 for char in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


def _here():
    """The page being shown, for the switch to come back to. Pages answered to a POST come back by GET."""
    override = g.get("language_next")
    if override:
        return override
    if request.method == "GET" and request.query_string:
        return request.full_path
    return request.path


def set_language_next(path):
    """Where the language switch on this page returns to, when it is not the page's own URL."""
    g.language_next = path


@bp.get("/language/<code>")
def switch(code):
    """The language switch: remember the choice and go back to the page it was made on (a local path only)."""
    if code not in LANGUAGES:
        abort(404)
    session[SESSION_KEY] = code
    target = local_path(request.args.get("next")) or url_for("storefront.catalog")
    response = redirect(target, code=303)
    response.headers["Cache-Control"] = "no-store"
    return response


def _template_context():
    language = current_language()
    context = {"page_lang": language, "page_dir": "rtl" if is_rtl(language) else "ltr", "language_switch": None}
    if _is_shopper_page():
        other = "en" if language == "ar" else "ar"
        context["language_switch"] = {
            "code": other,
            "name": LANGUAGES[other],
            "url": url_for("i18n.switch", code=other, next=_here()),
        }
    return context


def _vary_on_language(response):
    if _speaks_shopper_language():
        response.vary.add("Accept-Language")
    return response


def catalog_paths():
    """(po, mo) paths of every translation."""
    paths = []
    if os.path.isdir(TRANSLATIONS_DIR):
        for language in sorted(os.listdir(TRANSLATIONS_DIR)):
            po = os.path.join(TRANSLATIONS_DIR, language, "LC_MESSAGES", "messages.po")
            if os.path.isfile(po):
                paths.append((po, po[:-3] + ".mo"))
    return paths


def stale_catalogs():
    """The .po files whose .mo is missing or older."""
    return [po for po, mo in catalog_paths() if not os.path.exists(mo) or os.path.getmtime(mo) < os.path.getmtime(po)]


def compile_catalogs():
    """Compile the .po files whose .mo is missing or out of date (what `pybabel compile` does). Returns them."""
    compiled = stale_catalogs()
    for po in compiled:
        with open(po, "rb") as source:
            catalog = read_po(source)
        with open(po[:-3] + ".mo", "wb") as target:
            write_mo(target, catalog)
    return compiled


def init_app(app):
    babel.init_app(app, default_locale="en", locale_selector=select_language)
    app.register_blueprint(bp)
    app.context_processor(_template_context)
    app.after_request(_vary_on_language)
    stale = stale_catalogs()
    if stale:
        log.error(
            "Translations not compiled, so pages will show English: %s. Run `make run` or "
            "`.venv/bin/pybabel compile -d shop/translations`.",
            ", ".join(os.path.relpath(po, TRANSLATIONS_DIR) for po in stale),
        )
