"""The README a learner reads in ten minutes: short, every link leads somewhere, and every example is true (its
bodies are whole customers the real service accepts, and the answers shown are the ones it gives)."""

import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from churn.model.schema import FEATURES_BY_NAME
from devtools import ROOT, free_port, gunicorn_command, running_server
from tests.helpers import without_ids

README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
# A JSON body sent with curl, and the answer printed under it (the indented lines that follow).
CURL = re.compile(
    r"curl -s -X POST http://localhost:9696(?P<path>/\w+) -H 'Content-Type: application/json' -d '(?P<body>[^']*)'\n"
    r"(?P<answer>(?: {4}\S.*\n)+)"
)
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")


def answer_shown(lines: str) -> object:
    """The answer as the README shows it, cut over several lines: curl prints it on one."""
    return json.loads("".join(line.strip() for line in lines.splitlines()))


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_the_readme_is_read_in_ten_minutes():
    assert len(README.read_text().splitlines()) <= 250


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_relative_link_leads_to_a_file_and_its_heading(document):
    for match in LINK.finditer(document.read_text()):
        target = match["target"]
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        file = (document.parent / path).resolve() if path else document
        assert file.is_file(), f"{document.name} links to {target}, which is not a file"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{document.name} links to {target}: {file.name} has no such heading"


def curl_examples(document: Path) -> list[re.Match]:
    return list(CURL.finditer(document.read_text()))


def test_the_explain_example_sends_a_whole_customer():
    bodies = {match["path"]: json.loads(match["body"]) for match in curl_examples(README)}
    assert set(bodies) == {"/predict", "/explain"}
    assert set(bodies["/explain"]) == set(FEATURES_BY_NAME)  # all 19 features, in the model's spelling
    assert bodies["/explain"] == bodies["/predict"]


@pytest.fixture(scope="module")
def service():
    port = free_port()
    with running_server(gunicorn_command(port, workers=1), port) as (url, _):
        yield url


@pytest.mark.parametrize("document", [README, ROOT / "docs" / "api.md"], ids=lambda path: path.name)
def test_the_curl_examples_show_what_the_service_answers(service, document):
    examples = curl_examples(document)
    assert examples
    for example in examples:
        response = requests.post(f"{service}{example['path']}", json=json.loads(example["body"]), timeout=10)
        assert response.status_code == 200, response.text
        shown = answer_shown(example["answer"])
        assert uuid.UUID(shown["prediction_id"]).version == uuid.UUID(response.json()["prediction_id"]).version == 7
        assert without_ids(response.json()) == without_ids(shown), example["path"]


def test_the_powershell_customer_is_the_curl_one():
    text = (ROOT / "docs" / "windows.md").read_text()
    table = text[text.index("$customer = @{") : text.index("}", text.index("$customer = @{"))]
    customer = {name: json.loads(value) for name, value in re.findall(r"(\w+) = (\"[^\"]*\"|[\d.]+)", table)}
    assert customer == json.loads(curl_examples(README)[0]["body"])


def test_the_log_line_shown_is_an_access_line():
    text = README.read_text()
    start = text.index('    {"time":')
    entry = answer_shown(text[start : text.index("\n\n", start)])
    assert entry["logger"] == "churn.access" and {"request_id", "status", "duration_ms"} <= set(entry)


def test_the_model_comparison_prints_what_the_readme_shows(tmp_path):
    text = README.read_text()
    start = text.index('.venv/bin/python -c "import glob, json')
    command, _, shown = text[start:].partition('"\n')
    # As it is copied from the page: the code block's indentation of four spaces is not part of it.
    code = "\n".join(line.removeprefix("    ") for line in command.removeprefix('.venv/bin/python -c "').splitlines())
    shutil.copy(ROOT / "model_C=1.0.bin.json", tmp_path)  # the committed model; C=0.1 would need a training run
    printed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert printed.stdout.strip() == shown.splitlines()[1].strip()
    assert "test 0.85849" in printed.stdout  # enough digits to tell it from C=0.1's 0.85804
