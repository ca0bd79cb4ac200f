"""POST /webhooks/adyen: verify, store, acknowledge; processing happens in the background."""

from flask import Blueprint

bp = Blueprint("webhooks", __name__)

from shop.webhooks import views  # noqa: E402,F401
