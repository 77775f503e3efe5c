"""Send a customer (or a JSON array of customers) to the churn service and say who gets a promo email.

python predict_test.py [--url http://localhost:9696/predict] [FILE]
"""

import argparse
import json
import sys
from pathlib import Path

import requests

from churn.schema import SAMPLE_CUSTOMER


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://localhost:9696/predict", help="the /predict endpoint")
    parser.add_argument("file", nargs="?", help="JSON file with a customer or an array of them (default: the sample)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        customers = json.loads(Path(args.file).read_text()) if args.file else SAMPLE_CUSTOMER
    except (OSError, ValueError) as e:
        print(f"error: cannot read customers from {args.file}: {e}", file=sys.stderr)
        return 2
    try:
        response = requests.post(args.url, json=customers, timeout=30)
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
        return 1
    print(json.dumps(answer, indent=2))
    if isinstance(customers, dict):
        customers, answer = [customers], [answer]
    for index, (customer, result) in enumerate(zip(customers, answer, strict=True)):
        name = customer.get("customerID", customer.get("customerid", f"customer {index}"))
        decision = "sending promo email to" if result["churn"] else "not sending promo email to"
        print(f"{decision} {name} (churn probability {result['churn_probability']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
