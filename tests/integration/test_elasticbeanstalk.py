"""The Elastic Beanstalk deployment: the .ebextensions set real options to valid values, and the bundle `eb deploy`
uploads, as the EB CLI's own code zips it, holds .platform/, .ebextensions/ and what the Docker build copies, and
nothing else."""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
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


def boolean(value):
    return str(value).lower() in ("true", "false")


# The options of a load balancer listener: the default one (port 80), or one on a port of its own.
LISTENER_OPTIONS = {
    "DefaultProcess": anything,
    "ListenerEnabled": boolean,
    "Protocol": one_of("HTTP", "HTTPS"),
    "Rules": anything,
    # A certificate in AWS Certificate Manager (or IAM), by its ARN.
    "SSLCertificateArns": lambda value: (
        re.fullmatch(r"arn:aws[a-z-]*:(acm|iam):[^:]*:[^:]*:.+", str(value)) is not None
    ),
    "SSLPolicy": lambda value: str(value).startswith("ELBSecurityPolicy-"),
}


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
    "aws:elasticbeanstalk:command": {
        "DeploymentPolicy": one_of(
            "AllAtOnce", "Rolling", "RollingWithAdditionalBatch", "Immutable", "TrafficSplitting"
        ),
        "Timeout": integer(1, 3600),
        "BatchSizeType": one_of("Percentage", "Fixed"),
        "BatchSize": integer(1, 10000),
        "IgnoreHealthCheck": boolean,
    },
    # Environment properties: any name, any value; the Docker platform passes them to the container.
    "aws:elasticbeanstalk:application:environment": None,
    "aws:elbv2:listener:default": LISTENER_OPTIONS,
    "aws:elbv2:listener:443": LISTENER_OPTIONS,
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


def option_problems(name: str, config: dict) -> list[str]:
    problems = []
    for namespace, option, value in option_settings(config):
        if namespace not in EB_OPTIONS:
            problems.append(f"{name}: unknown namespace {namespace}")
        elif EB_OPTIONS[namespace] is None:
            continue
        elif option not in EB_OPTIONS[namespace]:
            problems.append(f"{name}: {namespace} has no option {option}")
        elif not EB_OPTIONS[namespace][option](value):
            problems.append(f"{name}: {namespace} {option}: invalid value {value!r}")
    return problems


def test_options_are_real_namespaces_and_settings_with_valid_values():
    problems, seen = [], {}
    for name, config in load_configs().items():
        problems += option_problems(name, config)
        for namespace, option, _ in option_settings(config):
            if (namespace, option) in seen:
                problems.append(f"{name}: {namespace} {option} already set in {seen[namespace, option]}")
            seen[namespace, option] = name
    assert problems == [], "\n".join(problems)


def test_the_commented_https_listener_is_valid_once_uncommented(options):
    path = ROOT / ".ebextensions" / "01-environment.config"
    text = path.read_text()
    # What a deployer does: uncomment the listener block (a namespace line, and its option lines).
    uncommented = re.sub(r"^  # (aws:elbv2:listener:\S+:|  \w+: .*)$", r"  \1", text, flags=re.MULTILINE)
    assert uncommented != text, "no commented aws:elbv2:listener block"
    config = yaml.safe_load(uncommented)
    assert option_problems(path.name, config) == []
    settings = {(namespace, option): value for namespace, option, value in option_settings(config)}
    https = "aws:elbv2:listener:443"
    assert settings[https, "Protocol"] == "HTTPS"
    assert str(settings[https, "ListenerEnabled"]).lower() == "true"
    assert re.fullmatch(r"arn:aws:acm:[^:]+:[^:]+:certificate/.+", settings[https, "SSLCertificateArns"])
    # It forwards to the same process as port 80 (nginx, checked on /health/ready); elbv2 needs an application LB.
    assert settings[https, "DefaultProcess"] == "default"
    assert options["aws:elasticbeanstalk:environment", "LoadBalancerType"] == "application"
    # Commented, it sets nothing: a deployment without a certificate keeps working.
    assert (https, "Protocol") not in options


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


# ---- The source bundle `eb deploy` uploads, by the EB CLI's own code

EB_TOOLS = ROOT / ".tools" / "awsebcli"
# The EB CLI, and the Docker SDK for the build context: their pins clash with the lock's, so they live apart.
EB_TOOLS_PINS = ("awsebcli==3.27.5", "docker==7.1.0")

