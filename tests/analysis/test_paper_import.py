"""`symattn import acl2024`: the paper's published results as MLflow runs in the shape of the suite's,
read back through the same reader path as our runs, on real sqlite stores.

The fast tests import a subset of the reference files (every pre-training run, a few fine-tunings);
the slow one imports everything and compares every table of `symattn figures acl2024` drawn from
MLflow with the one drawn from the CSV files."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis import frames, mlflow_runs, outdir, paper_results
from analysis.paper_import import _write, import_paper, paper_runs_to_import
from analysis.paths import REFERENCE_DIR
from symattn import keys
from symattn.cli import main

TABLES = ("runs", "metrics", "latest_metrics", "params", "tags", "experiments", "experiment_tags")


def small_reference(folder):
    """The reference files cut down: the first evaluations of every loss curve, and the fine-tunings
    of CoLA and MNLI (MNLI has a mismatched dev set) for two seeds and three checkpoints."""
    folder.mkdir()
    for size in ("base", "small"):
        name = f"validation_loss_bert_{size}.csv"
        lines = (REFERENCE_DIR / name).read_text().splitlines(keepends=True)
        (folder / name).write_text("".join(lines[:5]))  # 4 evaluations
    final = pd.read_csv(REFERENCE_DIR / paper_results.PAPER_GLUE_FILES["final"])
    final = final[final["finetune_seed"].isin([1, 2]) & final["task"].isin(["cola", "mnli"])]
    final.to_csv(folder / paper_results.PAPER_GLUE_FILES["final"], index=False)
    every = pd.read_csv(REFERENCE_DIR / paper_results.PAPER_GLUE_FILES["checkpoints"])
    every = every[
        every["checkpoint_step"].isin([10000, 50000, 200000]) & every["task"].isin(["cola", "mnli"])
    ]
    every.to_csv(folder / paper_results.PAPER_GLUE_FILES["checkpoints"], index=False)
    return folder


def row_counts(uri) -> dict:
    """Rows of every table that holds what runs record: runs, every metric point, params, tags."""
    with sqlite3.connect(uri.removeprefix("sqlite:///")) as db:
        return {table: db.execute(f"select count(*) from {table}").fetchone()[0] for table in TABLES}


def paper_ids(uri) -> dict:
    """MLflow run id -> the paper's run id (`acl2024/base/vanilla`), from the imported runs' tags."""
    runs = mlflow_runs.search_runs(mlflow_runs.client(uri), frames.PAPER_NAME, {keys.KIND: keys.PRETRAIN})
    return {run.info.run_id: run.data.tags[keys.IMPORTED_ID] for run in runs}


def tags_of_base_escape(run) -> bool:
    """The escape tags a pre-training run carries: what the escape is and what it was measured from."""
    tags = run.data.tags
    return bool(tags[keys.ESCAPE]) and tags[keys.ESCAPE_FLOOR].startswith(
        "plateau level (median of the runs' own) = "
    )


@pytest.fixture
def small(tmp_path):
    reference = small_reference(tmp_path / "reference")
    return reference, f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The cut-down reference imported once, for the tests that only read."""
    folder = tmp_path_factory.mktemp("imported")
    reference, uri = small_reference(folder / "reference"), f"sqlite:///{folder / 'mlflow.db'}"
    import_paper(uri, reference)
    return reference, uri


