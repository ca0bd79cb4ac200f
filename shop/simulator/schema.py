"""Reading and checking Checkout API requests as Adyen does: the JSON itself, then the request schema.

The schemas are Adyen's own (checkout_v71_schemas.json, taken from the v71 OpenAPI spec by
scripts/extract_checkout_schemas.py; MIT licence inside), so what the spec forbids is refused here
as at Adyen, and what it allows is never refused. OpenAPI 3.1 schemas are JSON Schema 2020-12.

What Adyen answers, and how sure that is:
- JSON it cannot read: 400, errorCode 702 "Unexpected input: …" (the spec's own 400 example).
- A field the schema does not have: 400, 702 "Structure of PaymentRequest contains the following
  unknown fields: [x]" (seen in Adyen/adyen-magento2#3045, Adyen/adyen-web#1978, and others).
- A value of the wrong JSON type, or outside an enum, or a number beyond its int32/int64: 400, 702
  "Unexpected input: …". Unconfirmed: Adyen's parser fails on these before any validation (as it
  does on unknown fields), and 702 is its documented code for input it cannot read.
- A value of the right type that breaks a constraint (too long, a pattern, a range) or a missing
  required field: 422, with Adyen's code for that field where one is known (100, 130, 137, 14_006,
  14_018, 14_030), else the generic 000 (documented as a code "with several possible messages").
"""

import json
import re
from functools import cache
from pathlib import Path
from typing import NamedTuple

from jsonschema import Draft202012Validator, FormatChecker

SCHEMAS_PATH = Path(__file__).with_name("checkout_v71_schemas.json")

# The deepest valid request is 5 levels deep (a PaymentRequest); deeper JSON cannot be valid.
# (973 levels used to exhaust Python's recursion: a 500.)
MAX_NESTING = 64
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
# Checked before int() is called: Python refuses to convert integer literals of over 4,300 digits.
MAX_INTEGER_DIGITS = len(str(2**63))
_SURROGATE_OR_NUL = re.compile("[\ud800-\udfff\x00]")

# Errors Adyen's parser raises before validation: 400 702.
_UNREADABLE = {"additionalProperties", "type", "enum", "const", "format"}


class Violation(NamedTuple):
    """Adyen's answer to a request it refuses: HTTP status, errorCode, message."""

    status: int
    error_code: str
    message: str


class Unreadable(Exception):
    """The body is not JSON that Adyen reads: 400 702 "Unexpected input"."""

    def __init__(self, detail):
        super().__init__(detail)
        self.violation = Violation(400, "702", f"Unexpected input: {detail}")


# Adyen's code and message for a missing required field, where known (the rest: 000).
_MISSING = {
    ("PaymentRequest", "amount"): ("100", "Required object 'amount' is not provided"),
    ("PaymentRequest", "reference"): ("130", "Reference Missing"),
    ("PaymentRequest", "paymentMethod"): ("14_006", "Required object 'paymentMethod' is not provided."),
    ("PaymentRequest", "returnUrl"): ("14_030", "Required field 'returnUrl' is not provided."),
    ("PaymentDetailsRequest", "details"): ("14_018", "Required field 'details' is not provided."),
    # A refund without amount (seen in Adyen/adyen-ruby-api-library#168).
    ("PaymentRefundRequest", "amount"): ("100", "Required object 'amount' is not provided."),
}
# A missing merchantAccount is answered by the account check: 403 901, as for a wrong one.
_LEFT_TO_THE_HANDLER = {"merchantAccount"}


@cache
def document():
    return json.loads(SCHEMAS_PATH.read_text(encoding="utf-8"))


def request_schema(endpoint):
    return document()["operations"][endpoint]["request"]


def _int_format(bounds):
    return lambda value: not isinstance(value, int) or isinstance(value, bool) or bounds[0] <= value <= bounds[1]


_FORMATS = FormatChecker(formats=())
_FORMATS.checks("int32")(_int_format(INT32))
_FORMATS.checks("int64")(_int_format(INT64))


@cache
def validator(name):
    """A Draft 2020-12 validator for one component schema, its $refs resolved within the file."""
    root = {"$schema": document()["jsonSchemaDialect"], "components": document()["components"]}
    return Draft202012Validator(dict(root, **{"$ref": f"#/components/schemas/{name}"}), format_checker=_FORMATS)


# Reading the body ------------------------------------------------------------------------------


