"""The webhook HMAC scheme against Adyen's published vectors, and the ways a signature can be wrong.

Vectors 1-6 come from Adyen's own library tests (adyen-python-api-library test/UtilTest.py and
test/mocks/util/*.json, adyen-php-api-library HmacSignatureTest.php); vector 7 from Saleor's
Adyen plugin tests. Docs:
https://docs.adyen.com/development-resources/webhooks/secure-webhooks/verify-hmac-signatures
"""

import copy
import inspect

import pytest

from shop.adyen import signature
from shop.adyen.signature import is_valid, sign, signing_string
from shop.webhooks import parsing

KEY_1 = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
KEY_2 = "DFB1EB5485895CFA84146406857104ABB4CBCABDC8AAF103A624C8F6A3EAAB00"
KEY_SLASHES = "74F490DD33F7327BAECC88B2947C011FC02D014A473AAA33A8EC93E4DC069174"
KEY_SALEOR = "8E60EDDCA27F96095AD5882EF0AA3B05844864710EC089B7967F796AC44AE76E"


def adyen_item(psp, account, reference, value, currency, event_code="AUTHORISATION", success="true", **extra):
    item = {
        "pspReference": psp,
        "merchantAccountCode": account,
        "merchantReference": reference,
        "amount": {"value": value, "currency": currency},
        "eventCode": event_code,
        "success": success,
    }
    item.update(extra)
    return item


VECTOR_1_ITEM = adyen_item("7914073381342284", "TestMerchant", "TestPayment-1407325143704", 1130, "EUR")

# (name, key, item, signing string, expected hmacSignature)
VECTORS = [
    (
        "1 python-lib",
        KEY_1,
        VECTOR_1_ITEM,
        "7914073381342284::TestMerchant:TestPayment-1407325143704:1130:EUR:AUTHORISATION:true",
        "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0=",
    ),
    (
        "2 php-lib",
        KEY_2,
        VECTOR_1_ITEM,
        "7914073381342284::TestMerchant:TestPayment-1407325143704:1130:EUR:AUTHORISATION:true",
        "Ny9gS2veKo5E4w8/OL6xz1/wvT/hYkAXy1xNc/QvO4I=",
    ),
    (
        "3 backslashes",
        KEY_SLASHES,
        adyen_item("T7FD4VM4D3RZNN82", "AntoniStroinski", "\\\\slashes are fun", 1000, "EUR"),
        "T7FD4VM4D3RZNN82::AntoniStroinski:\\\\slashes are fun:1000:EUR:AUTHORISATION:true",
        "nIgT81gaB5oJpn2jPXupDq68iRo2wUlBsuYjtYfwKqo=",
    ),
    (
        "4 colon",
        KEY_SLASHES,
        adyen_item("M8NB66SBZSGLNK82", "AntoniStroinski", ":slashes are fun", 1000, "EUR"),
        "M8NB66SBZSGLNK82::AntoniStroinski::slashes are fun:1000:EUR:AUTHORISATION:true",
        "2EQYm7YJpKO4EtHSPu55SQTyWf8dkW5u2nD1tJFpViA=",
    ),
    (
        "5 forward slashes",
        KEY_SLASHES,
        adyen_item("X3GWNS6KJ8NKGK82", "AntoniStroinski", "//slashes are fun", 1000, "EUR"),
        "X3GWNS6KJ8NKGK82::AntoniStroinski://slashes are fun:1000:EUR:AUTHORISATION:true",
        "9Z0xdpG9Xi3zcmXv14t/BvMBut77O/Xq9D4CQXSDUi4=",
    ),
    (
        "6 mixed",
        KEY_SLASHES,
        adyen_item("ZVWN7D3WSMK2WN82", "AntoniStroinski", "\\:/\\/slashes are fun", 1000, "EUR"),
        "ZVWN7D3WSMK2WN82::AntoniStroinski:\\:/\\/slashes are fun:1000:EUR:AUTHORISATION:true",
        "CZErGCNQaSsxbaQfZaJlakqo7KPP+mIa8a+wx3yNs9A=",
    ),
    (
        "7 saleor success=false",
        KEY_SALEOR,
        adyen_item("test_AUTHORISATION_4", "SaleorPOS", "8313842560770001", 20150, "GBP", success="false"),
        "test_AUTHORISATION_4::SaleorPOS:8313842560770001:20150:GBP:AUTHORISATION:false",
        "D4bKVtjx5AlBL2eeQZIh1p7G1Lh6vWjzwkDlzC+PoMo=",
    ),
]


def signed(item, key, value=None):
    item = copy.deepcopy(item)
    item["additionalData"] = {"hmacSignature": value if value is not None else sign(item, key)}
    return item


