"""The notebook runs top to bottom on the real data, ends on train.py's test AUC, and its saved outputs are current.

CHURN_UPDATE_NOTEBOOK=1 saves the executed notebook over the committed one: that is how its outputs are refreshed.
"""

import json
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

from devtools import ROOT

pytestmark = pytest.mark.slow

NOTEBOOK = ROOT / "notebooks" / "churn-model.ipynb"
MAX_NOTEBOOK_BYTES = 1_000_000
REFRESH = "refresh it with `CHURN_UPDATE_NOTEBOOK=1 .venv/bin/python -m pytest tests/integration/test_notebook.py`"


def code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def text_outputs(cell) -> list[str]:
    """What a reader sees of a cell as text; images are left out, as fonts may differ from machine to machine."""
    texts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            texts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            texts += [output.data[kind] for kind in ("text/plain", "text/html") if kind in output.data]
    return texts


@pytest.fixture(scope="module")
def committed():
    return nbformat.read(NOTEBOOK, as_version=4)


@pytest.fixture(scope="module")
def executed(dataset_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)  # a copy in memory: the committed file stays as it is
    # The kernel is the 'python3' spec ipykernel installs in this venv, started with this interpreter; it inherits
    # the environment, so it reads the data the tests read, and it runs in notebooks/ as Jupyter would.
    client = NotebookClient(
        nb, kernel_name="python3", timeout=300, record_timing=False, resources={"metadata": {"path": NOTEBOOK.parent}}
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CHURN_DATA", str(dataset_path))
        client.execute()  # raises CellExecutionError, with the cell and its traceback, on the first error
    if os.environ.get("CHURN_UPDATE_NOTEBOOK") == "1":
        nbformat.write(nb, NOTEBOOK)
    return nb


@pytest.fixture(scope="module")
def train_py(train_run):
    return train_run.stdout, json.loads(train_run.model.with_name(train_run.model.name + ".json").read_text())


def test_runs_without_errors_or_warnings(executed):
    cells = code_cells(executed)
    assert [cell.execution_count for cell in cells] == list(range(1, len(cells) + 1))
    for cell in cells:
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.source
        # Warnings (a ConvergenceWarning, a deprecation) reach the reader as stderr.
        assert not [o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stderr"], cell.source


def test_draws_its_plots(executed):
    images = [o for cell in code_cells(executed) for o in cell.outputs if "image/png" in o.get("data", {})]
    # C by CV, the CV folds, the ROC curve, precision/recall by threshold, coefficients, numbers by decile,
    # the global weights and two customers' explanations.
    assert len(images) == 8


def test_explains_with_the_services_explainer_exactly(executed):
    texts = "".join(text for cell in code_cells(executed) for text in text_outputs(cell))
    assert "base_log_odds + Σ contributions is the model's log-odds for every test customer: True" in texts
    assert "raises the churn risk" in texts


def test_ends_on_the_test_auc_train_py_prints(executed, train_py):
    stdout, metrics = train_py
    last = "".join(text_outputs(code_cells(executed)[-1]))
    train_py_line = re.search(r"^auc=0\.\d{3}$", stdout, re.M).group(0)
    assert re.findall(r"^auc=.*$", last, re.M) == [train_py_line]
    assert float(re.search(r"^test_auc=(\S+)$", last, re.M).group(1)) == metrics["test_auc"]


def test_committed_outputs_are_the_current_ones(committed, executed):
    assert NOTEBOOK.stat().st_size < MAX_NOTEBOOK_BYTES
    saved, fresh = code_cells(committed), code_cells(executed)
    for saved_cell, fresh_cell in zip(saved, fresh, strict=True):
        assert saved_cell.execution_count == fresh_cell.execution_count, f"not saved from a run in order: {REFRESH}"
        assert text_outputs(saved_cell) == text_outputs(fresh_cell), f"stale output of {saved_cell.source!r}: {REFRESH}"
        kinds = [sorted(o.get("data", {})) for o in saved_cell.outputs]
        assert kinds == [sorted(o.get("data", {})) for o in fresh_cell.outputs], f"{saved_cell.source!r}: {REFRESH}"