# Planted in the copy of the project: what a developer's clone may hold that must never be uploaded...
PLANTED_OUT = {
    ".env": "AWS_SECRET_ACCESS_KEY=planted\n",
    ".git/HEAD": "ref: refs/heads/main\n",
    ".venv/lib/python3.11/site-packages/planted.py": "",
    ".tools/bin/planted": "",
    "churn/__pycache__/planted.cpython-311.pyc": "",
    "churn/.ipynb_checkpoints/planted-checkpoint.py": "",
    "Dockerfile~": "",
    "reports/roc.png": "",
    "data/planted.csv": "",
    "notebooks/model_C=0.1.bin": "",
    # What `eb init` writes: the EB CLI finds the project's root by it, and never uploads it.
    ".elasticbeanstalk/config.yml": "global:\n  application_name: churn\n",
}
# ...and a model train.py made, which must be: the Dockerfile's MODEL_FILE may name any model at the top.
PLANTED_IN = {"model_C=0.1.bin": "", "model_C=0.1.bin.json": "{}\n"}


def eb_tools_python() -> Path:
    """The python of .tools/awsebcli, a virtual environment with EB_TOOLS_PINS: made once, kept while they hold."""
    python, installed = EB_TOOLS / "bin" / "python", EB_TOOLS / "installed.txt"
    pins = "\n".join(EB_TOOLS_PINS)
    if not installed.exists() or installed.read_text() != pins:
        shutil.rmtree(EB_TOOLS, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(EB_TOOLS)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, *EB_TOOLS_PINS], check=True)
        installed.write_text(pins)
    return python


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> dict:
    """A copy of the work tree (less .git, .venv, .tools) with the PLANTED files; then what the EB CLI zips of it
    (bundle), and its Docker build context as the Docker SDK reads .dockerignore (context)."""
    python = eb_tools_python()
    project = tmp_path_factory.mktemp("eb") / "project"
    shutil.copytree(ROOT, project, symlinks=True, ignore=shutil.ignore_patterns(".git", ".venv", ".tools"))
    for name, text in {**PLANTED_OUT, **PLANTED_IN}.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    found = project.parent / "deployment.json"
    subprocess.run([str(python), str(ROOT / "tests" / "eb_bundle.py"), str(found)], cwd=project, check=True)
    return {"project": project, **{key: frozenset(paths) for key, paths in json.loads(found.read_text()).items()}}


def files_under(project: Path, *folders: str) -> set[str]:
    return {p.relative_to(project).as_posix() for f in folders for p in (project / f).rglob("*") if p.is_file()}


def dockerfile_copy_sources() -> list[str]:
    """The build-context paths of the Dockerfile's COPY and ADD instructions (not those copying from a stage)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    # Build arguments take their defaults: Elastic Beanstalk passes none.
    build_args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.MULTILINE))
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
        sources += [re.sub(r"\$\{(\w+)\}", lambda m: build_args[m.group(1)], path) for path in paths[:-1]]
    return sources


def test_dockerfile_copies_the_service():
    sources = dockerfile_copy_sources()
    for needed in ("Pipfile", "Pipfile.lock", "predict.py", "gunicorn.conf.py", "model_C=1.0.bin", "churn/"):
        assert needed in sources


def test_the_build_context_holds_what_the_dockerfile_copies_and_the_trained_models_only(deployment):
    project, context = deployment["project"], deployment["context"]
    copied = set()
    for source in dockerfile_copy_sources():
        path = project / source
        assert path.exists(), f"the Dockerfile copies {source}, which does not exist"
        if path.is_file():
            assert source in context, f"the Dockerfile copies {source}, which .dockerignore leaves out"
            copied.add(source)
            continue
        on_disk = files_under(project, source)
        caches = {f for f in on_disk if "/__pycache__/" in f or "/.ipynb_checkpoints/" in f or f.endswith(".pyc")}
        assert caches, "the planted caches are missing"
        assert {f for f in context if f.startswith(path.relative_to(project).as_posix() + "/")} == on_disk - caches
        copied |= on_disk - caches
    trained = {p.name for pattern in ("model_*.bin", "model_*.bin.json") for p in project.glob(pattern)}
    assert set(PLANTED_IN) <= trained
    # Docker sends these two whatever .dockerignore says.
    extra = context - copied - trained - {"Dockerfile", ".dockerignore"}
    assert extra == set(), f"the build context holds what the Dockerfile does not copy: {sorted(extra)[:20]}"


def test_eb_deploy_uploads_the_build_context_and_the_platform_extensions_and_nothing_else(deployment):
    project, bundle = deployment["project"], deployment["bundle"]
    needed = (
        {"Dockerfile", ".dockerignore"} | deployment["context"] | files_under(project, ".ebextensions", ".platform")
    )
    assert sorted(needed - bundle) == [], "eb deploy would not upload these"
    assert sorted(bundle - needed) == [], "eb deploy would upload these, which neither Docker nor the platform reads"


def test_eb_deploy_uploads_the_nginx_configuration_the_ebextensions_and_any_trained_model(deployment):
    bundle = deployment["bundle"]
    platform = {".platform/nginx/conf.d/churn_http.conf", ".platform/nginx/conf.d/elasticbeanstalk/churn_server.conf"}
    assert platform <= bundle
    assert {path.relative_to(ROOT).as_posix() for path in CONFIG_FILES} <= bundle
    assert set(PLANTED_IN) <= bundle


def test_eb_deploy_leaves_out_secrets_environments_caches_data_and_backups(deployment):
    assert set(PLANTED_OUT) & deployment["bundle"] == set()


# ---- Deployments and going back: what `eb create` sets itself, and the eb commands the documents show

EB_DOCUMENTS = [ROOT / "README.md", ROOT / "docs" / "elastic-beanstalk.md"]


@pytest.fixture(scope="module")
def eb_create_options(tmp_path_factory) -> dict[tuple[str, str], str]:
    """What `eb create churn-serving-env --elb-type application` sets on the environment, by the EB CLI's own code."""
    found = tmp_path_factory.mktemp("eb-create") / "options.json"
    subprocess.run([str(eb_tools_python()), str(ROOT / "tests" / "eb_create_options.py"), str(found)], check=True)
    return {(namespace, option): value for namespace, option, value in json.loads(found.read_text())}