@pytest.mark.parametrize("name,key,item,text,expected", VECTORS, ids=[v[0] for v in VECTORS])
def test_published_vectors(name, key, item, text, expected):
    assert signing_string(item) == text
    assert sign(item, key) == expected
    assert is_valid(signed(item, key, expected), [key])
    # The hex key is case-insensitive; the Customer Area shows upper case.
    assert is_valid(signed(item, key, expected), [key.lower()])


def test_vector_items_pass_the_body_checks():
    """The vectors are valid NotificationRequestItems for the parser too (it must not reject them)."""
    for _, _, item, _, _ in VECTORS:
        parsing.parse_item(item)


@pytest.mark.parametrize(
    "field,value",
    [
        ("amount", {"value": 1131, "currency": "EUR"}),
        ("amount", {"value": 1130, "currency": "KWD"}),
        ("success", "false"),
        ("eventCode", "OFFER_CLOSED"),
        ("merchantReference", "TestPayment-1407325143705"),
        ("merchantAccountCode", "OtherMerchant"),
        ("pspReference", "7914073381342285"),
        ("originalReference", "7914073381342284"),
    ],
)
def test_tampered_field_fails(field, value):
    item = signed(VECTOR_1_ITEM, KEY_1)
    item[field] = value
    assert not is_valid(item, [KEY_1])


def test_known_negative_signatures():
    # Computed with the same algorithm: amount 1131 and success=false must give other signatures.
    assert sign(dict(VECTOR_1_ITEM, amount={"value": 1131, "currency": "EUR"}), KEY_1) == (
        "2q/PBI8UVbrlKk2xOK6yLUee5G7juwQHxfujrnhkIwQ="
    )
    assert sign(dict(VECTOR_1_ITEM, success="false"), KEY_1) == "YrZbRrl8QM84UhV+yoHFXqoA2lrfLDJ6Grw0ypYASWE="


@pytest.mark.parametrize(
    "additional",
    [
        None,
        "not an object",
        [],
        {},
        {"hmacSignature": None},
        {"hmacSignature": ""},
        {"hmacSignature": 12345},
        {"hmacSignature": "not base64 !!!"},
        {"hmacSignature": "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0"},  # no padding
        {"hmacSignature": "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0=="},  # wrong length
        {"hmacSignature": "COQCMT/IZ4E3CZPVMY8ZTJQVL5HYJUIBRG8UU+ICWO0="},  # case matters in Base64
        {"hmacSignature": "\udcff\u0000"},  # not even encodable
    ],
)
def test_missing_or_malformed_signature_is_invalid_never_an_error(additional):
    item = copy.deepcopy(VECTOR_1_ITEM)
    if additional is not None:
        item["additionalData"] = additional
    assert is_valid(item, [KEY_1]) is False


def test_wrong_key_fails():
    assert not is_valid(signed(VECTOR_1_ITEM, KEY_1), [KEY_2])


@pytest.mark.parametrize("keys", [[], [None], [""], ["not hex"], ["ABC"]])
def test_no_usable_key_fails_without_error(keys):
    assert is_valid(signed(VECTOR_1_ITEM, KEY_1), keys) is False


def test_previous_key_accepted_during_rotation_then_removed():
    """Adyen: keep accepting the previous key for a while after generating a new one."""
    old_key, new_key = KEY_1, KEY_2
    from_old = signed(VECTOR_1_ITEM, old_key)
    assert is_valid(from_old, [new_key, old_key])
    assert not is_valid(from_old, [new_key, None])  # previous key removed
    assert is_valid(signed(VECTOR_1_ITEM, new_key), [new_key, old_key])


@pytest.mark.parametrize("original", ["absent", None, ""])
def test_original_reference_absent_null_or_empty_is_the_empty_string(original):
    item = copy.deepcopy(VECTOR_1_ITEM)
    if original != "absent":
        item["originalReference"] = original
    assert signing_string(item) == VECTORS[0][3]
    assert is_valid(signed(item, KEY_1, "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0="), [KEY_1])


def test_original_reference_is_signed_when_present():
    item = adyen_item("ZX9R4QWERT12AB34", "YOUR_MERCHANT_ACCOUNT", "ORDER-1001", 10500, "KWD", "REFUND")
    item["originalReference"] = "QFQTPCQ8HXSKGK82"
    assert signing_string(item) == (
        "ZX9R4QWERT12AB34:QFQTPCQ8HXSKGK82:YOUR_MERCHANT_ACCOUNT:ORDER-1001:10500:KWD:REFUND:true"
    )


def test_validation_does_not_mutate_the_item():
    item = signed(VECTOR_1_ITEM, KEY_1)
    before = copy.deepcopy(item)
    assert is_valid(item, [KEY_1])
    assert item == before


def test_comparison_is_constant_time():
    assert "hmac.compare_digest" in inspect.getsource(signature._matches)
    from shop.webhooks import receiver

    assert "hmac.compare_digest" in inspect.getsource(receiver._credentials_match)
