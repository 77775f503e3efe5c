from churn.monitor.rules import rules_yaml
from tests.prometheus import RULES


def test_rules_yml_is_what_churn_monitor_rules_writes():
    assert RULES.read_text() == rules_yaml(), "run `python -m churn.monitor.rules > monitoring/prometheus/rules.yml`"
