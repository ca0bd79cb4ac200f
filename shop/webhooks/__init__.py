"""POST /webhooks/adyen: verify, store, acknowledge (receiver.py); processing happens in the
background (processing.py)."""


def init_app(app):
    """The webhook route (listed by `flask routes`), answered in front of Flask by the Receiver
    (shop/webhooks/receiver.py says why)."""
    from shop.security import csrf
    from shop.webhooks.receiver import PATHS, Receiver, view

    for path in sorted(PATHS):
        app.add_url_rule(path, "webhooks.adyen", view, methods=["POST"], strict_slashes=True)
    csrf.exempt(view)  # Adyen carries no CSRF token; basic auth and the HMAC authenticate it
    app.wsgi_app = Receiver(app, app.wsgi_app)