def test_eb_create_overrides_no_option_the_ebextensions_set(options, eb_create_options):
    # Set on the environment, eb create's values take precedence: one the .ebextensions set otherwise would be dead.
    overridden = {
        key: (str(options[key]), value)
        for key, value in eb_create_options.items()
        if key in options and str(options[key]) != value
    }
    assert overridden == {}, "(.ebextensions, eb create)"


def test_deployments_are_immutable_and_instance_replacements_wait_for_health(options, eb_create_options):
    assert options["aws:elasticbeanstalk:command", "DeploymentPolicy"] == "Immutable"
    rolling = "aws:autoscaling:updatepolicy:rollingupdate"
    assert (eb_create_options[rolling, "RollingUpdateEnabled"], eb_create_options[rolling, "RollingUpdateType"]) == (
        "true",
        "Health",
    )
    assert eb_create_options["aws:elasticbeanstalk:healthreporting:system", "SystemType"] == "enhanced"


def stated_settings(text: str) -> dict[str, str]:
    """The `Option: value` code spans of a document."""
    return dict(re.findall(r"`(\w+): ([\w/.-]+)`", text))


@pytest.mark.parametrize("document", EB_DOCUMENTS, ids=lambda path: path.name)
def test_the_documents_state_the_deployment_settings_in_force(document, options, eb_create_options):
    in_force = {option: str(value) for (_, option), value in options.items()}
    in_force |= {option: value for (_, option), value in eb_create_options.items()}
    stated = stated_settings(document.read_text())
    assert "DeploymentPolicy" in stated
    wrong = {name: (value, in_force.get(name)) for name, value in stated.items() if in_force.get(name) != value}
    assert wrong == {}, "(stated, in force)"


def eb_commands(document: Path) -> list[list[str]]:
    """The `eb ...` command lines of a document's code blocks, as words, without their comments."""
    return [shlex.split(line.partition("  #")[0]) for line in re.findall(r"^ {4}(eb .*)$", document.read_text(), re.M)]


def eb_help(*command: str) -> str:
    eb_tools_python()
    return subprocess.run(
        [str(EB_TOOLS / "bin" / "eb"), *command, "--help"], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def test_the_readme_shows_labelled_versions_and_going_back():
    commands = [" ".join(words) for words in eb_commands(ROOT / "README.md")]
    for shown in ("eb deploy --label", "eb appversion", "eb deploy --version"):
        assert any(command.startswith(shown) for command in commands), shown


def test_the_documented_eb_commands_take_the_options_they_are_given():
    helps = {}
    for words in [words for document in EB_DOCUMENTS for words in eb_commands(document)]:
        command = tuple(words[1:2])
        if command not in helps:
            helps[command] = eb_help(*command)
        # A sub-command (eb local run) has options of its own.
        if len(words) > 2 and re.search(rf"^commands:\n(?:  .*\n)*?  {re.escape(words[2])} ", helps[command], re.M):
            command = tuple(words[1:3])
            helps.setdefault(command, eb_help(*command))
        for option in (word.partition("=")[0] for word in words if word.startswith("-")):
            assert re.search(rf"(^|[\s,]){re.escape(option)}([\s,]|$)", helps[command], re.M), (
                f"`eb {' '.join(command)}` has no option {option}"
            )
