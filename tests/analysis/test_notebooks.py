"""The notebooks run headless (nbclient) on the venv's kernel, against the test store."""

import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from analysis.paths import PACKAGE_DIR

ROOT = PACKAGE_DIR.parent


def test_python3_kernel_is_this_interpreter():
    # The kernelspec says "python"; jupyter_client runs it as the current interpreter, so the
    # notebooks see the same environment (and the same `analysis`) as the tests.
    command = KernelManager(kernel_name="python3").format_kernel_cmd()
    assert Path(command[0]).resolve() == Path(sys.executable).resolve()


def _run(name: str, monkeypatch, env: dict, cwd: Path = ROOT) -> nbformat.NotebookNode:
    for key, value in {"PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", **env}.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    notebook = nbformat.read(PACKAGE_DIR / name, as_version=4)
    NotebookClient(
        notebook, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(cwd)}}
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
@pytest.mark.parametrize("cwd", [PACKAGE_DIR, ROOT], ids=["analysis", "root"])
def test_demo_notebook_from_its_own_folder_or_the_root(cwd, monkeypatch, tmp_path, store, known):
    # With no store given, it finds the project's store (here $SYMATTN_HOME's) wherever it starts.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SYMATTN_TRACKING_URI", raising=False)
    notebook = _run(
        "demo.ipynb",
        monkeypatch,
        {
            "SYMATTN_HOME": str(Path(store["uri"].removeprefix("sqlite:///")).parent),
            "SYMATTN_EXPERIMENT": known.EXPERIMENT,
            "SYMATTN_FIGURES_DIR": str(tmp_path),
        },
        cwd=cwd,
    )
    text, images = _outputs(notebook)
    assert "escape_0.25" in text and "pairwise-diagonal-identity" in text
    assert "n too small for p < 0.05" in text
    assert "diag/layer0/entropy" in text
    assert images >= 5
    assert (tmp_path / "convergence_tiny.png").exists()


def test_demo_notebook_defaults_to_the_demo_study():
    source = nbformat.read(PACKAGE_DIR / "demo.ipynb", as_version=4).cells[1].source
    demo = yaml.safe_load((ROOT / "experiments" / "quick.yaml").read_text())["name"]  # `make demo`'s
    assert f'os.environ.get("SYMATTN_EXPERIMENT", "{demo}")' in source


@pytest.mark.parametrize("name, figures", [("paper_figures.ipynb", 5), ("demo.ipynb", 4)])
def test_notebooks_are_committed_with_their_outputs(name, figures):
    # What the repository page shows: every code cell run once, in order, without an error, figures in.
    notebook = nbformat.read(PACKAGE_DIR / name, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert _outputs(notebook)[1] >= figures
