"""The Prometheus rules of monitoring/prometheus/rules.yml: drift (PSI) per feature and of the score against the
training's reference, the share of refused requests, and the alerts on them and on errors, latency and traffic; and
those of monitoring/challenger.rules.yml: the shadow challenger's scores against the champion's over a day.

The YAML is written from here, `python -m churn.monitor.rules > monitoring/prometheus/rules.yml` and
`python -m churn.monitor.rules challenger > monitoring/challenger.rules.yml` (a test checks that the files agree), so
that each PromQL pattern and each threshold is written once, though the files repeat them.

PSI over a feature's bins is Σ (live − reference) · ln(live / reference), on shares. A zero share is replaced as
evidently's get_binned_data replaces it, in each distribution on its own: by 0.0001, or by a millionth of the
distribution's smallest non-zero share when that is 0.0001 or less. Like evidently's categorical bins, a bin empty on
both sides adds nothing. Live shares come from increase() over the window: Prometheus extrapolates each count by the
same factor when its bins were scraped together, so a share, a ratio of two of them, is exact.
"""

import sys

import yaml

WINDOWS = ("1h", "1d")
# PSI: under 0.1 no change worth a look, 0.1 to 0.25 some, above 0.25 a distribution that has moved.
PSI_WARNING = 0.2
PSI_CRITICAL = 0.25
# A PSI on fewer customers is mostly noise: 10 bins of 500 customers under no drift still give about 0.02.
MIN_CUSTOMERS = 500
REFUSED_SHARE = 0.05
MIN_REQUESTS = 100  # in an hour, before a refused share means anything
SLOW_SECONDS = 0.5  # the 99th percentile of /predict and /explain
ZERO_SHARE = 0.0001  # evidently's replacement of a zero share, unless the smallest non-zero share is below it
CUSTOMER_ENDPOINTS = '"/predict|/explain"'


class Binned:
    """Customers counted per bin (churn_<name>_customers_total) against the training's shares
    (churn_<name>_reference_share), per `group` label (feature), or as one distribution (the score)."""

    def __init__(self, name: str, group: tuple[str, ...]):
        self.name, self.group = name, group
        self.by = f"({', '.join(group)})"
        self.bins = f"({', '.join((*group, 'bin'))})"
        self.reference = f"churn:{name}_reference_share"

    def filled(self, share: str) -> str:
        """share with each zero replaced as evidently does, per distribution."""
        smallest = f"min by {self.by} ({share} > 0)"
        replacement = f"({smallest} > {ZERO_SHARE}) * 0 + {ZERO_SHARE}\n    or\n    {smallest} / 1e6"
        zeros = f"({share} == 0) + on {self.by} group_left ()"
        return f"{share} > 0\nor on {self.bins}\n  {zeros}\n  (\n    {replacement}\n  )"

    def reference_rules(self) -> list[dict]:
        # In multiprocess mode a gauge may carry a pid label per worker, each with the same share.
        return [
            record(self.reference, f"max by {self.bins} (churn_{self.name}_reference_share)"),
            record(f"{self.reference}:filled", self.filled(self.reference)),
        ]

    def window_rules(self, window: str) -> list[dict]:
        counts, share = f"churn:{self.name}_customers:increase{window}", f"churn:{self.name}_share:{window}"
        filled = f"churn:{self.name}_share_filled:{window}"
        live = f"sum by {self.bins} (increase(churn_{self.name}_customers_total[{window}]))"
        both = f"({share} > 0 or on {self.bins} {self.reference} > 0)"
        reference = f"on {self.bins} {self.reference}:filled"
        terms = f"    ({filled} - {reference})\n    * ln({filled} / {reference})"
        return [
            # A bin the reference has and no live series has yet counts 0.
            record(counts, f"{live}\nor on {self.bins}\n0 * {self.reference}"),
            record(share, f"{counts}\n/ on {self.by} group_left ()\n(sum by {self.by} ({counts}) > 0)"),
            record(filled, self.filled(share)),
            record(
                f"churn:{self.name}_psi:{window}",
                f"sum by {self.by} (\n  (\n{terms}\n  )\n  and on {self.bins}\n  {both}\n)",
            ),
        ]

    def customers(self, window: str) -> str:
        return f"sum by {self.by} (churn:{self.name}_customers:increase{window})"