def test_import_is_complete_and_a_second_import_changes_nothing(small):
    reference, uri = small
    expected = len(paper_runs_to_import(reference))
    first = import_paper(uri, reference)
    assert (first.created, first.kept, first.replaced) == (expected, 0, 0)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(frames.PAPER_NAME)
    assert experiment.tags[keys.EXPERIMENT_KIND] == keys.CUSTOM_MODEL_DEVELOPMENT
    assert "Findings of ACL 2024" in experiment.tags[keys.NOTE]
    before = row_counts(uri)
    assert before["runs"] == expected == 6 + 2 * 3 * 2 * 2 + 3 * 3 * 2
    second = import_paper(uri, reference)
    assert (second.created, second.kept, second.replaced) == (0, expected, 0)
    assert row_counts(uri) == before  # no run, metric point, param or tag added

    # An import interrupted mid-run left that run unfinished: the next one writes it again.
    [victim] = client.search_runs(
        [experiment.experiment_id],
        f"tags.`{keys.IMPORTED_ID}` = 'acl2024/final/small/pairwise/step200000/mnli/ft2'",
    )
    client.update_run(victim.info.run_id, status="RUNNING")
    third = import_paper(uri, reference)
    assert (third.created, third.kept, third.replaced, third.duplicates) == (1, expected - 1, 1, 0)
    assert third.counts() == f"1 run imported, {expected - 1} already there, 1 unfinished one replaced"
    active = mlflow_runs.search_runs(client, frames.PAPER_NAME)
    assert len(active) == expected and {r.info.status for r in active} == {"FINISHED"}

    # Complete second runs of two results (as imports at once wrote them before they took turns):
    # removed, and said to be duplicates, not unfinished runs.
    todo = {run.imported_id: run for run in paper_runs_to_import(reference)}
    parent = {r.data.tags[keys.IMPORTED_ID]: r.info.run_id for r in active}["acl2024/small/pairwise"]
    _write(client, experiment.experiment_id, todo["acl2024/small/vanilla"], None)
    _write(client, experiment.experiment_id, todo[victim.data.tags[keys.IMPORTED_ID]], parent)
    fourth = import_paper(uri, reference)
    assert (fourth.created, fourth.kept, fourth.replaced, fourth.duplicates) == (0, expected, 0, 2)
    assert fourth.counts() == f"0 runs imported, {expected} already there, 2 duplicates removed"
    active = mlflow_runs.search_runs(client, frames.PAPER_NAME)
    assert len(active) == expected and len({r.data.tags[keys.IMPORTED_ID] for r in active}) == expected
    assert import_paper(uri, reference).counts() == f"0 runs imported, {expected} already there"

    # A run of an earlier version's import, without the escape tags it records now, gets them.
    base = {r.data.tags[keys.IMPORTED_ID]: r for r in active}["acl2024/base/vanilla"]
    for tag in (keys.ESCAPE, keys.ESCAPE_FLOOR):
        client.delete_tag(base.info.run_id, tag)
    import_paper(uri, reference)
    tags = client.get_run(base.info.run_id).data.tags
    assert (
        tags[keys.ESCAPE_FLOOR] == base.data.tags[keys.ESCAPE_FLOOR]
        and tags[keys.ESCAPE] == base.data.tags[keys.ESCAPE]
    )


def test_imported_runs_have_the_suites_shape_and_cannot_be_taken_for_its_runs(imported):
    reference, uri = imported
    client = MlflowClient(uri)
    runs = mlflow_runs.search_runs(client, frames.PAPER_NAME)
    by_id = {run.data.tags[keys.IMPORTED_ID]: run for run in runs}
    base = by_id["acl2024/base/vanilla"]
    tags = base.data.tags
    assert base.info.run_name == "bert_base_vanilla" and base.info.status == "FINISHED"
    assert (tags[keys.KIND], tags[keys.SIZE], tags[keys.VARIANT]) == ("pretrain", "base", "vanilla")
    assert (tags[keys.SEED], tags[keys.GROUP]) == ("1", "acl2024/base")
    assert tags[keys.IMPORTED_FROM] == "acl2024" and "imported by `symattn import acl2024`" in tags[keys.NOTE]
    assert base.data.params == {"params_total": "109514298"}
    history = client.get_metric_history(base.info.run_id, keys.VAL_LOSS)
    assert [m.step for m in history] == [250, 500, 750, 1000]
    assert history[0].value == pytest.approx(8.998251914978027)
    # The authors' run names date their runs.
    assert pd.Timestamp(base.info.start_time, unit="ms") == pd.Timestamp("2024-02-04 09:34:11")
    assert base.info.end_time is None  # no duration is published: none shown (not "0 ms")
    # Nothing the suite resumes or fine-tunes from: no config hash, checkpoint or kept weights.
    for run in runs:
        assert not {keys.CONFIG_HASH, keys.CHECKPOINT, keys.DATA_FINGERPRINT} & set(run.data.tags)
        assert not any(t.startswith(keys.KEPT_CHECKPOINT_PREFIX) for t in run.data.tags)

    mnli = by_id["acl2024/checkpoints/base/pairwise/step50000/mnli/ft1"]
    tags = mnli.data.tags
    parent = by_id["acl2024/base/pairwise"].info.run_id
    assert tags[keys.KIND] == "finetune" and tags[keys.PARENT_RUN_ID] == tags[keys.PRETRAIN_RUN_ID] == parent
    assert (tags[keys.CHECKPOINT_STEP], tags[keys.TASK], tags[keys.FINETUNE_SEED]) == ("50000", "mnli", "1")
    assert (tags[keys.VARIANT], tags[keys.SIZE], tags[keys.GROUP]) == ("pairwise", "base", "acl2024/base")
    assert tags[keys.IMPORTED_FILE] == "glue_over_checkpoints.csv" and "eval_results.json" in tags[keys.NOTE]
    assert mnli.info.run_name == "bert_base_pairwise-step50000-mnli-ft1"
    assert {"eval/accuracy", "eval/accuracy_mm", "eval/loss"} <= set(mnli.data.metrics)

    # Their escape, sortable beside ours; a view of the pre-training runs alone, a colour per variant.
    assert tags_of_base_escape(base) and base.data.metrics[keys.ESCAPE_CENSORED] in (0, 1)
    experiment = client.get_experiment_by_name(frames.PAPER_NAME)
    view = json.loads(experiment.tags["mlflow.sharedViewState.acl2024"])
    assert json.loads(view["state"])["searchFilter"] == "tags.kind = 'pretrain'"
    pretrain = [run for run in runs if run.data.tags[keys.KIND] == keys.PRETRAIN]
    assert len({run.data.tags["mlflow.runColor"] for run in pretrain}) == 3  # vanilla, symmetric, pairwise

    from symattn.finetune.source import run_sources

    with pytest.raises(ValueError, match="published results imported from acl2024"):
        run_sources(client, parent, "all")


