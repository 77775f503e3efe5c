"""Build the service's image and check containers of it: `make container-test`, and tests/integration/test_container.py.

    CONTAINER_ENGINE=docker .venv/bin/python scripts/container_test.py

The engine is $CONTAINER_ENGINE (default docker): anything with docker's command line, such as podman. The checks:
the build context and the image hold only what serving needs, every package installed is one serving imports, and the
image is at most MAX_IMAGE_MB; /health/ready answers 200; the engine reports the container healthy from the image's
HEALTHCHECK; predict_test.py --url gets the same probability from the container as from the service run outside it;
/metrics counts the prediction; the service runs as a non-root uid; $PORT and $WEB_CONCURRENCY are honoured; an image
built with `--build-arg MODEL_FILE=` a model train.py made serves that model; run as deploy/cloudrun/service.yaml has
Cloud Run run it (read-only root, /tmp in memory, PORT=8080, API keys from a secret volume) it answers, counts and
stops cleanly; `stop -t 10` lets an in-flight request finish and ends the container with exit code 0, not killed at
the timeout. Containers and throwaway images it starts are removed; the image stays, for the layer cache.
"""

import json
import math
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from churn.model.data import file_sha256  # noqa: E402
from churn.model.schema import SAMPLE_CUSTOMER  # noqa: E402
from devtools import free_port, gunicorn_command, running_server  # noqa: E402

IMAGE = "churn-serving:container-test"
CONTEXT_IMAGE = "churn-serving:context-test"
MODEL_IMAGE = "churn-serving:model-test"
CONTAINER_PORT = 9696
# Also Cloud Run's: SIGTERM, then SIGKILL 10 s later.
STOP_TIMEOUT = 10
CLOUD_RUN_SERVICE = ROOT / "deploy" / "cloudrun" / "service.yaml"
# 55 % of the image's 586 MB when it still installed the training packages (scikit-learn, scipy, pandas).
MAX_IMAGE_MB = 322
# What the Dockerfile copies besides the churn package and the model, and what only the dependency stage needs.
APP_FILES = {"gunicorn.conf.py", "predict.py", "Pipfile.lock"}
LOCK_FILES = {"Pipfile", "Pipfile.lock"}
# What serving imports: the app, and the servers that run it (gunicorn's gthread worker as churn/serve/worker.py
# extends it, the default, or its sync one here; waitress on Windows), and psycopg, which the prediction log imports
# when CHURN_PREDICTION_LOG names PostgreSQL (churn/monitor/store.py).
SERVING_IMPORTS = [
    "predict",
    "gunicorn.app.wsgiapp",
    "churn.serve.worker",
    "gunicorn.workers.sync",
    "waitress",
    "psycopg",
]


class EngineError(RuntimeError):
    pass