FEATURES = Binned("feature", ("feature",))
SCORE = Binned("score", ())
# Both models' scores of the customers the challenger scored, in tenths: two live distributions, no reference.
CHALLENGER = Binned("challenger", ("model",))


def record(name: str, expr: str) -> dict:
    return {"record": name, "expr": expr}


def alert(name: str, expr: str, for_: str, severity: str, summary: str, runbook: str, **labels) -> dict:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, **labels},
        "annotations": {"summary": summary, "runbook": runbook},
    }


def drift_alert(binned: Binned, name: str, threshold: float, severity: str, what: str, runbook: str) -> dict:
    psi = f"churn:{binned.name}_psi:1d"
    expr = f"{psi} > {threshold}\nand on {binned.by}\n{binned.customers('1d')} >= {MIN_CUSTOMERS}"
    summary = f'{what}: PSI {{{{ $value | printf "%.2f" }}}} over the last day, above {threshold}'
    return alert(name, expr, "15m", severity, summary, runbook)


def request_rate(selector: str, window: str) -> str:
    return f"sum(rate(churn_http_requests_total{{{selector}}}[{window}]))"


CUSTOMER_REQUESTS = f"endpoint=~{CUSTOMER_ENDPOINTS}"
ALL_REQUESTS = request_rate(CUSTOMER_REQUESTS, "1h")


def recording_rules() -> list[dict]:
    # No 4xx series until the first refusal: none yet is a share of 0.
    refused_rate = request_rate(f'{CUSTOMER_REQUESTS},status=~"4.."', "1h")
    refused = f"({refused_rate} or vector(0))"
    recording = [*FEATURES.reference_rules(), *SCORE.reference_rules()]
    for window in WINDOWS:
        recording += FEATURES.window_rules(window) + SCORE.window_rules(window)
    return recording + [
        record("churn:refused_share:1h", f"{refused}\n/\n({ALL_REQUESTS} > 0)"),
        record("churn:refused_values:rate1h", "sum by (field) (rate(churn_refused_values_total[1h]))"),
    ]


def alert_rules() -> list[dict]:
    buckets = f"churn_http_request_duration_seconds_bucket{{{CUSTOMER_REQUESTS}}}"
    latency = f"histogram_quantile(0.99, sum by (le) (rate({buckets}[5m])))"
    feature = "The live distribution of {{ $labels.feature }}"
    drift_runbook = (
        "Compare the feature's live shares with the reference on the dashboard (PSI per feature): a new source of "
        "customers or a change upstream (a renamed category, a unit) moves one feature; a changed customer base "
        "moves several and the score. Retrain on recent customers once the change is understood (docs/training.md)."
    )
    return [
        drift_alert(FEATURES, "ChurnFeatureDrift", PSI_WARNING, "warning", feature, drift_runbook),
        drift_alert(FEATURES, "ChurnFeatureDrift", PSI_CRITICAL, "critical", feature, drift_runbook),
        drift_alert(
            SCORE,
            "ChurnScoreDrift",
            PSI_WARNING,
            "warning",
            "The distribution of churn probabilities served",
            "The model scores the customers it sees differently from the training's: look at which features drift "
            "(ChurnFeatureDrift, the dashboard); the threshold decides more or fewer promotions than planned.",
        ),
        alert(
            "ChurnRefusals",
            f"churn:refused_share:1h > {REFUSED_SHARE}\nand\n{ALL_REQUESTS} * 3600 >= {MIN_REQUESTS}",
            "15m",
            "warning",
            "{{ $value | humanizePercentage }} of /predict and /explain requests refused over the last hour",
            "Read the refused requests' log lines (status 4xx) and the refused values per field on the dashboard: "
            "a client sending a new spelling or a new category is a client to fix, or a schema to extend.",
        ),
        alert(
            "ChurnServerErrors",
            'sum(increase(churn_http_requests_total{status=~"5.."}[10m])) > 0',
            "0m",
            "critical",
            '{{ $value | printf "%.0f" }} requests answered with a 5xx in the last 10 minutes',
            "Nothing a client sends should give a 5xx: find the request ID in the log lines with status 5xx and "
            "the traceback beside it, and fix the bug.",
        ),
        alert(
            "ChurnSlowAnswers",
            f"{latency} > {SLOW_SECONDS}",
            "10m",
            "warning",
            f"99th percentile of /predict and /explain at {{{{ $value | humanizeDuration }}}}, above {SLOW_SECONDS} s",
            "Check the CPU of the instances and the size of the batches clients send (docs/speed.md): scale out, or "
            "ask for smaller batches.",
        ),
        alert(
            "ChurnNoTraffic",
            "sum(increase(churn_predictions_total[1h])) == 0\nor\nabsent(churn_predictions_total)",
            "30m",
            "warning",
            "No customer scored in the last hour, or the service not scraped",
            'Check that the service is up (up{job="churn"}, /health/ready) and that the client that sends the '
            "customers runs and reaches it (its API key, the load balancer).",
        ),
    ]


