"""The checkout form: the shopper's name, email and Kuwaiti phone number.

Each check has a message that tells the shopper what to type, not what went wrong inside.
Labels and messages are lazy strings: translated when shown, into the page's language.
After validation `form.phone.data` holds the number in E.164 (+965XXXXXXXX), the form Adyen's
`telephoneNumber` and the order record expect.
"""

import re
import unicodedata

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, StringField, TelField
from wtforms.validators import Email, InputRequired, Length, StopValidation, ValidationError

NAME_MAX = 80
EMAIL_MAX = 256
PHONE_MESSAGE = _l("Enter a Kuwaiti phone number: 8 digits, e.g. 5000 0000.")
PHONE_DIGITS_MESSAGE = _l("Type the phone number with the digits 0-9 or ٠-٩.")

# Kuwaiti numbers are 8 digits; the first digit says the kind: 2 landline, 4/5/6/9 mobile and others.
# ASCII digits only: Python's \d would also match Devanagari, Thai and every other script's digits.
_LOCAL_NUMBER = re.compile(r"^[24569][0-9]{7}$")
# What people put between digits: spaces, hyphens, dots, brackets.
_SEPARATORS = re.compile(r"[\s\-.()\u00a0]")
# Shoppers on an Arabic keyboard type Arabic-Indic (٠-٩) or Eastern Arabic-Indic (۰-۹) digits.
_ARABIC_DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹", "01234567890123456789")
_NAME_PUNCTUATION = set(" -'’")


def normalise_kuwait_phone(raw):
    """'+965 5000 0000', '00965-50000000', '965 50000000', '5000 0000' -> '+96550000000'; None if not Kuwaiti.

    ASCII, Arabic-Indic (٠-٩) and Eastern Arabic-Indic (۰-۹) digits are accepted; any other script's
    digits are not (Adyen's telephoneNumber takes ASCII digits)."""
    if not isinstance(raw, str) or len(raw) > 40:
        return None
    digits = _SEPARATORS.sub("", raw.translate(_ARABIC_DIGITS))
    if not digits.isascii():
        return None
    if digits.startswith("+965"):
        digits = digits[4:]
    elif digits.startswith("00965"):
        digits = digits[5:]
    elif digits.startswith("965") and len(digits) == 11:
        # Only with 11 digits: 8-digit numbers that start with 965 are valid local numbers.
        digits = digits[3:]
    if not _LOCAL_NUMBER.match(digits):
        return None
    return "+965" + digits


def _tidy(value):
    """Trim, and collapse runs of spaces inside (a name pasted from elsewhere)."""
    if isinstance(value, str):
        return " ".join(value.split())
    return value


def _strip(value):
    return value.strip() if isinstance(value, str) else value


def _name_characters(message):
    def check(form, field):
        # Unicode letters (L*) and combining marks (M*: Arabic short vowels), so Arabic names pass.
        has_letter = False
        for char in field.data:
            category = unicodedata.category(char)
            if category.startswith("L"):
                has_letter = True
            elif not (category.startswith("M") or char in _NAME_PUNCTUATION):
                raise ValidationError(message)
        if not has_letter:
            raise ValidationError(message)

    return check


def _required_after_trim(message):
    # InputRequired looks at the raw input, so "   " would pass it; check the trimmed value too,
    # and stop there: "can only contain letters" would be noise on an empty field.
    def check(form, field):
        if not field.data:
            raise StopValidation(message)

    return check


def _name_field(label, autocomplete, required, too_long, characters):
    # Whole sentences per field, not a label pasted into one: other languages word each differently.
    return StringField(
        label,
        filters=[_tidy],
        validators=[
            InputRequired(required),
            _required_after_trim(required),
            Length(max=NAME_MAX, message=too_long),
            _name_characters(characters),
        ],
        render_kw={"maxlength": NAME_MAX, "autocomplete": autocomplete},
    )


def has_foreign_digits(raw):
    """True when `raw` has digits of a script other than ASCII and the two Arabic ones."""
    return any(unicodedata.category(char) == "Nd" and not char.isascii() for char in raw.translate(_ARABIC_DIGITS))


def kuwait_phone(form, field):
    e164 = normalise_kuwait_phone(field.data)
    if e164 is None:
        raise ValidationError(PHONE_DIGITS_MESSAGE if has_foreign_digits(field.data) else PHONE_MESSAGE)
    field.data = e164


class CheckoutForm(FlaskForm):
    first_name = _name_field(
        _l("First name"),
        "given-name",
        required=_l("Enter your first name."),
        too_long=_l("Your first name can be at most %(max)d characters.", max=NAME_MAX),
        characters=_l("Your first name can only contain letters, spaces, hyphens and apostrophes."),
    )
    last_name = _name_field(
        _l("Last name"),
        "family-name",
        required=_l("Enter your last name."),
        too_long=_l("Your last name can be at most %(max)d characters.", max=NAME_MAX),
        characters=_l("Your last name can only contain letters, spaces, hyphens and apostrophes."),
    )
    email = EmailField(
        _l("Email"),
        filters=[_strip],
        validators=[
            InputRequired(_l("Enter your email address.")),
            _required_after_trim(_l("Enter your email address.")),
            Length(max=EMAIL_MAX, message=_l("Your email address can be at most %(max)d characters.", max=EMAIL_MAX)),
            Email(_l("Enter a valid email address, e.g. name@example.com."), check_deliverability=False),
        ],
        render_kw={"maxlength": EMAIL_MAX, "autocomplete": "email"},
    )
    phone = TelField(
        _l("Phone"),
        filters=[_strip],
        validators=[
            InputRequired(_l("Enter your phone number.")),
            _required_after_trim(_l("Enter your phone number.")),
            kuwait_phone,
        ],
        render_kw={"autocomplete": "tel", "inputmode": "tel"},
    )
    # One checkout form session makes one order; the view compares this to the session.
    checkout_key = HiddenField()

    @property
    def phone_e164(self):
        """The phone number as +965XXXXXXXX, or None if it is not a valid Kuwaiti number."""
        return normalise_kuwait_phone(self.phone.data)
