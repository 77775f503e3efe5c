"""Send a customer (or a JSON array of customers) to the churn service and say who gets a promo email.

python predict_test.py [--url http://localhost:9696/predict] [--api-key KEY] [FILE]

The key may also come from $CHURN_API_KEY; it is sent as `Authorization: Bearer KEY`.
Exit status: 0 answered, 1 the service answered an HTTP error, 2 the file or the service could not be reached.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import requests

from churn.schema import SAMPLE_CUSTOMER


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://localhost:9696/predict", help="the /predict endpoint")
    parser.add_argument(
        "--api-key", default=os.environ.get("CHURN_API_KEY"), help="the service's API key (default: $CHURN_API_KEY)"
    )
    parser.add_argument("file", nargs="?", help="JSON file with a customer or an array of them (default: the sample)")
    return parser.parse_args(argv)


def decisions(answer: dict | list) -> list[str]:
    """One line per answer; in a batch each is named by the customerID the service echoed, else its position."""
    batch = isinstance(answer, list)
    lines = []
    for index, result in enumerate(answer if batch else [answer]):
        name = result.get("customerID") or (f"customer {index}" if batch else "this customer")
        decision = "sending promo email to" if result["churn"] else "not sending promo email to"
        lines.append(f"{decision} {name} (churn probability {result['churn_probability']:.3f})")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        customers = json.loads(Path(args.file).read_text()) if args.file else SAMPLE_CUSTOMER
    except (OSError, ValueError) as e:
        print(f"error: cannot read customers from {args.file}: {e}", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    try:
        response = requests.post(args.url, json=customers, headers=headers, timeout=30)
    except requests.RequestException as e:
        print(f"error: cannot reach {args.url}: {e}", file=sys.stderr)
        return 2
    try:
        answer = response.json()
    except ValueError:
        answer = response.text
    if not response.ok:
        print(f"error: {args.url} answered HTTP {response.status_code}:", file=sys.stderr)
        print(json.dumps(answer, indent=2), file=sys.stderr)
        if response.status_code == 401:
            given = "the key given was refused" if args.api_key else "no key was given"
            print(f"hint: the service needs an API key ({given}): pass --api-key or set CHURN_API_KEY", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2))
    print("\n".join(decisions(answer)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
