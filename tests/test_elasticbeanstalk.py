"""The Elastic Beanstalk deployment: the .ebextensions set real options to valid values, and the bundle `eb deploy`
would upload (the files .ebignore lets through) holds what the Docker build copies, and nothing else."""

import functools
import json
import os
import re
import shlex
from pathlib import Path

import pathspec
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILES = sorted((ROOT / ".ebextensions").glob("*.config"))

# The sections an .ebextensions file may have (Elastic Beanstalk Developer Guide, "Advanced environment
# customization with configuration files").
CONFIG_SECTIONS = {
    "option_settings",
    "packages",
    "groups",
    "users",
    "sources",
    "files",
    "commands",
    "services",
    "container_commands",
    "Resources",
    "Outputs",
}


def one_of(*values):
    return lambda value: str(value) in values


def integer(low, high):
    return lambda value: re.fullmatch(r"-?\d+", str(value)) is not None and low <= int(value) <= high


def anything(value):
    return value is not None


# The options of the namespaces used here, with their valid values, from "General options for all environments"
# (command-options-general) in the Elastic Beanstalk Developer Guide.
EB_OPTIONS = {
    "aws:elasticbeanstalk:environment": {
        "EnvironmentType": one_of("SingleInstance", "LoadBalanced"),
        "ServiceRole": anything,
        "LoadBalancerType": one_of("classic", "application", "network"),
    },
    "aws:ec2:instances": {
        "EnableSpot": one_of("true", "false"),
        # A comma-separated list of 1 to 10 instance types, such as t2.micro,t3.micro.
        "InstanceTypes": lambda value: (
            re.fullmatch(r"[a-z][a-z0-9-]*\.[a-z0-9]+(,[a-z][a-z0-9-]*\.[a-z0-9]+){0,9}", str(value)) is not None
        ),
        "SpotFleetOnDemandBase": integer(0, 10000),
        "SpotFleetOnDemandAboveBasePercentage": integer(0, 100),
        "SpotMaxPrice": anything,
    },
    "aws:autoscaling:asg": {
        "Availability Zones": one_of("Any", "Any 1", "Any 2", "Any 3"),
        "Cooldown": integer(0, 10000),
        "Custom Availability Zones": anything,
        "MinSize": integer(1, 10000),
        "MaxSize": integer(1, 10000),
    },
    "aws:autoscaling:trigger": {
        "BreachDuration": integer(1, 600),
        "LowerBreachScaleIncrement": integer(-10000, 10000),
        "LowerThreshold": integer(0, 20000000),
        "MeasureName": one_of(
            "CPUUtilization",
            "NetworkIn",
            "NetworkOut",
            "DiskWriteOps",
            "DiskReadBytes",
            "DiskReadOps",
            "DiskWriteBytes",
            "Latency",
            "RequestCount",
            "HealthyHostCount",
            "UnhealthyHostCount",
            "TargetResponseTime",
        ),
        "Period": integer(1, 600),
        "EvaluationPeriods": integer(1, 600),
        "Statistic": one_of("Minimum", "Maximum", "Sum", "Average"),
        "Unit": one_of(
            "Seconds", "Percent", "Bytes", "Bits", "Count", "Bytes/Second", "Bits/Second", "Count/Second", "None"
        ),
        "UpperBreachScaleIncrement": integer(-10000, 10000),
        "UpperThreshold": integer(0, 20000000),
    },
    "aws:elasticbeanstalk:environment:process:default": {
        "DeregistrationDelay": integer(0, 3600),
        "HealthCheckInterval": integer(5, 300),
        "HealthCheckPath": lambda value: str(value).startswith("/"),
        "HealthCheckTimeout": integer(1, 60),
        "HealthyThresholdCount": integer(2, 10),
        # With an application load balancer: codes from 200 to 499, comma-separated.
        "MatcherHTTPCode": lambda value: all(200 <= int(code) <= 499 for code in str(value).split(",")),
        "Port": integer(1, 65535),
        "Protocol": one_of("TCP", "HTTP", "HTTPS"),
        "StickinessEnabled": one_of("true", "false"),
        "StickinessLBCookieDuration": integer(1, 604800),
        "StickinessType": one_of("lb_cookie"),
        "UnhealthyThresholdCount": integer(2, 10),
    },
    # Environment properties: any name, any value; the Docker platform passes them to the container.
    "aws:elasticbeanstalk:application:environment": None,
}


def option_settings(config: dict) -> list[tuple[str, str, object]]:
    """(namespace, option, value) from either form option_settings takes: a mapping, or a list of dicts."""
    settings = config.get("option_settings") or []
    if isinstance(settings, dict):
        return [(namespace, name, value) for namespace, values in settings.items() for name, value in values.items()]
    return [(s["namespace"], s["option_name"], s.get("value")) for s in settings]


def load_configs() -> dict[str, dict]:
    return {path.name: yaml.safe_load(path.read_text()) for path in CONFIG_FILES}


@pytest.fixture(scope="module")
def options() -> dict[tuple[str, str], object]:
    return {(namespace, name): value for c in load_configs().values() for namespace, name, value in option_settings(c)}


def test_config_files_parse_as_ebextensions():
    assert CONFIG_FILES, "no .ebextensions/*.config"
    for name, config in load_configs().items():
        assert isinstance(config, dict), f"{name} is not a YAML mapping"
        assert set(config) <= CONFIG_SECTIONS, f"{name}: unknown sections {set(config) - CONFIG_SECTIONS}"
        assert option_settings(config), f"{name} sets no option"