class Engine:
    """The docker command line, or one that speaks it (podman, or this machine's podman wrapper)."""

    def __init__(self, command: str | None = None):
        command = command or os.environ.get("CONTAINER_ENGINE") or "docker"
        # A relative path such as ../shared/container/podman is taken from the clone's root as well as from here.
        path = shutil.which(command) or ("/" in command and shutil.which(str(ROOT / command)))
        if not path:
            raise EngineError(f"container engine {command!r} not found: set CONTAINER_ENGINE (docker, podman...)")
        self.path = path
        self.is_podman = "podman" in self("--version").stdout.lower()

    def __call__(self, *args: str, check: bool = True, timeout: float = 120, env: dict | None = None):
        result = subprocess.run(
            [self.path, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
        )
        if check and result.returncode != 0:
            raise EngineError(f"{' '.join(args[:2])} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return result

    def build(self, tag: str, context: Path, dockerfile: Path | None = None, build_args: dict | None = None) -> None:
        args = ["build", "-t", tag, *(["-f", str(dockerfile)] if dockerfile else [])]
        args += [arg for name, value in (build_args or {}).items() for arg in ("--build-arg", f"{name}={value}")]
        args.append(str(context))
        # podman writes OCI images unless told otherwise, and the OCI format has no HEALTHCHECK; docker ignores this.
        self(*args, timeout=1800, env={"BUILDAH_FORMAT": "docker"})

    def image_id(self, image: str) -> str | None:
        result = self("image", "inspect", "--format", "{{.Id}}", image, check=False)
        return result.stdout.strip() if result.returncode == 0 else None

    def inspect(self, container: str, template: str) -> str:
        return self("inspect", "--format", template, container).stdout.strip()

    def logs(self, container: str) -> str:
        result = self("logs", container, check=False)
        return result.stdout + result.stderr


@dataclass
class Container:
    id: str
    url: str


def build(engine: Engine, image: str = IMAGE) -> float:
    """Build the project's Dockerfile (with the layer cache) and return the seconds it took."""
    previous = engine.image_id(image)
    start = time.monotonic()
    engine.build(image, ROOT)
    seconds = time.monotonic() - start
    current = engine.image_id(image)
    if previous and previous != current:
        # The image this tag named before would otherwise linger, untagged; one still in use is kept.
        engine("rmi", previous, check=False)
    return seconds


def image_size_mb(engine: Engine, image: str = IMAGE) -> float:
    return int(engine("image", "inspect", "--format", "{{.Size}}", image).stdout.strip()) / 1e6


def start(
    engine: Engine,
    image: str = IMAGE,
    env: dict | None = None,
    container_port: int = CONTAINER_PORT,
    options: tuple[str, ...] = (),
):
    """Run image detached, its container_port published on a free loopback port; options go to `run` as they are."""
    port = free_port()
    env_args = [arg for name, value in (env or {}).items() for arg in ("-e", f"{name}={value}")]
    # A short health interval so that docker reports health within seconds (the image says 10 s).
    result = engine(
        "run", "-d", "--health-interval", "2s", "-p", f"127.0.0.1:{port}:{container_port}", *options, *env_args, image
    )
    return Container(result.stdout.strip().splitlines()[-1], f"http://127.0.0.1:{port}")


def start_as_cloud_run(engine: Engine, image: str, secrets_folder: Path, api_key: str) -> tuple[Container, dict]:
    """Run image as deploy/cloudrun/service.yaml has Cloud Run run it: its port as $PORT, the K_ variables Cloud Run
    sets, its env, a read-only root with /tmp in memory, and each secret volume a read-only folder holding api_key.
    The container, and the YAML's container."""
    service = yaml.safe_load(CLOUD_RUN_SERVICE.read_text())
    name, revision = service["metadata"]["name"], service["spec"]["template"]["spec"]
    (spec,) = revision["containers"]
    port = spec["ports"][0]["containerPort"]
    # Cloud Run's container contract, with the names a first revision gets.
    env = {"PORT": str(port), "K_SERVICE": name, "K_REVISION": f"{name}-00001-abc", "K_CONFIGURATION": name}
    env |= {variable["name"]: variable["value"] for variable in spec["env"]}
    volumes = {volume["name"]: volume["secret"] for volume in revision["volumes"]}
    options = ["--read-only", "--tmpfs", "/tmp"]
    for mount in spec["volumeMounts"]:
        folder = secrets_folder / mount["name"]
        folder.mkdir(mode=0o755)
        for item in volumes[mount["name"]]["items"]:
            (folder / item["path"]).write_text(f"{api_key}\n")
            (folder / item["path"]).chmod(0o644)  # the image's user is not this one
        options += ["-v", f"{folder}:{mount['mountPath']}:ro"]
    return start(engine, image, env=env, container_port=port, options=tuple(options)), spec


def remove(engine: Engine, container: Container) -> None:
    engine("rm", "-f", container.id, check=False)


def wait_ready(engine: Engine, container: Container, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{container.url}/health/ready", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if engine.inspect(container.id, "{{.State.Running}}") != "true":
            raise AssertionError(f"the container exited before it was ready:\n{engine.logs(container.id)[-3000:]}")
        time.sleep(0.3)
    raise AssertionError(f"{container.url}/health/ready did not answer 200 within {timeout} s")


def wait_for_log(engine: Engine, container: Container, pattern: str, count: int = 1, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        logs = engine.logs(container.id)
        if len(re.findall(pattern, logs)) >= count or time.monotonic() > deadline:
            return logs
        time.sleep(0.1)


def health_status(engine: Engine, container: Container, timeout: float = 60) -> str:
    """The engine's health verdict, once it has one: 'healthy' or 'unhealthy' (or 'starting' at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        if engine.is_podman:
            # podman schedules health checks with systemd timers, absent where no systemd runs; this runs
            # the image's HEALTHCHECK command now, and records its verdict as the timer would.
            engine("healthcheck", "run", container.id, check=False)
        status = engine.inspect(container.id, "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}")
        if status in ("healthy", "unhealthy", "none") or time.monotonic() > deadline:
            return status
        time.sleep(1)


def predict_test_answer(url: str) -> dict:
    """What predict_test.py prints (the service's JSON answer) for the sample customer."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "predict_test.py"), "--url", f"{url}/predict"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, f"predict_test.py --url {url}/predict failed:\n{result.stdout}{result.stderr}"
    answer, _ = json.JSONDecoder().raw_decode(result.stdout)
    return answer


def run_in_image(engine: Engine, image: str, *command: str) -> str:
    return engine("run", "--rm", "--entrypoint", command[0], image, *command[1:]).stdout


def churn_package_files() -> set[str]:
    """The churn package's files, as the Dockerfile copies them (.dockerignore leaves caches out)."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "churn").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def default_model_file() -> str:
    """The model an image built without --build-arg serves: the default of the Dockerfile's MODEL_FILE."""
    return re.search(r"^ARG MODEL_FILE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE).group(1)


def model_files(model_file: str) -> set[str]:
    """A model and the metrics train.py writes beside it: what the Dockerfile copies of the one it serves."""
    return {model_file, f"{model_file}.json"}


def trained_models(context: Path = ROOT) -> set[str]:
    """Every model at the top of a build context, with its metrics: .dockerignore lets them all in."""
    return {path.name for pattern in ("model_*.bin", "model_*.bin.json") for path in context.glob(pattern)}


# ---- The checks: each raises AssertionError with what went wrong, or returns what it saw.


def check_build_context(engine: Engine) -> str:
    """.dockerignore lets into the build context only what the Dockerfile copies."""
    with tempfile.TemporaryDirectory() as scratch:
        dockerfile = Path(scratch) / "Dockerfile"
        dockerfile.write_text("FROM python:3.11-slim\nCOPY . /context\n")
        engine.build(CONTEXT_IMAGE, ROOT, dockerfile)
    try:
        listing = run_in_image(engine, CONTEXT_IMAGE, "find", "/context", "-type", "f")
    finally:
        engine("rmi", CONTEXT_IMAGE, check=False)
    context = {line.removeprefix("/context/") for line in listing.split()}
    expected = APP_FILES | LOCK_FILES | churn_package_files() | trained_models()
    missing, unexpected = sorted(expected - context), sorted(context - expected)
    assert context == expected, f"build context: missing {missing}, unexpected {unexpected}"
    return f"the build context is the {len(context)} files the Dockerfile copies"


def app_files(engine: Engine, image: str) -> set[str]:
    listing = run_in_image(engine, image, "find", "/app", "-type", "f")
    return {line.removeprefix("/app/") for line in listing.split()}


def check_image_contents(engine: Engine, image: str = IMAGE) -> str:
    """/app holds the service's files and the one model it serves, nothing else."""
    files, expected = app_files(engine, image), APP_FILES | churn_package_files() | model_files(default_model_file())
    assert files == expected, f"/app: missing {sorted(expected - files)}, unexpected {sorted(files - expected)}"
    return f"/app holds {len(files)} files: the service and {default_model_file()}"


# Run in the image: import what serving imports, then name, for each installed distribution, the top-level
# modules of it that were imported.
IMPORTED_DISTRIBUTIONS = f"""
import importlib, importlib.metadata as metadata, json, sys
for module in {SERVING_IMPORTS!r}:
    importlib.import_module(module)
loaded = {{name.partition(".")[0] for name in sys.modules}}
provides = {{}}
for module, distributions in metadata.packages_distributions().items():
    for distribution in distributions:
        provides.setdefault(distribution, set()).add(module)
print(json.dumps({{d.metadata["Name"]: sorted(provides.get(d.metadata["Name"], set()) & loaded)
                  for d in metadata.distributions()}}))
"""


def check_only_serving_packages(engine: Engine, image: str = IMAGE) -> str:
    """Every installed distribution is imported by serving: no training, test or build package in the image."""
    imported = json.loads(run_in_image(engine, image, "python", "-c", IMPORTED_DISTRIBUTIONS))
    unused = sorted(name for name, modules in imported.items() if not modules)
    assert unused == [], f"installed in the image, never imported by serving ({', '.join(SERVING_IMPORTS)}): {unused}"
    for training in ("scikit-learn", "scipy", "pandas", "matplotlib"):
        assert training not in imported, f"{training} is installed in the image"
    return f"all {len(imported)} installed distributions are imported by serving: {', '.join(sorted(imported))}"


def check_image_size(engine: Engine, image: str = IMAGE) -> str:
    size = image_size_mb(engine, image)
    assert size <= MAX_IMAGE_MB, f"the image is {size:.0f} MB, over {MAX_IMAGE_MB} MB"
    return f"the image is {size:.0f} MB (at most {MAX_IMAGE_MB} MB)"


def check_ready(container: Container) -> str:
    response = requests.get(f"{container.url}/health/ready", timeout=5)
    assert response.status_code == 200, f"/health/ready answered {response.status_code}: {response.text}"
    ready = response.json()
    assert (ready["status"], ready["detail"]) == ("ready", []), response.text
    assert ready["model_version"] == response.headers["X-Model-Version"], response.text
    return f"{container.url}/health/ready answers 200"


def check_healthy(engine: Engine, container: Container) -> str:
    status = health_status(engine, container)
    assert status == "healthy", f"the engine reports the container {status!r} (none: the image has no HEALTHCHECK)"
    return "the engine reports the container healthy"


def check_same_answer_as_outside(container: Container) -> str:
    inside = predict_test_answer(container.url)
    port = free_port()
    with running_server(gunicorn_command(port), port) as (url, _):
        outside = predict_test_answer(url)
    inside_p, outside_p = inside["churn_probability"], outside["churn_probability"]
    assert inside["churn"] == outside["churn"], (inside, outside)
    assert math.isclose(inside_p, outside_p, rel_tol=0, abs_tol=1e-12), (inside, outside)
    return f"predict_test.py gets {inside_p!r} from the container, {outside_p!r} from the service outside it"


def check_metrics(container: Container, headers: dict | None = None) -> str:
    """The workers' metric files are written where the non-root user can: /metrics counts a prediction."""
    requests.post(f"{container.url}/predict", json=SAMPLE_CUSTOMER, headers=headers, timeout=10).raise_for_status()
    response = requests.get(f"{container.url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, f"/metrics answered {response.status_code}"
    counted = re.search(r"^churn_predictions_total ([0-9.e+]+)$", response.text, re.MULTILINE)
    assert counted and float(counted.group(1)) >= 1, "/metrics does not count the prediction:\n" + response.text[:2000]
    return f"/metrics counts {float(counted.group(1)):g} predictions"


def check_non_root(engine: Engine, container: Container) -> str:
    exec_uid = int(engine("exec", container.id, "id", "-u").stdout)
    status = engine("exec", container.id, "cat", "/proc/1/status").stdout
    uids = [int(uid) for uid in re.search(r"^Uid:\s+(.*)$", status, re.MULTILINE).group(1).split()]
    assert exec_uid != 0, "the image's user is root"
    assert 0 not in uids, f"gunicorn (PID 1) runs with uids {uids}"
    return f"gunicorn (PID 1) runs as uid {uids[0]}, not root"


def check_port_and_workers(engine: Engine, image: str = IMAGE) -> str:
    """$PORT moves the service (and its HEALTHCHECK); $WEB_CONCURRENCY sets the number of workers."""
    container = start(engine, image, env={"PORT": "8080", "WEB_CONCURRENCY": "3"}, container_port=8080)
    try:
        wait_ready(engine, container)
        logs = wait_for_log(engine, container, r"Booting worker", count=3)
        assert "Listening at: http://0.0.0.0:8080" in logs, logs[-3000:]
        workers = len(re.findall(r"Booting worker", logs))
        assert workers == 3, f"{workers} workers booted for WEB_CONCURRENCY=3:\n{logs[-3000:]}"
        status = health_status(engine, container)
        assert status == "healthy", f"with PORT=8080 the engine reports the container {status!r}"
    finally:
        remove(engine, container)
    return "PORT=8080 WEB_CONCURRENCY=3: listens on 8080 with 3 workers, and is healthy"


def build_context_copy(directory: Path) -> None:
    """The project's build context in directory, with the Dockerfile's default model and no other."""
    for name in ("Dockerfile", ".dockerignore", *APP_FILES, *LOCK_FILES, *model_files(default_model_file())):
        shutil.copy(ROOT / name, directory / name)
    shutil.copytree(ROOT / "churn", directory / "churn", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def train(output: Path, C: float) -> None:
    """A real train.py run, on the dataset where it finds it (two folds: the same model, a shorter validation)."""
    command = [sys.executable, "train.py", "--C", str(C), "--n-splits", "2", "--output", str(output)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"train.py --C {C} failed:\n{run.stdout}{run.stderr}"


def probability(url: str) -> float:
    response = requests.post(f"{url}/predict", json=SAMPLE_CUSTOMER, timeout=10)
    response.raise_for_status()
    return response.json()["churn_probability"]


def check_model_build_arg(engine: Engine, container: Container) -> str:
    """`build --build-arg MODEL_FILE=model_C=0.1.bin`, a model train.py made: the image holds that model alone and
    serves it by default (its /model card names it), with the probabilities it gives outside, not the default's."""
    with tempfile.TemporaryDirectory() as scratch:
        context = Path(scratch)
        build_context_copy(context)
        model = context / "model_C=0.1.bin"
        train(model, C=0.1)
        port = free_port()
        with running_server(gunicorn_command(port), port, env={"MODEL_FILE": str(model)}) as (url, _):
            outside = probability(url)
        engine.build(MODEL_IMAGE, context, build_args={"MODEL_FILE": model.name})
        try:
            files = app_files(engine, MODEL_IMAGE)
            other = start(engine, MODEL_IMAGE)
            try:
                wait_ready(engine, other)
                card = requests.get(f"{other.url}/model", timeout=10).json()
                inside = probability(other.url)
            finally:
                remove(engine, other)
        finally:
            engine("rmi", MODEL_IMAGE, check=False)
        sha256 = file_sha256(model)
    default = probability(container.url)
    assert model_files(model.name) <= files, f"/app lacks {model.name} or its metrics: {sorted(files)}"
    assert not model_files(default_model_file()) & files, f"/app holds the default model too: {sorted(files)}"
    assert card["model_file"] == model.name and card["sha256"] == sha256, card
    assert card["training"]["params"]["C"] == 0.1, card["training"]
    assert math.isclose(inside, outside, rel_tol=0, abs_tol=1e-12), (inside, outside)
    assert abs(inside - default) > 1e-6, f"C=0.1 answers {inside!r}, as the default model does"
    return f"--build-arg MODEL_FILE={model.name}: serves it ({inside:.6f}; the default model: {default:.6f})"


def check_graceful_stop(engine: Engine, container: Container, headers: dict | None = None) -> str:
    """`stop -t 10` while a request is half sent: the request still gets its answer, and gunicorn exits 0."""
    body = json.dumps(SAMPLE_CUSTOMER).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    port = int(container.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(head + body[:10])
        # Time for a worker to take the connection: one still in the listen queue at SIGTERM is not in flight.
        time.sleep(1)
        started = time.monotonic()
        stop = subprocess.Popen(
            [engine.path, "stop", "-t", str(STOP_TIMEOUT), container.id], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            logs = wait_for_log(engine, container, r"Handling signal: term", timeout=STOP_TIMEOUT)
            assert "Handling signal: term" in logs, f"gunicorn did not log the SIGTERM:\n{logs[-3000:]}"
            client.sendall(body[10:])
            answer = b""
            while chunk := client.recv(65536):
                answer += chunk
        finally:
            _, stop_errors = stop.communicate(timeout=STOP_TIMEOUT + 30)
    seconds = time.monotonic() - started
    status_line, _, rest = answer.decode(errors="replace").partition("\r\n")
    assert status_line.split()[1:2] == ["200"], f"the in-flight request got {status_line!r}"
    probability = json.loads(rest.partition("\r\n\r\n")[2])["churn_probability"]
    assert stop.returncode == 0, f"stop exited {stop.returncode}: {stop_errors.decode(errors='replace')}"
    exit_code = int(engine.inspect(container.id, "{{.State.ExitCode}}"))
    # 137 would be SIGKILL at the timeout; 0 is gunicorn's own graceful exit.
    assert exit_code == 0, f"the container exited with {exit_code}:\n{engine.logs(container.id)[-3000:]}"
    return f"stop -t {STOP_TIMEOUT}: the in-flight request got 200 ({probability:.4f}); exit 0 after {seconds:.1f} s"


def check_cloud_run(engine: Engine, image: str = IMAGE) -> str:
    """As Cloud Run runs it with deploy/cloudrun/service.yaml: ready, its probes' paths answer 200, /predict refuses a
    request without the secret's key and answers one with it, /metrics counts (its files are in the in-memory /tmp),
    nothing fails on the read-only root, and a stop lets an in-flight request finish and exits 0."""
    api_key = secrets.token_urlsafe(32)
    headers = {"Authorization": f"Bearer {api_key}"}
    with tempfile.TemporaryDirectory() as scratch:
        Path(scratch).chmod(0o755)
        container, spec = start_as_cloud_run(engine, image, Path(scratch), api_key)
        try:
            started = time.monotonic()
            wait_ready(engine, container)
            ready_after = time.monotonic() - started
            for probe in ("startupProbe", "livenessProbe"):
                path = spec[probe]["httpGet"]["path"]
                status = requests.get(f"{container.url}{path}", timeout=5).status_code
                assert status == 200, f"the {probe} path {path} answered {status}"
            refused = requests.post(f"{container.url}/predict", json=SAMPLE_CUSTOMER, timeout=10).status_code
            assert refused == 401, f"/predict without a key answered {refused}: CHURN_API_KEYS_FILE was not read"
            counted = check_metrics(container, headers)
            stopped = check_graceful_stop(engine, container, headers)
            logs = engine.logs(container.id)
        finally:
            remove(engine, container)
    port = spec["ports"][0]["containerPort"]
    assert f"Listening at: http://0.0.0.0:{port}" in logs, logs[-3000:]
    assert "Read-only file system" not in logs, logs[-3000:]
    return f"as on Cloud Run (port {port}, read-only root): ready after {ready_after:.1f} s; {counted}; {stopped}"


def main() -> int:
    engine = Engine()
    print(f"engine: {engine.path}{' (podman)' if engine.is_podman else ''}")
    seconds = build(engine)
    print(f"built {IMAGE} in {seconds:.1f} s: {image_size_mb(engine):.0f} MB")
    container = start(engine)
    try:
        wait_ready(engine, container)
        checks = [
            lambda: check_build_context(engine),
            lambda: check_image_contents(engine),
            lambda: check_only_serving_packages(engine),
            lambda: check_image_size(engine),
            lambda: check_ready(container),
            lambda: check_healthy(engine, container),
            lambda: check_same_answer_as_outside(container),
            lambda: check_metrics(container),
            lambda: check_non_root(engine, container),
            lambda: check_port_and_workers(engine),
            lambda: check_model_build_arg(engine, container),
            lambda: check_cloud_run(engine),
            lambda: check_graceful_stop(engine, container),
        ]
        for check in checks:
            print(f"ok   {check()}")
    except AssertionError as e:
        print(f"FAIL {e}", file=sys.stderr)
        return 1
    finally:
        remove(engine, container)
    return 0


if __name__ == "__main__":
    sys.exit(main())
