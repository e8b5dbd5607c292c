"""The notebooks run headless (nbclient) on the venv's kernel, against the test store."""

import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from analysis.paths import PACKAGE_DIR

ROOT = PACKAGE_DIR.parent


def test_python3_kernel_is_this_interpreter():
    # The kernelspec says "python"; jupyter_client runs it as the current interpreter, so the
    # notebooks see the same environment (and the same `analysis`) as the tests.
    command = KernelManager(kernel_name="python3").format_kernel_cmd()
    assert Path(command[0]).resolve() == Path(sys.executable).resolve()


def _run(name: str, monkeypatch, env: dict) -> nbformat.NotebookNode:
    for key, value in {"PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", **env}.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    notebook = nbformat.read(PACKAGE_DIR / name, as_version=4)
    NotebookClient(
        notebook, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    return notebook


def _outputs(notebook) -> tuple[str, int]:
    text, images = [], 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text.append(output.get("text", ""))
            data = output.get("data", {})
            text.append(data.get("text/markdown", "") + data.get("text/plain", ""))
            images += "image/png" in data
    return "\n".join(text), images


@pytest.mark.slow
def test_paper_figures_notebook(monkeypatch, tmp_path):
    notebook = _run("paper_figures.ipynb", monkeypatch, {"SYMATTN_FIGURES_DIR": str(tmp_path)})
    text, images = _outputs(notebook)
    assert "79.36 ± 0.37" in text and "not reached (>200,000)" in text
    assert images >= 5
    assert (tmp_path / "glue_over_checkpoints.png").exists()


@pytest.mark.slow
def test_demo_notebook(monkeypatch, tmp_path, store, known):
    notebook = _run(
        "demo.ipynb",
        monkeypatch,
        {
            "SYMATTN_TRACKING_URI": store["uri"],
            "SYMATTN_EXPERIMENT": known.EXPERIMENT,
            "SYMATTN_FIGURES_DIR": str(tmp_path),
        },
    )
    text, images = _outputs(notebook)
    assert "escape_0.25" in text and "pairwise-diagonal-identity" in text
    assert "n too small for p < 0.05" in text
    assert "diag/layer0/entropy" in text
    assert images >= 5
    assert (tmp_path / "convergence_tiny.png").exists()
