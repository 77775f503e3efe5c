"""monitoring/challenger.rules.yml under Prometheus's own rule evaluator (promtool test rules): the PSI and
agreement it records over a day are those churn.monitor.drift and plain counting give for the same counts."""

import math
import subprocess

import numpy as np
import pytest
import yaml

from churn import metrics
from churn.monitor.drift import psi
from devtools import ROOT

RULES = ROOT / "monitoring" / "challenger.rules.yml"
HOURS = 24
ROUNDING = 1e-9


def rounded(value: float) -> float:
    """What PromQL's round(value, ROUNDING) gives, computed as Prometheus computes it."""
    inverse = 1 / ROUNDING
    return math.floor(value * inverse + 0.5) / inverse


def hourly_counts(case) -> dict[str, np.ndarray]:
    """Customers per hour in each tenth, for each model: random ones (some bins empty in one model or both), or a
    bin holding under 0.01 % of the champion's customers, where evidently's rule for an empty bin is not 0.0001."""
    if case == "a tenth under 0.01 %":
        return {
            "champion": np.array([0, 1, *[5000] * 8]),
            "challenger": np.array([0, 3000, *[6000] * 7, 0]),
        }
    rng = np.random.default_rng(case)
    per_hour = {model: rng.integers(0, 40, len(metrics.PROBABILITY_BINS)) for model in metrics.SHADOW_MODELS}
    per_hour["champion"][0] = per_hour["challenger"][0] = 0
    per_hour["challenger"][9] = 0
    return per_hour


@pytest.mark.parametrize("case", [0, 1, 2, "a tenth under 0.01 %"])
def test_the_recorded_psi_and_agreement_are_the_services(tmp_path, case):
    rng = np.random.default_rng(0)
    per_hour = hourly_counts(case)
    agreed, disagreed = int(rng.integers(50, 100)), int(rng.integers(0, 50))
    series = [
        {
            "series": f'churn_challenger_customers_total{{model="{model}",bin="{name}"}}',
            "values": f"0+{count}x{HOURS}",
        }
        for model, counts in per_hour.items()
        for name, count in zip(metrics.PROBABILITY_BINS, counts.tolist(), strict=True)
    ]
    series += [
        {"series": f'churn_challenger_agreement_customers_total{{agree="{agree}"}}', "values": f"0+{n}x{HOURS}"}
        for agree, n in (("true", agreed), ("false", disagreed))
    ]
    expected = {
        "churn:challenger_psi:1d": psi(per_hour["champion"], per_hour["challenger"]),
        "churn:challenger_agreement:1d": agreed / (agreed + disagreed),
    }
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1h",
        "tests": [
            {
                "interval": "1h",
                "input_series": series,
                "promql_expr_test": [
                    # Rounded alike on both sides: the sums run in another order, so the last bit may differ.
                    {
                        "expr": f"round({name}, {ROUNDING})",
                        "eval_time": "1d",
                        "exp_samples": [{"labels": "{}", "value": rounded(value)}],
                    }
                    for name, value in expected.items()
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    result = subprocess.run(["promtool", "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