def test_options_are_real_namespaces_and_settings_with_valid_values():
    problems, seen = [], {}
    for name, config in load_configs().items():
        for namespace, option, value in option_settings(config):
            if (namespace, option) in seen:
                problems.append(f"{name}: {namespace} {option} already set in {seen[namespace, option]}")
            seen[namespace, option] = name
            if namespace not in EB_OPTIONS:
                problems.append(f"{name}: unknown namespace {namespace}")
            elif EB_OPTIONS[namespace] is None:
                continue
            elif option not in EB_OPTIONS[namespace]:
                problems.append(f"{name}: {namespace} has no option {option}")
            elif not EB_OPTIONS[namespace][option](value):
                problems.append(f"{name}: {namespace} {option}: invalid value {value!r}")
    assert problems == [], "\n".join(problems)


def test_load_balanced_and_auto_scaling_on_cpu(options):
    env, asg, trigger = "aws:elasticbeanstalk:environment", "aws:autoscaling:asg", "aws:autoscaling:trigger"
    assert options[env, "EnvironmentType"] == "LoadBalanced"
    assert options[env, "LoadBalancerType"] == "application"
    assert options["aws:ec2:instances", "InstanceTypes"]
    assert (int(options[asg, "MinSize"]), int(options[asg, "MaxSize"])) == (1, 4)
    assert (options[trigger, "MeasureName"], options[trigger, "Unit"]) == ("CPUUtilization", "Percent")
    assert int(options[trigger, "LowerThreshold"]) < int(options[trigger, "UpperThreshold"]) <= 100
    assert int(options[trigger, "UpperBreachScaleIncrement"]) > 0 > int(options[trigger, "LowerBreachScaleIncrement"])
    # Elastic Beanstalk rewrites one of these three when they disagree.
    period, evaluations = int(options[trigger, "Period"]), int(options[trigger, "EvaluationPeriods"])
    assert int(options[trigger, "BreachDuration"]) == period * evaluations


def test_load_balancer_health_check_is_the_services_readiness(options, client):
    process = "aws:elasticbeanstalk:environment:process:default"
    path = options[process, "HealthCheckPath"]
    assert path == "/health/ready"
    # The real app answers the load balancer's check with the code it expects.
    assert client.get(path).status_code == int(options[process, "MatcherHTTPCode"])
    assert int(options[process, "HealthCheckTimeout"]) < int(options[process, "HealthCheckInterval"])
    # The load balancer talks to nginx on the instance (port 80), not to the container's port.
    assert int(options.get((process, "Port"), 80)) == 80


def test_web_concurrency_is_a_worker_count(options):
    assert int(options["aws:elasticbeanstalk:application:environment", "WEB_CONCURRENCY"]) >= 1


# ---- The source bundle


@functools.cache
def eb_deploy_bundle() -> frozenset[str]:
    """The files `eb deploy` zips when .ebignore exists, as the EB CLI (ebcli.core.fileoperations) picks them: every
    file under the project root that .ebignore's patterns (gitwildmatch, as pathspec reads them) do not match, except
    .ebignore itself, editor backups (name~) and anything under .elasticbeanstalk/."""
    spec = pathspec.PathSpec.from_lines("gitwildmatch", (ROOT / ".ebignore").read_text().splitlines())
    bundle = set()
    for directory, dirs, files in os.walk(ROOT):
        relative = Path(directory).relative_to(ROOT)
        if ".elasticbeanstalk" in relative.parts:
            continue
        # Symbolic links to directories are zipped as links, like files.
        for name in files + [d for d in dirs if (Path(directory) / d).is_symlink()]:
            path = (relative / name).as_posix()
            if not (path == ".ebignore" or name.endswith("~") or spec.match_file(path)):
                bundle.add(path)
    return frozenset(bundle)


def dockerfile_copy_sources() -> list[str]:
    """The build-context paths of the Dockerfile's COPY and ADD instructions (not those copying from a stage)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    sources = []
    for line in text.splitlines():
        words = line.strip().split(None, 1)
        if len(words) < 2 or words[0].upper() not in ("COPY", "ADD"):
            continue
        arguments, flags = words[1].strip(), []
        while arguments.startswith("--"):
            flag, _, arguments = arguments.partition(" ")
            flags.append(flag)
            arguments = arguments.strip()
        if any(flag.startswith("--from=") for flag in flags):
            continue
        paths = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
        sources += paths[:-1]
    return sources


def copied_files() -> set[str]:
    """The files those COPY sources name: a file, or every file under a directory bar Python caches (.dockerignore)."""
    files = set()
    for source in dockerfile_copy_sources():
        path = ROOT / source
        assert path.exists(), f"the Dockerfile copies {source}, which does not exist"
        if path.is_dir():
            files |= {
                p.relative_to(ROOT).as_posix()
                for p in path.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
            }
        else:
            files.add(source)
    return files


def test_dockerfile_copies_the_service():
    sources = dockerfile_copy_sources()
    for needed in ("Pipfile", "Pipfile.lock", "predict.py", "gunicorn.conf.py", "model_C=1.0.bin", "churn/"):
        assert needed in sources


def test_eb_deploy_bundle_holds_everything_the_docker_build_copies():
    missing = ({"Dockerfile", ".dockerignore"} | copied_files()) - eb_deploy_bundle()
    assert missing == set(), f"eb deploy would not upload {sorted(missing)}"


def test_eb_deploy_bundle_holds_the_ebextensions():
    configs = {path.relative_to(ROOT).as_posix() for path in CONFIG_FILES}
    assert configs <= eb_deploy_bundle()


def test_eb_deploy_bundle_holds_nothing_else():
    needed = {"Dockerfile", ".dockerignore"} | copied_files() | {p.relative_to(ROOT).as_posix() for p in CONFIG_FILES}
    extra = eb_deploy_bundle() - needed
    assert extra == set(), f"eb deploy would upload, unneeded: {sorted(extra)[:20]}"
