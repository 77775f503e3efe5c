"""Send a customer (or a JSON array of customers) to the churn service and say who gets a promo email.

python predict_test.py [--url URL] [--api-key KEY] [FILE]

The URL is by default $CHURN_URL (the service's address, e.g. http://localhost:9696, or its /predict endpoint),
else http://localhost:$PORT/predict, else http://localhost:9696/predict.
The key may also come from $CHURN_API_KEY; it is sent as `Authorization: Bearer KEY`.
Exit status: 0 answered, 1 the service answered an HTTP error, 2 the file or the service could not be reached.

It needs only what serving needs (the standard library and churn.model.schema), so it runs right after `make serve`.
"""

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from churn.model.schema import SAMPLE_CUSTOMER
from churn.settings import Settings


def default_url(environ=None) -> str:
    """$CHURN_URL (with /predict added when it names only the service), else localhost on $PORT, else on 9696."""
    url = Settings.one_from_env("url", environ) or f"http://localhost:{Settings.one_from_env('port', environ)}"
    return url.rstrip("/") + "/predict" if urlsplit(url).path in ("", "/") else url


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=default_url(), help="the /predict endpoint (default: %(default)s)")
    parser.add_argument(
        "--api-key",
        default=Settings.one_from_env("client_api_key"),
        help="the service's API key (default: $CHURN_API_KEY)",
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


def post(url: str, body, api_key: str | None) -> tuple[int, bytes]:
    """The status and body of the answer, an HTTP error's included; OSError when the service cannot be reached."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:  # an answer, only not a 2xx one
        with e:
            return e.code, e.read()


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        customers = json.loads(Path(args.file).read_text()) if args.file else SAMPLE_CUSTOMER
    except (OSError, ValueError) as e:
        print(f"error: cannot read customers from {args.file}: {e}", file=sys.stderr)
        return 2
    try:
        status, body = post(args.url, customers, args.api_key)
    except (OSError, ValueError) as e:  # URLError, a refused or reset connection, a timeout; a malformed URL
        print(f"error: cannot reach {args.url}: {getattr(e, 'reason', None) or e}", file=sys.stderr)
        return 2
    try:
        answer = json.loads(body)
    except ValueError:
        answer = body.decode(errors="replace")
    if not 200 <= status < 300:
        print(f"error: {args.url} answered HTTP {status}:", file=sys.stderr)
        print(json.dumps(answer, indent=2), file=sys.stderr)
        if status == 401:
            given = "the key given was refused" if args.api_key else "no key was given"
            print(f"hint: the service needs an API key ({given}): pass --api-key or set CHURN_API_KEY", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2))
    print("\n".join(decisions(answer)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
