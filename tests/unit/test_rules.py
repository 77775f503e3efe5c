from churn.monitor.rules import rules_yaml
from devtools import ROOT
from tests.prometheus import RULES


def test_rules_yml_is_what_churn_monitor_rules_writes():
    assert RULES.read_text() == rules_yaml(), "run `python -m churn.monitor.rules > monitoring/prometheus/rules.yml`"


def test_challenger_rules_yml_is_what_churn_monitor_rules_writes():
    written = (ROOT / "monitoring" / "challenger.rules.yml").read_text()
    assert written == rules_yaml(challenger=True), (
        "run `python -m churn.monitor.rules challenger > monitoring/challenger.rules.yml`"
    )
