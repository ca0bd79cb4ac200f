"""Copy the examples of Adyen's Webhooks spec into the tests' fixture file.

    .venv/bin/python scripts/extract_webhook_examples.py path/to/Webhooks-v1.json --commit <sha>

Reads `components.examples` of Webhooks-v1.json (github.com/Adyen/adyen-openapi, json/, MIT
licensed) and writes them, unchanged and sorted by name, to tests/fixtures/webhooks-v1-examples.json
with where they came from. tests/test_webhook_examples.py signs and posts every one. Run it again
when the spec is updated, and update the commit in tests/fixtures/README.md.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "webhooks-v1-examples.json"
log = logging.getLogger("extract_webhook_examples")


def extract(spec):
    """{name: {"summary", "value"}} of every example: the Standard notifications (notificationItems)
    and the few "other webhooks" (a type, an environment and data)."""
    return dict(sorted(spec["components"]["examples"].items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="Webhooks-v1.json from Adyen/adyen-openapi")
    parser.add_argument("--commit", required=True, help="the adyen-openapi commit the spec is from")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    spec = json.loads(args.spec.read_text(encoding="utf-8"))
    examples = extract(spec)
    fixture = {
        "source": f"https://github.com/Adyen/adyen-openapi/blob/{args.commit}/json/Webhooks-v1.json",
        "licence": "MIT, Copyright (c) 2017 Adyen bv: tests/fixtures/LICENSE-adyen-openapi",
        "what": "components.examples, unchanged (scripts/extract_webhook_examples.py)",
        "examples": examples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("%d examples written to %s", len(examples), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
