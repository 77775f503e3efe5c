"""The Cloud Run deployment: deploy/cloudrun/service.yaml is a valid Knative Service (checked against Knative Serving's
own CRD schema, tests/knative/), within Cloud Run's limits, and agrees with the service: its probes' paths, its
settings, and a concurrency equal to what gunicorn serves at once. The documented gcloud commands name the same
service, secret and image. (scripts/container_test.py runs the image as this file has Cloud Run run it.)"""

import copy
import re
import shlex
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import jsonschema
import pytest
import yaml

from churn.settings import Settings
from devtools import ROOT

SERVICE_FILE = ROOT / "deploy" / "cloudrun" / "service.yaml"
CRD_FILE = ROOT / "tests" / "knative" / "service-crd.yaml"
DOCUMENTS = [ROOT / "README.md", ROOT / "docs" / "cloud-run.md"]
# Cloud Run's container contract: it sets these itself, and refuses them in a service's env.
RESERVED_ENV = {"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"}
# Cloud Run sends SIGTERM, then SIGKILL this many seconds later.
SIGTERM_GRACE_S = 10


def knative_schema() -> dict:
    crd = yaml.safe_load(CRD_FILE.read_text())
    (v1,) = [version for version in crd["spec"]["versions"] if version["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]


def closed(schema):
    """The schema with unknown fields refused wherever Kubernetes would drop them (its strict field validation): in
    every object that lists its properties and neither allows others nor preserves unknown fields."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: closed(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema["additionalProperties"] = False
    return schema


@pytest.fixture(scope="module")
def validator():
    return jsonschema.Draft7Validator(closed(knative_schema()))


@pytest.fixture(scope="module")
def service() -> dict:
    return yaml.safe_load(SERVICE_FILE.read_text())


@pytest.fixture(scope="module")
def revision(service) -> dict:
    return service["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(revision) -> dict:
    (container,) = revision["containers"]
    return container


@pytest.fixture(scope="module")
def env(container) -> dict[str, str]:
    return {variable["name"]: variable["value"] for variable in container["env"]}


def schema_errors(validator, document) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_the_service_is_a_valid_knative_service(validator, service):
    assert (service["apiVersion"], service["kind"]) == ("serving.knative.dev/v1", "Service")
    assert schema_errors(validator, service) == []


def test_the_schema_refuses_a_misspelled_field_and_a_wrong_type(validator, service):
    misspelled = copy.deepcopy(service)
    revision = misspelled["spec"]["template"]["spec"]
    revision["containerConcurency"] = revision.pop("containerConcurrency")
    assert any("containerConcurency" in error for error in schema_errors(validator, misspelled))
    wrong_type = copy.deepcopy(service)
    wrong_type["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/maxScale"] = 4
    assert schema_errors(validator, wrong_type) != []


def test_within_cloud_runs_limits(service, revision, container):
    # Cloud Run: one to 1000 requests at once, a request timeout up to 3600 s, one port named http1 or h2c.
    assert 1 <= revision["containerConcurrency"] <= 1000
    assert 1 <= revision["timeoutSeconds"] <= 3600
    (port,) = container["ports"]
    assert port["name"] in ("http1", "h2c") and 1 <= port["containerPort"] <= 65535
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    low, high = (int(annotations[f"autoscaling.knative.dev/{bound}Scale"]) for bound in ("min", "max"))
    assert 0 <= low <= high
    # The second generation execution environment needs at least 512 MiB.
    assert annotations["run.googleapis.com/execution-environment"] == "gen2"
    assert memory_mib(container["resources"]["limits"]["memory"]) >= 512
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["timeoutSeconds"] <= container[probe]["periodSeconds"], probe
    assert container["startupProbe"]["periodSeconds"] <= 240


def memory_mib(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()
    return int(number) * {"Mi": 1, "Gi": 1024}[unit]


def test_the_env_sets_only_the_services_settings(env):
    assert not RESERVED_ENV & set(env), "Cloud Run sets these itself"
    settings = {f.metadata["env"] for f in fields(Settings)}
    assert set(env) <= settings, f"not settings of churn/settings.py: {sorted(set(env) - settings)}"
    # Each value is one the service takes (the keys file is Cloud Run's to provide).
    Settings.from_env({name: value for name, value in env.items() if name != "CHURN_API_KEYS_FILE"})


def test_the_probes_ask_the_health_endpoints_on_the_served_port(container, client):
    port = container["ports"][0]["containerPort"]
    assert container["startupProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"].get("port", port) == port
        assert client.get(container[probe]["httpGet"]["path"]).status_code == 200, probe


def test_the_api_keys_file_is_the_secret_volumes_file(revision, container, env):
    (mount,) = container["volumeMounts"]
    (volume,) = [v for v in revision["volumes"] if v["name"] == mount["name"]]
    (item,) = volume["secret"]["items"]
    assert item["key"] == "latest" or item["key"].isdigit()
    assert env["CHURN_API_KEYS_FILE"] == f"{mount['mountPath']}/{item['path']}"
    assert mount.get("readOnly") is True
    # Cloud Run refuses a secret mounted over these.
    assert not re.match(r"/(dev|proc|sys)(/|$)", mount["mountPath"])


def gunicorn_config(env: dict[str, str]) -> dict[str, str]:
    """gunicorn's settings as it reads gunicorn.conf.py with env (and the app loads): `--print-config`."""
    printed = subprocess.run(
        [str(Path(sys.executable).parent / "gunicorn"), "--print-config", "predict:app"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return dict(re.findall(r"^(\w+)\s+= (.*)$", printed, re.MULTILINE))


def test_concurrency_is_what_gunicorn_serves_at_once_and_it_stops_within_cloud_runs_grace(
    revision, container, env, tmp_path
):
    # Cloud Run sets PORT to the container's port, and provides the keys file.
    keys = tmp_path / "keys"
    keys.write_text("a-key\n")
    port = container["ports"][0]["containerPort"]
    config = gunicorn_config({**env, "PORT": str(port), "CHURN_API_KEYS_FILE": str(keys)})
    assert config["bind"] == f"['0.0.0.0:{port}']"
    # One worker a vCPU.
    assert int(config["workers"]) == int(env["WEB_CONCURRENCY"]) == int(container["resources"]["limits"]["cpu"])
    served_at_once = int(config["workers"]) * int(config["threads"])
    assert revision["containerConcurrency"] == served_at_once, (
        f"containerConcurrency is {revision['containerConcurrency']}; gunicorn serves {served_at_once} at once "
        f"({config['workers']} workers of {config['worker_class']}, {config['threads']} threads each)"
    )
    assert int(config["graceful_timeout"]) < SIGTERM_GRACE_S
    # gunicorn ends a stuck request (and answers) before Cloud Run gives up on it.
    assert int(config["timeout"]) < revision["timeoutSeconds"]


def gcloud_commands() -> list[list[str]]:
    """Every `gcloud ...` command line in the documents, as its words (continuation lines joined)."""
    commands = []
    for document in DOCUMENTS:
        text = document.read_text().replace("\\\n", " ")
        for line in re.findall(r"^ {4}(gcloud .*)$", text, re.MULTILINE):
            commands.append(shlex.split(line.partition("  #")[0]))
    return commands


def option(words: list[str], name: str) -> str | None:
    for i, word in enumerate(words):
        if word.startswith(f"{name}="):
            return word.partition("=")[2]
        if word == name:
            return words[i + 1]
    return None


def test_the_gcloud_commands_name_this_service_its_secret_and_its_image(service, container):
    commands = gcloud_commands()
    name, image = service["metadata"]["name"], container["image"]
    repository = image.rpartition(":")[0]
    secret = service["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"]
    replaced = [c for c in commands if c[:4] == ["gcloud", "run", "services", "replace"]]
    assert replaced and all((ROOT / c[4]).resolve() == SERVICE_FILE for c in replaced)
    deployed = [c for c in commands if c[:3] == ["gcloud", "run", "deploy"]]
    assert deployed and all(c[3] == name and option(c, "--image").rpartition(":")[0] == repository for c in deployed)
    assert [c for c in commands if c[:3] == ["gcloud", "secrets", "create"] and c[3] == secret]
    for c in commands:
        if c[:3] == ["gcloud", "run", "services"] and c[3] != "replace":
            assert c[4] == name, shlex.join(c)
    # The image is built and pushed under the name the YAML's placeholder has.
    assert re.fullmatch(r"REGION-docker\.pkg\.dev/PROJECT/\w+/\w+:TAG", image)
    pushed = [c for c in commands if c[:3] == ["gcloud", "artifacts", "repositories"]]
    assert pushed and pushed[0][4] == image.split("/")[2]
