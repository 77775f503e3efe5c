"""Run by tests/integration/test_elasticbeanstalk.py with the EB CLI's own virtual environment: the option settings
`eb create ENV --elb-type application` sends with the environment it creates (the EB CLI's "recommended values"),
by the EB CLI's own code, offline. Settings sent so take precedence over .ebextensions. Writes
[[namespace, option, value], ...] as JSON to the file named by argv[1]."""

import json
import sys

from ebcli.objects.platform import PlatformVersion
from ebcli.objects.requests import CreateEnvironmentRequest
from ebcli.objects.tier import Tier

# `eb init -p docker` picks the newest Docker platform version; any from 2.0.0 on reports enhanced health.
DOCKER_PLATFORM = "arn:aws:elasticbeanstalk:eu-west-1::platform/Docker running on 64bit Amazon Linux 2023/4.5.0"


def eb_create_option_settings() -> list[list[str]]:
    request = CreateEnvironmentRequest(
        app_name="churn-serving",
        env_name="churn-serving-env",
        platform=PlatformVersion(DOCKER_PLATFORM),
        tier=Tier.from_raw_string("webserver"),
        elb_type="application",
    )
    request.compile_option_settings()
    return [[s["Namespace"], s["OptionName"], s["Value"]] for s in request.option_settings]


if __name__ == "__main__":
    with open(sys.argv[1], "w") as out:
        json.dump(eb_create_option_settings(), out)
