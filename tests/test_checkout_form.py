"""The checkout form's checks and messages, and Kuwaiti phone number normalisation."""

import pytest

from shop.checkout.forms import PHONE_DIGITS_MESSAGE, PHONE_MESSAGE, CheckoutForm, normalise_kuwait_phone

VALID = {
    "first_name": "Fatima",
    "last_name": "Al-Sabah",
    "email": "fatima@example.com",
    "phone": "5000 0000",
    "checkout_key": "key-123",
}


def submit(app, **changes):
    """Validate the form with VALID data changed by `changes` (None leaves a field out)."""
    data = {k: v for k, v in dict(VALID, **changes).items() if v is not None}
    with app.test_request_context("/checkout", method="POST", data=data):
        form = CheckoutForm()
        form.validate()
        return form


def test_valid_form_passes_and_normalises(app):
    form = submit(app)
    assert form.errors == {}
    assert form.first_name.data == "Fatima"
    assert form.last_name.data == "Al-Sabah"
    assert form.email.data == "fatima@example.com"
    assert form.phone.data == "+96550000000"
    assert form.phone_e164 == "+96550000000"
    assert form.checkout_key.data == "key-123"


def test_fields_are_trimmed(app):
    form = submit(
        app, first_name="  Fatima  ", last_name=" Al  Sabah ", email=" fatima@example.com ", phone=" 5000 0000 "
    )
    assert form.errors == {}
    assert form.first_name.data == "Fatima"
    assert form.last_name.data == "Al Sabah"
    assert form.email.data == "fatima@example.com"
    assert form.phone.data == "+96550000000"


@pytest.mark.parametrize(
    "first, last",
    [
        ("فاطمة", "الصباح"),  # Arabic
        ("مُحَمَّد", "العَلي"),  # Arabic with short vowels (combining marks)
        ("Anne-Marie", "O'Neil"),
        ("Nour", "D’Souza"),  # typographic apostrophe
        ("José", "Müller Ñúñez"),
    ],
)
def test_names_in_many_scripts_pass(app, first, last):
    form = submit(app, first_name=first, last_name=last)
    assert form.errors == {}


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("first_name", None, "Enter your first name."),
        ("first_name", "", "Enter your first name."),
        ("first_name", "   ", "Enter your first name."),
        ("first_name", "A" * 81, "Your first name can be at most 80 characters."),
        ("first_name", "R2D2", "Your first name can only contain letters, spaces, hyphens and apostrophes."),
        ("first_name", "<script>", "Your first name can only contain letters, spaces, hyphens and apostrophes."),
        ("first_name", "--", "Your first name can only contain letters, spaces, hyphens and apostrophes."),
        ("first_name", "محمد٣", "Your first name can only contain letters, spaces, hyphens and apostrophes."),
        ("last_name", None, "Enter your last name."),
        ("last_name", " ", "Enter your last name."),
        ("last_name", "B" * 81, "Your last name can be at most 80 characters."),
        ("last_name", "Smith@", "Your last name can only contain letters, spaces, hyphens and apostrophes."),
        ("email", None, "Enter your email address."),
        ("email", "  ", "Enter your email address."),
        ("email", "fatima", "Enter a valid email address, e.g. name@example.com."),
        ("email", "fatima@", "Enter a valid email address, e.g. name@example.com."),
        ("email", "fatima@example", "Enter a valid email address, e.g. name@example.com."),
        ("email", "a b@example.com", "Enter a valid email address, e.g. name@example.com."),
        ("email", "a" * 250 + "@example.com", "Your email address can be at most 256 characters."),
        ("phone", None, "Enter your phone number."),
        ("phone", "   ", "Enter your phone number."),
        ("phone", "1234 5678", PHONE_MESSAGE),  # starts with 1
        ("phone", "3000 0000", PHONE_MESSAGE),  # starts with 3
        ("phone", "5000 000", PHONE_MESSAGE),  # 7 digits
        ("phone", "5000 00000", PHONE_MESSAGE),  # 9 digits
        ("phone", "+966 5000 0000", PHONE_MESSAGE),  # Saudi country code
        ("phone", "+965 1000 0000", PHONE_MESSAGE),
        ("phone", "phone me", PHONE_MESSAGE),
        ("phone", "5000+0000", PHONE_MESSAGE),
        ("phone", "5" * 200, PHONE_MESSAGE),
    ],
)
def test_each_error_has_a_clear_message(app, field, value, message):
    form = submit(app, **{field: value})
    assert list(form.errors) == [field]
    assert form.errors[field][0] == message


def test_email_check_does_not_need_dns(app):
    # A domain that surely has no mail server still passes: deliverability is not checked.
    form = submit(app, email="someone@no-mx-record-here-knet-demo.com")
    assert form.errors == {}


def test_invalid_phone_is_not_replaced(app):
    form = submit(app, phone="1234")
    assert form.phone.data == "1234"
    assert form.phone_e164 is None


@pytest.mark.parametrize(
    "raw",
    [
        "50000000",
        "5000 0000",
        "5000-0000",
        "+965 5000 0000",
        "+96550000000",
        "00965-50000000",
        "00965 5000 0000",
        "965 50000000",
        "96550000000",
        "(+965) 5000-0000",
        "٥٠٠٠ ٠٠٠٠",  # Arabic-Indic digits
        "+۹۶۵ ۵۰۰۰ ۰۰۰۰",  # Eastern Arabic-Indic digits
    ],
)
def test_phone_formats_normalise_to_e164(raw):
    assert normalise_kuwait_phone(raw) == "+96550000000"


@pytest.mark.parametrize(
    "raw, e164",
    [
        ("2222 3333", "+96522223333"),  # landline
        ("4000 1234", "+96540001234"),
        ("6000 1234", "+96560001234"),
        ("9000 1234", "+96590001234"),
        ("96512345", "+96596512345"),  # 8 digits that start with 965: a local number, not a country code
        ("+965 9651 2345", "+96596512345"),
    ],
)
def test_every_kuwaiti_prefix_is_accepted(raw, e164):
    assert normalise_kuwait_phone(raw) == e164


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "1000 0000",
        "7000 0000",
        "8000 0000",
        "0000 0000",
        "965",
        "+965",
        "+44 20 7946 0000",
        "0096 55 000 0000 0",
        "5000 0000 ext 1",
        "+965 +5000 0000",
        "965 5000 000",
    ],
)
def test_non_kuwaiti_numbers_are_refused(raw):
    assert normalise_kuwait_phone(raw) is None


def test_checkout_key_is_a_hidden_field(app):
    with app.test_request_context("/checkout"):
        form = CheckoutForm()
        assert 'type="hidden"' in str(form.checkout_key())


@pytest.mark.parametrize(
    "raw",
    [
        "+9655०००००००",  # Devanagari digits after the country code
        "५००० ००००",  # Devanagari
        "５０００ ００００",  # full-width
        "๕๐๐๐ ๐๐๐๐",  # Thai
    ],
)
def test_digits_of_other_scripts_are_refused_with_a_message_that_says_so(app, raw):
    assert normalise_kuwait_phone(raw) is None
    form = submit(app, phone=raw)
    assert form.errors["phone"] == [PHONE_DIGITS_MESSAGE]
    assert form.phone.data == raw  # shown back as typed, not half-translated


def test_mixed_arabic_and_ascii_digits_are_one_number(app):
    form = submit(app, phone="٥٠٠٠ 0000")
    assert form.errors == {}
    assert form.phone.data == "+96550000000"
