"""`symattn figures NAME` logs its figures and tables to MLflow: under `figures/` of the study's run,
or of one run of kind `report` in an experiment without one; on a real sqlite store."""

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from analysis import frames, report
from analysis.cli import main
from symattn import keys
from symattn.tracking import experiment_id

VARIANTS = {"vanilla": 400, "symmetric": 300, "pairwise": 200}  # variant -> step it leaves the plateau


def loss(step: int, escape: int) -> float:
    return 6.0 if step <= escape else max(2.0, 6.0 - (step - escape) / 100)


def pretrain_runs(client, exp_id: str, parent: str | None = None, study: str | None = None) -> None:
    """A matched group of three finished runs with known validation curves."""
    for variant, escape in VARIANTS.items():
        tags = {
            keys.KIND: keys.PRETRAIN,
            keys.ATTENTION: variant,
            keys.SCHEME: "none",
            keys.INIT: "none",
            keys.VARIANT: variant,
            keys.SIZE: "tiny",
            keys.SEED: "0",
            keys.GROUP: "tiny-s0",
            **({keys.STUDY: study, keys.PARENT_RUN_ID: parent} if study else {}),
        }
        run_id = client.create_run(exp_id, tags=tags, run_name=f"tiny-{variant}-s0").info.run_id
        params = [Param("params_total", "1000"), Param(keys.VAL_FLOOR, "6.0")]
        metrics = [Metric(keys.VAL_LOSS, loss(s, escape), 0, s) for s in range(50, 1001, 50)]
        client.log_batch(run_id, metrics=metrics, params=params)
        client.set_terminated(run_id)


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
    pretrain_runs(client, exp_id, parent=study_run, study="art")
    out = tmp_path / "out"
    text = report.runs_report("art", client.tracking_uri, out)

    logged = figures_of(client, study_run)
    assert {"loss_tiny.png", "loss_tiny.pdf", "loss_tiny_log.png", "convergence_tiny.png"} <= logged
    assert {"params.csv", "params.md", "convergence_summary.csv", "convergence_summary.md"} <= logged
    assert logged == {p.name for p in out.iterdir()}
    assert f"of the study run 'art' ({study_run})" in text
    # No other run was made, and the readers still see the three runs of the design only.
    assert len(client.search_runs([exp_id])) == 4
    assert len(frames.load_runs("art", client.tracking_uri).runs) == 3
    # A second report replaces the files of the same names.
    (out / "params.csv").unlink()
    report.runs_report("art", client.tracking_uri, out)
    assert figures_of(client, study_run) == logged


def test_standalone_runs_get_one_report_run_and_readers_skip_it(client, tmp_path):
    exp_id = experiment_id(client, "solo")
    pretrain_runs(client, exp_id)
    for _ in range(2):  # the second report finds the first's run
        assert (
            main(["figures", "solo", "--tracking-uri", client.tracking_uri, "--out", str(tmp_path / "o")])
            == 0
        )
    [run] = client.search_runs([exp_id], f"tags.{keys.KIND} = '{keys.REPORT_RUN}'")
    assert run.data.tags[keys.REPORT_OF] == "solo" and run.info.run_name == "solo figures"
    assert run.info.status == "FINISHED" and "artifact folder `figures/`" in run.data.tags[keys.NOTE]
    assert {"loss_tiny.png", "params.csv", "convergence_runs.md"} <= figures_of(client, run.info.run_id)
    assert len(frames.load_runs("solo", client.tracking_uri).runs) == 3

    # --no-artifacts: the files are written, nothing is logged.
    quiet = experiment_id(client, "quiet")
    pretrain_runs(client, quiet)
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
