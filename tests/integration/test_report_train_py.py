"""train.py --report writes the metrics and the ROC and CV plots, headless and without convergence warnings."""

import json

import pytest
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(train_run):
    return train_run, train_run.model.parent


def test_writes_the_metrics_beside_the_model(trained):
    run, out = trained
    report = out / "report"
    assert sorted(p.name for p in report.iterdir()) == ["cv_auc.png", "metrics.json", "roc.png"]
    assert (report / "metrics.json").read_text() == (out / "model.bin.json").read_text()
    assert json.loads((report / "metrics.json").read_text())["model_file"] == "model.bin"
    assert f"the training report is in {report}" in run.stdout


@pytest.mark.parametrize(("name", "size"), [("roc.png", (500, 500)), ("cv_auc.png", (550, 450))])
def test_plots_are_png_images(trained, name, size):
    path = trained[1] / "report" / name
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert path.stat().st_size > 10_000  # a blank image of this size compresses to about 2 kB
    with Image.open(path) as image:
        assert (image.format, image.size) == ("PNG", size)
        # Anti-aliased curves and text give hundreds of colours; an empty canvas has one.
        assert len(image.getcolors(maxcolors=1 << 20)) > 100


def test_headless_and_converged(trained):
    run, _ = trained
    modules = json.loads(run.stdout.splitlines()[-1])
    assert "matplotlib.backends.backend_agg" in modules
    assert "matplotlib.pyplot" not in modules  # so no GUI backend is chosen, and no window can open
    assert "Warning" not in run.stderr
