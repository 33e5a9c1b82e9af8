"""The notebooks run top to bottom (on synthetic data and the small multirun), so they never rot,
and they are committed without outputs."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"


def _execute(name: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits the environment: the parameters
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return notebook


def _outputs(notebook: nbformat.NotebookNode, mime: str) -> int:
    return sum(mime in out.get("data", {}) for cell in notebook.cells for out in cell.get("outputs", []))


def _stream_text(notebook: nbformat.NotebookNode) -> str:
    return "".join(
        out.get("text", "")
        for cell in notebook.cells
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream"
    )


def test_data_tour_runs_on_synthetic_data(monkeypatch, tmp_path):
    monkeypatch.delenv("CIFAR_LAB_DATA", raising=False)
    notebook = _execute("data_tour.ipynb", {"CIFAR_LAB_CACHE_DIR": str(tmp_path)}, monkeypatch)
    assert _outputs(notebook, "image/png") >= 4  # samples, balance, histogram, class means
    assert "train min/max per class: 100 100" in _stream_text(notebook)


def test_results_runs_on_a_multirun(small_multirun, monkeypatch):
    notebook = _execute("results.ipynb", {"CIFAR_LAB_RUN": str(small_multirun)}, monkeypatch)
    markdown = "".join(
        out["data"].get("text/markdown", "")
        for cell in notebook.cells
        for out in cell.get("outputs", [])
        if "data" in out
    )
    assert "| optimizer.lr=0.01 | 2 | 0 |" in markdown and "4 jobs, 0 failed" in markdown
    # report plot, learning curves, confusion matrix (+ mistakes unless the best job made none)
    assert _outputs(notebook, "image/png") >= 3
    assert "no confusion matrix" not in _stream_text(notebook)
    assert not list(small_multirun.glob("report.*"))  # nothing written into the run


def test_results_runs_on_a_single_run(small_multirun, monkeypatch):
    notebook = _execute("results.ipynb", {"CIFAR_LAB_RUN": str(small_multirun / "0")}, monkeypatch)
    assert _outputs(notebook, "image/png") >= 3
    assert "no confusion matrix" not in _stream_text(notebook)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip outputs before committing"
    assert notebook.cells[1].metadata.get("tags") == ["parameters"]  # papermill-style parameters cell
    assert "os.environ.get(" in notebook.cells[1].source
