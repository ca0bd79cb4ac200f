"""POST /webhooks/adyen: verify, store, acknowledge (receiver.py); processing happens in the
background (processing.py)."""


def init_app(app):
    """Answer the webhook path in front of Flask (shop/webhooks/receiver.py says why)."""
    from shop.webhooks.receiver import Receiver

    app.wsgi_app = Receiver(app, app.wsgi_app)