def test_the_imported_runs_read_back_as_the_csv_files_frames(imported):
    reference, uri = imported
    mlflow, csv = paper_results.imported_paper_frames(uri), paper_results.paper_frames(reference)
    ids = paper_ids(uri)
    columns = ["run_id", "run_name", "state", "kind", "size", "attention", "scheme", "init", "variant"]
    columns += ["seed", "group", "params_total"]
    pd.testing.assert_frame_equal(
        mlflow.runs.assign(run_id=mlflow.runs["run_id"].map(ids))[columns], csv.runs[columns]
    )

    def curves(frame):
        frame = frame.assign(run_id=frame["run_id"].map(lambda r: ids.get(r, r)))
        return frame.sort_values(["run_id", "step"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(curves(mlflow.curves), curves(csv.curves))
    for which in ("glue", "glue_checkpoints"):
        mine = getattr(mlflow, which)
        mine = mine.assign(pretrain_run_id=mine["pretrain_run_id"].map(ids))
        pd.testing.assert_frame_equal(mine, getattr(csv, which))
    assert len(csv.glue) and len(csv.glue_checkpoints)


def symattn(*args):
    return subprocess.run([sys.executable, "-m", "symattn", *args], capture_output=True, text=True)


def test_bad_input_is_one_line_and_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "no-such-folder" / "mlflow.db"
    out = symattn("import", "acl2024", "--tracking-uri", f"sqlite:///{missing}")
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert "does not exist" in out.stderr and not missing.parent.exists()
    out = symattn("import", "acl2025")
    assert out.returncode == 2 and "invalid choice: 'acl2025'" in out.stderr
    # Figures from a store that has none: the error says how to import; nothing is created.
    absent = tmp_path / "absent.db"
    assert (
        main(["figures", "acl2024", "--tracking-uri", f"sqlite:///{absent}", "--out", str(tmp_path / "o")])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("symattn figures: error: no MLflow store") and err.count("\n") == 1
    assert not absent.exists()
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    MlflowClient(empty).search_experiments()  # a store without the import
    capsys.readouterr()  # MLflow's lines as it creates the store
    assert main(["figures", "acl2024", "--tracking-uri", empty, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "0 of the paper's 6 pre-training runs are imported" in err and "symattn import acl2024" in err
    assert err.count("\n") == 1 and not (tmp_path / "o").exists()
    assert [e.name for e in MlflowClient(empty).search_experiments()] == ["Default"]


def table_rows(path, ids):
    """A written table's rows as sets of cells, MLflow run ids read as the paper's (the row order of
    some tables follows the run ids)."""
    text = path.read_text()
    for mlflow_id, paper_id in ids.items():
        text = text.replace(mlflow_id, paper_id)
    if path.suffix == ".csv":
        return sorted(text.splitlines())
    cells = (tuple(cell.strip() for cell in line.split("|")) for line in text.splitlines())
    return sorted(tuple("-" if set(cell) == {"-"} else cell for cell in row) for row in cells)  # widths


@pytest.mark.slow
def test_symattn_figures_acl2024_from_mlflow_writes_the_csv_files_tables(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["import", "acl2024", "--tracking-uri", uri]) == 0
    assert "762 runs imported, 0 already there" in capsys.readouterr().out
    counts = row_counts(uri)
    assert main(["import", "acl2024", "--tracking-uri", uri]) == 0
    assert "0 runs imported, 762 already there" in capsys.readouterr().out
    assert row_counts(uri) == counts

    from_csv, from_mlflow = tmp_path / "csv", tmp_path / "mlflow"
    assert main(["figures", "acl2024", "--out", str(from_csv)]) == 0
    assert "imported runs" not in capsys.readouterr().out
    assert main(["figures", "acl2024", "--tracking-uri", uri, "--out", str(from_mlflow)]) == 0
    text = capsys.readouterr().out
    assert "79.36 ± 0.37" in text and "vanilla / pairwise crossing steps: 2.00" in text
    written = sorted(p.name for p in from_csv.iterdir())
    assert written == sorted(p.name for p in from_mlflow.iterdir())
    ids = paper_ids(uri)
    tables = [name for name in written if name.endswith((".csv", ".md"))]
    assert len(tables) == 16
    for name in tables:
        assert table_rows(from_csv / name, ids) == table_rows(from_mlflow / name, ids), name

    # Each pre-training run's escape, logged as ours are, is the report's, from the plateau it names.
    client = MlflowClient(uri)
    escapes = pd.read_csv(from_csv / "convergence_runs.csv").query("definition == 'escape_0.25'")
    for run in mlflow_runs.search_runs(client, frames.PAPER_NAME, {keys.KIND: keys.PRETRAIN}):
        [row] = escapes[escapes["run_id"] == run.data.tags[keys.IMPORTED_ID]].itertuples()
        assert run.data.metrics[keys.ESCAPE_STEP] == pytest.approx(row.step) and not row.censored
        assert (run.data.metrics[keys.ESCAPE_LOW], run.data.metrics[keys.ESCAPE_CENSORED]) == (row.low, 0)
        floor = row.target + 0.25
        assert run.data.tags[keys.ESCAPE_FLOOR] == f"plateau level (median of the runs' own) = {floor:.3f}"

    # The figures drawn from MLflow are in MLflow too, on the experiment's report run.
    [report] = mlflow_runs.search_runs(client, frames.PAPER_NAME, {keys.KIND: keys.REPORT_RUN})
    logged = {
        f.path.split("/")[-1] for f in client.list_artifacts(report.info.run_id, keys.FIGURES_ARTIFACTS)
    }
    assert logged == set(written) - {outdir.MANIFEST}
    assert f"Logged to MLflow: {len(written) - 1} files in figures/ of the report run" in text  # no manifest


@pytest.mark.slow
def test_two_imports_started_at_once_write_every_run_once(tmp_path):
    # In memory where there is /dev/shm: the two imports take turns, so this is two imports long.
    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path
    try:
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        command = [sys.executable, "-m", "symattn", "import", "acl2024", "--tracking-uri", uri]
        started = [
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"
        ]
        done = [process.communicate(timeout=600) for process in started]
        assert [process.returncode for process in started] == [0, 0], [err for _, err in done]
        assert row_counts(uri)["runs"] == 762  # every row, deleted runs included
        assert len(mlflow_runs.search_runs(MlflowClient(uri), frames.PAPER_NAME)) == 762
        said = sorted(out.strip().split(" (experiment")[0].removeprefix("acl2024: ") for out, _ in done)
        assert said == ["0 runs imported, 762 already there", "762 runs imported, 0 already there"]
    finally:
        if folder != tmp_path:
            shutil.rmtree(folder, ignore_errors=True)


def test_a_study_report_lists_its_runs_beside_the_papers_by_escape_step(run_overrides, tmp_path):
    """`symattn figures NAME` on a store that holds the paper's runs: one list by escape step, the
    escaped first, each naming the floor it was measured from."""
    from analysis import report
    from symattn.config import load_config
    from symattn.run.pretrain import pretrain

    cfg = load_config(None, run_overrides)
    ours = pretrain(cfg)["run_id"]  # 40 steps: censored
    reference = small_reference(tmp_path / "reference")
    for size in ("base", "small"):  # whole curves: the paper's runs escape
        name = f"validation_loss_bert_{size}.csv"
        (reference / name).write_text((REFERENCE_DIR / name).read_text())
    import_paper(cfg.tracking.uri, reference)
    text = report.runs_report("test", cfg.tracking.uri, tmp_path / "out", log_artifacts=False)
    assert "beside_the_paper.md" in text
    beside = pd.read_csv(tmp_path / "out" / "beside_the_paper.csv")
    assert list(beside["source"]) == ["acl2024"] * 6 + ["test"]
    assert beside["escape_step"].iloc[:6].is_monotonic_increasing and not beside["censored"].iloc[:6].any()
    last = beside.iloc[-1]
    assert last["censored"] and last["escape"] == "not reached (>40)" and pd.isna(last["escape_step"])
    floor = float(MlflowClient(cfg.tracking.uri).get_run(ours).data.params["data.val_context_free_loss"])
    assert last["floor"] == f"context-free floor of the validation targets = {floor:.3f}"
    assert beside["floor"].iloc[0].startswith("plateau level (median of the runs' own) = ")
    assert "not a comparison of speed" in (tmp_path / "out" / "beside_the_paper.md").read_text()


def test_a_store_without_the_papers_runs_has_no_list_beside_them(run_overrides, tmp_path):
    from analysis import report
    from symattn.config import load_config
    from symattn.run.pretrain import pretrain

    cfg = load_config(None, run_overrides)
    pretrain(cfg)
    text = report.runs_report("test", cfg.tracking.uri, tmp_path / "out", log_artifacts=False)
    assert "beside_the_paper" not in text and not (tmp_path / "out" / "beside_the_paper.csv").exists()
