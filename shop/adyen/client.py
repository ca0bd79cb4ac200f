"""Adyen Checkout API v71 over `requests`: the payment calls and the refund modifications, typed errors,
no secret in any log line.

API reference: https://docs.adyen.com/api-explorer/Checkout/71/overview
The same code talks to the built-in simulator, Adyen's test platform or live; only the base URL
and the credentials change (see shop/config.py).
"""

import logging
import time

import requests

log = logging.getLogger(__name__)


class AdyenError(Exception):
    """Any failed call to Adyen. Messages never contain the API key."""


class AdyenUnavailable(AdyenError):
    """No answer (timeout, refused connection): the outcome is unknown, not failed."""


class AdyenApiError(AdyenError):
    """Adyen answered with an error status and its ServiceError body.

    https://docs.adyen.com/development-resources/error-codes
    """

    def __init__(self, status, error_code=None, message=None, error_type=None, psp_reference=None, transient=False):
        self.status = status
        self.error_code = error_code
        self.message = message
        self.error_type = error_type
        self.psp_reference = psp_reference
        # Adyen's `transient-error: true` header: the same request may be retried later with the same key.
        self.transient = transient
        super().__init__(f"Adyen answered HTTP {status}, errorCode {error_code}: {message}")

    @property
    def in_progress(self):
        """704 "request already processed or in progress", which Adyen sends as HTTP 422 or 409
        (https://docs.adyen.com/development-resources/api-idempotency#transient-errors): the request
        was not refused; its first try has been or is being processed."""
        return self.error_code == "704" or self.status == 409

    @property
    def is_final(self):
        """A 4xx is final for this request, unless it is "in progress" or marked transient; a 5xx
        may be retried with the same Idempotency-Key."""
        return 400 <= self.status < 500 and not (self.in_progress or self.transient)


class AdyenClient:
    """One object per app; `recorder(record)` receives every call for the developer views, and
    `before_send()` runs just before each request goes out (the shop ends its database
    transaction there, so that no pooled connection waits on Adyen)."""

    def __init__(
        self, base_url, api_key, connect_timeout=5.0, read_timeout=15.0, recorder=None, session=None, before_send=None
    ):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout = (connect_timeout, read_timeout)
        self.recorder = recorder
        self.before_send = before_send
        self.http = session or requests.Session()

    def __repr__(self):  # keeps the key out of tracebacks and debuggers
        return f"AdyenClient(base_url={self.base_url!r})"

    def payment_methods(self, body, context=None):
        """POST /paymentMethods: which methods this shopper can use.

        https://docs.adyen.com/api-explorer/Checkout/71/post/paymentMethods
        """
        return self._post("/paymentMethods", body, context=context)

    def payments(self, body, idempotency_key, context=None, timeout=None):
        """POST /payments: start the payment. The Idempotency-Key makes a retry safe.

        https://docs.adyen.com/api-explorer/Checkout/71/post/payments
        https://docs.adyen.com/development-resources/api-idempotency
        """
        return self._post("/payments", body, idempotency_key=idempotency_key, context=context, timeout=timeout)

    def payments_details(self, body, idempotency_key=None, context=None):
        """POST /payments/details: the result after the shopper comes back.

        https://docs.adyen.com/api-explorer/Checkout/71/post/payments/details
        """
        return self._post("/payments/details", body, idempotency_key=idempotency_key, context=context)

    def refunds(self, payment_psp_reference, body, idempotency_key, context=None):
        """POST /payments/{paymentPspReference}/refunds: give back an amount of a captured payment.
        The answer (`status: received`) only acknowledges the request; the REFUND webhook says.

        https://docs.adyen.com/api-explorer/Checkout/71/post/payments/(paymentPspReference)/refunds
        """
        return self._modification(payment_psp_reference, "refunds", body, idempotency_key, context)

    def reversals(self, payment_psp_reference, body, idempotency_key, context=None):
        """POST /payments/{paymentPspReference}/reversals: cancel the payment, or refund it if it was
        captured already. The CANCEL_OR_REFUND webhook says which, and whether it worked.

        https://docs.adyen.com/api-explorer/Checkout/71/post/payments/(paymentPspReference)/reversals
        """
        return self._modification(payment_psp_reference, "reversals", body, idempotency_key, context)

    def _modification(self, payment_psp_reference, action, body, idempotency_key, context):
        if not payment_psp_reference or not payment_psp_reference.isalnum():
            raise ValueError("a modification needs the payment's pspReference (letters and digits)")
        path = f"/payments/{payment_psp_reference}/{action}"
        return self._post(
            f"/payments/{{paymentPspReference}}/{action}",
            body,
            idempotency_key=idempotency_key,
            context=context,
            path=path,
        )

    def _post(self, endpoint, body, idempotency_key=None, context=None, timeout=None, path=None):
        """POST and return Adyen's JSON. `timeout` (connect, read) overrides the client's for this call;
        `path` is the endpoint with its parameters filled in, when it has some."""
        url = self.base_url + (path or endpoint)
        headers = {"X-API-Key": self._api_key, "Content-Type": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        record = {
            "endpoint": endpoint,
            "url": url,
            "idempotency_key": idempotency_key,
            "request_json": body,
            "status_code": None,
            "response_json": None,
            "error": None,
            "context": context or {},
        }
        if self.before_send is not None:
            self.before_send()
        started = time.monotonic()
        try:
            response = self.http.post(url, json=body, headers=headers, timeout=timeout or self.timeout)
        except requests.Timeout:
            record["error"] = "timeout"
            raise self._finish(record, started, AdyenUnavailable(f"{endpoint}: no answer within the timeout")) from None
        except requests.ConnectionError:
            record["error"] = "connection failed"
            raise self._finish(record, started, AdyenUnavailable(f"{endpoint}: could not connect to Adyen")) from None

        record["status_code"] = response.status_code
        try:
            payload = response.json()
        except ValueError:
            payload = None
        record["response_json"] = payload if isinstance(payload, dict) else None
        if response.status_code >= 400 or not isinstance(payload, dict):
            info = payload if isinstance(payload, dict) else {}
            error = AdyenApiError(
                status=response.status_code,
                error_code=info.get("errorCode"),
                message=info.get("message") or "response was not Adyen JSON",
                error_type=info.get("errorType"),
                psp_reference=info.get("pspReference") or response.headers.get("pspReference"),
                transient=response.headers.get("transient-error", "").strip().lower() == "true",
            )
            record["error"] = str(error)
            raise self._finish(record, started, error)
        if "pspReference" not in payload and response.headers.get("pspReference"):
            payload["pspReference"] = response.headers["pspReference"]
        self._finish(record, started)
        return payload

    def _finish(self, record, started, error=None):
        record["duration_ms"] = int((time.monotonic() - started) * 1000)
        log.info(
            "Adyen %s -> %s in %d ms%s",
            record["endpoint"],
            record["status_code"] or record["error"],
            record["duration_ms"],
            f" ({error})" if error else "",
        )
        if self.recorder:
            try:
                self.recorder(record)
            except Exception:  # recording must never change the payment's outcome
                log.exception("could not record the Adyen call to %s", record["endpoint"])
        return error