def challenger_rules() -> list[dict]:
    """The day's PSI between the challenger's tenths and the champion's (as churn_challenger_psi, since the start),
    zeros replaced in each model's shares on its own, and the share of customers both put on the same side."""
    counts, share = "churn:challenger_customers:increase1d", "churn:challenger_share:1d"
    filled = "churn:challenger_share_filled:1d"
    challenger, champion = (f'{{model="{model}"}}' for model in ("challenger", "champion"))
    terms = (
        f"    ({filled}{challenger} - ignoring (model) {filled}{champion})\n"
        f"    * ln({filled}{challenger} / ignoring (model) {filled}{champion})"
    )
    either = f"({share}{challenger} > 0 or ignoring (model) {share}{champion} > 0)"
    agreement = "churn_challenger_agreement_customers_total"
    agreed, scored = (f"sum(increase({agreement}{which}[1d]))" for which in ('{agree="true"}', ""))
    return [
        record(counts, f"sum by {CHALLENGER.bins} (increase(churn_challenger_customers_total[1d]))"),
        record(share, f"{counts}\n/ on {CHALLENGER.by} group_left ()\n(sum by {CHALLENGER.by} ({counts}) > 0)"),
        record(filled, CHALLENGER.filled(share)),
        record("churn:challenger_psi:1d", f"sum(\n  (\n{terms}\n  )\n  and on (bin)\n  {either}\n)"),
        record("churn:challenger_agreement:1d", f"{agreed}\n/\n{scored}"),
    ]


def groups() -> dict:
    # One group: its rules run in order at each evaluation, so an alert sees the drift recorded at the same instant.
    return {"groups": [{"name": "churn", "rules": recording_rules() + alert_rules()}]}


def challenger_groups() -> dict:
    return {"groups": [{"name": "churn-challenger", "rules": challenger_rules()}]}


class _BlockDumper(yaml.SafeDumper):
    """Multi-line PromQL as YAML literal blocks, as people write it."""


_BlockDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None),
)


def rules_yaml(challenger: bool = False) -> str:
    """rules.yml, or with challenger challenger.rules.yml."""
    command, target = ("challenger ", "challenger.rules.yml") if challenger else ("", "prometheus/rules.yml")
    header = f"# Written by `python -m churn.monitor.rules {command}> monitoring/{target}`: edit that module.\n"
    rules = challenger_groups() if challenger else groups()
    return header + yaml.dump(rules, Dumper=_BlockDumper, sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(rules_yaml(challenger=sys.argv[1:] == ["challenger"]))
