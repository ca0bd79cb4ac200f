"""A small client for Adyen's Checkout API and the HMAC scheme of its webhooks."""

from shop.adyen.client import AdyenApiError, AdyenClient, AdyenError, AdyenUnavailable

__all__ = ["AdyenClient", "AdyenApiError", "AdyenError", "AdyenUnavailable"]
