"""The Docker image, built and run with $CONTAINER_ENGINE: the checks of scripts/container_test.py, one test each.

Marked `container`: `make test` deselects these unless CONTAINER_ENGINE is set. Selected without an engine
(CONTAINER_ENGINE unset and no docker), they fail: they never pass without having run a container.
"""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "container_test.py"
_spec = importlib.util.spec_from_file_location("container_test", SCRIPT)
ct = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ct)

pytestmark = [pytest.mark.container, pytest.mark.slow]


@pytest.fixture(scope="module")
def engine():
    return ct.Engine()


@pytest.fixture(scope="module")
def image(engine):
    ct.build(engine)
    return ct.IMAGE


@pytest.fixture(scope="module")
def container(engine, image):
    container = ct.start(engine, image)
    try:
        ct.wait_ready(engine, container)
        yield container
    finally:
        ct.remove(engine, container)


def test_build_context_is_only_what_the_dockerfile_copies(engine):
    ct.check_build_context(engine)


def test_image_holds_only_what_serving_needs(engine, image):
    ct.check_image_contents(engine, image)


def test_image_installs_only_what_serving_imports(engine, image):
    ct.check_only_serving_packages(engine, image)


def test_image_is_at_most_55_percent_of_the_one_with_training_packages(engine, image):
    ct.check_image_size(engine, image)


def test_ready(container):
    ct.check_ready(container)


def test_engine_reports_the_container_healthy(engine, container):
    ct.check_healthy(engine, container)


def test_predict_test_gets_the_same_probability_as_outside(container):
    ct.check_same_answer_as_outside(container)


def test_metrics_count_predictions(container):
    ct.check_metrics(container)


def test_runs_as_non_root(engine, container):
    ct.check_non_root(engine, container)


def test_port_and_web_concurrency_are_honoured(engine, image):
    ct.check_port_and_workers(engine, image)


def test_model_file_build_arg_serves_that_model(engine, container):
    ct.check_model_build_arg(engine, container)


def test_runs_as_cloud_run_runs_it_and_stops_cleanly(engine, image):
    ct.check_cloud_run(engine, image)


# Last: it stops the module's container.
def test_stop_lets_in_flight_request_finish_and_exits_0(engine, container):
    ct.check_graceful_stop(engine, container)