def parse(raw):
    """The request body as a dict; raises Unreadable for anything Adyen could not read as a JSON object."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable("the body is not UTF-8") from None
    try:
        body = json.loads(text, parse_int=_integer, parse_constant=_not_json)
    except json.JSONDecodeError as error:
        found = error.doc[error.pos : error.pos + 1] or "end of input"
        raise Unreadable(f"{found!r} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise Unreadable(f"JSON nested more than {MAX_NESTING} levels deep") from None
    if not isinstance(body, dict):
        raise Unreadable("expected a JSON object")
    _check_values(body)
    return body


def _integer(literal):
    if len(literal.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise Unreadable(f"numeric value ({literal[:24]}…) out of range of long")
    value = int(literal)
    if not INT64[0] <= value <= INT64[1]:
        raise Unreadable(f"numeric value ({literal}) out of range of long ({INT64[0]} - {INT64[1]})")
    return value


def _not_json(name):
    raise Unreadable(f"{name!r} is not a JSON value")


def _check_values(body):
    """Not nested deeper than any valid request can be (walked without recursion), and no lone
    UTF-16 surrogate ("\\ud800" alone is not a character) or NUL in a key or value: neither can be
    stored as text (UTF-8, PostgreSQL)."""
    waiting = [(body, 1)]
    while waiting:
        node, depth = waiting.pop()
        if depth > MAX_NESTING:
            raise Unreadable(f"JSON nested more than {MAX_NESTING} levels deep")
        for key, value in node.items() if isinstance(node, dict) else enumerate(node):
            for text in (key, value):
                if isinstance(text, str) and _SURROGATE_OR_NUL.search(text):
                    raise Unreadable("a string holds a lone UTF-16 surrogate or a NUL character")
            if isinstance(value, (dict, list)):
                waiting.append((value, depth + 1))


# Checking it against the schema -------------------------------------------------------------------


def violations(endpoint, body):
    """What is wrong with a parsed request body, Adyen's way: unreadable parts (400) first, then
    constraint violations (422); [] when the spec allows it."""
    name = request_schema(endpoint)
    found = sorted(_violations(name, body, ()), key=lambda item: (item[0], item[1]))
    return [violation for _, _, violation in found]


def _violations(name, instance, prefix):
    for error in validator(name).iter_errors(instance):
        path = prefix + tuple(error.absolute_path)
        if error.validator == "oneOf":
            yield from _one_of(error, path)
            continue
        violation = _describe(name, error, path)
        if violation is not None:
            yield (0 if violation.status == 400 else 1, _dotted(path), violation)


def _one_of(error, path):
    """paymentMethod is one of 58 *Details schemas, told apart by `type` (Adyen's discriminator):
    the one whose type enum lists it is checked; an unknown type is the handler's to answer
    (Adyen: 905_1, no acquirer for that txvariant)."""
    instance = error.instance
    if not isinstance(instance, dict):
        yield 0, _dotted(path), Unreadable(f"{_dotted(path)}: expected an object").violation
        return
    if "type" not in instance:
        code, message = _MISSING.get(("PaymentRequest", path[-1]), ("000", f"Required field '{_dotted(path)}.type'"))
        yield 1, _dotted(path), Violation(422, code, message)
        return
    branches = [_ref_name(branch) for branch in error.schema["oneOf"]]
    matching = [branch for branch in branches if instance["type"] in _type_enum(branch)]
    if matching:
        yield from _violations(matching[0], instance, path)


def _describe(name, error, path):
    field = _dotted(path)
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        owner = _schema_title(error.schema) or name
        return Violation(
            400, "702", f"Structure of {owner} contains the following unknown fields: [{', '.join(unknown)}]"
        )
    if error.validator in _UNREADABLE:
        return Unreadable(f"{field or 'body'}: {_short(error)}").violation
    if path[:1] == ("amount",):
        return Violation(422, "137", "Invalid amount specified")
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        if not path and missing in _LEFT_TO_THE_HANDLER:
            return None
        owner = _schema_title(error.schema) or name
        code, message = _MISSING.get(
            (owner, missing), ("000", f"Required field '{_join(field, missing)}' is not provided.")
        )
        return Violation(422, code, message)
    return Violation(422, "000", f"Invalid field '{field}': {_short(error)}")


def _short(error):
    """jsonschema's message without the (possibly 20,000-character) value it quotes."""
    if error.validator in ("maxLength", "minLength"):
        return f"{'at most' if error.validator == 'maxLength' else 'at least'} {error.validator_value} characters"
    if error.validator == "type":
        return f"expected {error.validator_value}, got {type(error.instance).__name__}"
    if error.validator == "enum":
        return f"not one of {', '.join(map(str, error.validator_value))}"
    if error.validator == "format":
        return f"out of range of {error.validator_value}"
    if error.validator == "pattern":
        return f"does not match {error.validator_value}"
    return error.message[:200]


def _dotted(path):
    return ".".join(str(part) for part in path)


def _join(field, name):
    return f"{field}.{name}" if field else name


def _ref_name(schema):
    return schema["$ref"].rsplit("/", 1)[-1]


def _type_enum(name):
    return document()["components"]["schemas"][name].get("properties", {}).get("type", {}).get("enum", ())


@cache
def _titles():
    return {id(schema): title for title, schema in document()["components"]["schemas"].items()}


def _schema_title(schema):
    """The component name of a subschema (as Adyen names it in "Structure of … contains …")."""
    return _titles().get(id(schema))
