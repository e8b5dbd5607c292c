"""`symattn figures NAME` logs its figures and tables to MLflow: under `figures/` of the study's run,
or of one run of kind `report` in an experiment without one; on a real sqlite store."""

import pytest
from mlflow.tracking import MlflowClient

from analysis import mlflow_runs, outdir, report
from analysis.cli import main
from symattn import keys
from symattn.tracking.store import experiment_id
from tests.analysis.conftest import matched_group


def figures_of(client, run_id: str) -> set:
    return {
        f.path.removeprefix(f"{keys.FIGURES_ARTIFACTS}/") for f in client.list_artifacts(run_id, "figures")
    }


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """One store; each test has experiments of its own."""
    return MlflowClient(f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}")


def test_a_studys_figures_and_tables_are_artifacts_of_its_study_run(client, tmp_path):
    exp_id = experiment_id(client, "art")
    study_run = client.create_run(
        exp_id, tags={keys.KIND: keys.STUDY_RUN, keys.STUDY: "art"}, run_name="art"
    ).info.run_id
    matched_group(client, exp_id, parent=study_run, study="art")
    out = tmp_path / "out"
    text = report.runs_report("art", client.tracking_uri, out)

    logged = figures_of(client, study_run)
    assert {"loss_tiny.png", "loss_tiny.pdf", "loss_tiny_log.png", "convergence_tiny.png"} <= logged
    assert {"params.csv", "params.md", "convergence_summary.csv", "convergence_summary.md"} <= logged
    assert logged == {p.name for p in out.iterdir()} - {outdir.MANIFEST, "export"}  # the export stays on disk
    assert f"of the study run 'art' ({study_run})" in text
    # No other run was made, and the readers still see the three runs of the design only.
    assert len(client.search_runs([exp_id])) == 4
    assert len(mlflow_runs.load_runs("art", client.tracking_uri).runs) == 3
    # A second report replaces the files of the same names.
    (out / "params.csv").unlink()
    report.runs_report("art", client.tracking_uri, out)
    assert figures_of(client, study_run) == logged


def test_standalone_runs_get_one_report_run_and_readers_skip_it(client, tmp_path):
    exp_id = experiment_id(client, "solo")
    matched_group(client, exp_id)
    for _ in range(2):  # the second report finds the first's run
        assert (
            main(["figures", "solo", "--tracking-uri", client.tracking_uri, "--out", str(tmp_path / "o")])
            == 0
        )
    [run] = client.search_runs([exp_id], f"tags.{keys.KIND} = '{keys.REPORT_RUN}'")
    assert run.data.tags[keys.REPORT_OF] == "solo" and run.info.run_name == "solo figures"
    assert run.info.status == "FINISHED" and "artifact folder `figures/`" in run.data.tags[keys.NOTE]
    assert {"loss_tiny.png", "params.csv", "convergence_runs.md"} <= figures_of(client, run.info.run_id)
    assert len(mlflow_runs.load_runs("solo", client.tracking_uri).runs) == 3

    # --no-artifacts: the files are written, nothing is logged.
    quiet = experiment_id(client, "quiet")
    matched_group(client, quiet)
    args = [
        "figures",
        "quiet",
        "--tracking-uri",
        client.tracking_uri,
        "--out",
        str(tmp_path / "q"),
        "--no-artifacts",
    ]
    assert main(args) == 0
    assert (tmp_path / "q" / "loss_tiny.png").exists()
    assert len(client.search_runs([quiet])) == 3
