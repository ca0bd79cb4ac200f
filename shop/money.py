"""Money in integer minor units. KWD has three decimals: 12.500 KWD is 12500 fils."""

CURRENCY_DECIMALS = {"KWD": 3, "BHD": 3, "OMR": 3, "JOD": 3, "EUR": 2, "USD": 2}
# How Arabic pages name a currency after the amount (the digits stay ASCII): 12.500 د.ك
ARABIC_CURRENCY_NAMES = {"KWD": "د.ك"}


def format_amount(value, currency="KWD", language="en"):
    """12500, 'KWD' -> '12.500 KWD' ('12.500 د.ك' in Arabic). Integer arithmetic only, never a float."""
    decimals = CURRENCY_DECIMALS.get(currency, 2)
    sign = "-" if value < 0 else ""
    whole, fraction = divmod(abs(int(value)), 10**decimals)
    name = ARABIC_CURRENCY_NAMES.get(currency, currency) if language == "ar" else currency
    return f"{sign}{whole:,}.{fraction:0{decimals}d} {name}"


def as_typed(value, currency="KWD"):
    """12500, 'KWD' -> '12.500': the amount as a person types it (parse_amount reads it back)."""
    decimals = CURRENCY_DECIMALS.get(currency, 2)
    whole, fraction = divmod(int(value), 10**decimals)
    return f"{whole}.{fraction:0{decimals}d}"


def parse_amount(text, currency="KWD"):
    """'1.250', 'KWD' -> 1250: an amount typed by a person, to minor units exactly (no float on the way).

    Digits with at most the currency's decimals ('1', '1.2', '1.250'); raises ValueError, saying why,
    for anything else (a sign, a comma, a fourth decimal, nothing)."""
    decimals = CURRENCY_DECIMALS.get(currency, 2)
    cleaned = (text or "").strip()
    whole, dot, fraction = cleaned.partition(".")
    if not whole.isascii() or not whole.isdigit() or (dot and not (fraction.isascii() and fraction.isdigit())):
        raise ValueError(f"{text!r} is not an amount: write it like 12.500 (digits, a dot, up to {decimals} decimals)")
    if len(fraction) > decimals:
        raise ValueError(f"{text!r} has more than {decimals} decimals: {currency} has {decimals}")
    return int(whole) * 10**decimals + int(fraction.ljust(decimals, "0") or 0)


def _money_filter(value, currency="KWD"):
    """The `money` template filter: the amount in the page's language."""
    from shop.i18n import current_language

    return format_amount(value, currency, current_language())


def init_app(app):
    app.jinja_env.filters["money"] = _money_filter
    app.jinja_env.filters["as_typed"] = as_typed
