"""Money in integer minor units. KWD has three decimals: 12.500 KWD is 12500 fils."""

CURRENCY_DECIMALS = {"KWD": 3, "BHD": 3, "OMR": 3, "JOD": 3, "EUR": 2, "USD": 2}


def format_amount(value, currency="KWD"):
    """12500, 'KWD' -> '12.500 KWD'. Integer arithmetic only, never a float."""
    decimals = CURRENCY_DECIMALS.get(currency, 2)
    sign = "-" if value < 0 else ""
    whole, fraction = divmod(abs(int(value)), 10**decimals)
    return f"{sign}{whole:,}.{fraction:0{decimals}d} {currency}"


def init_app(app):
    app.jinja_env.filters["money"] = format_amount
