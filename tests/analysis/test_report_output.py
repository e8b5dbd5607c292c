"""`symattn figures NAME --out DIR` replaces the set of files a report writes as a whole: no file of
an earlier report that the new one no longer writes survives, on disk or under `figures/` in
MLflow; files it did not write (a hand-written README) stay; a report that fails midway leaves
the earlier set as it was. On a real sqlite store."""

import hashlib

import pytest
from mlflow.tracking import MlflowClient

from analysis import outdir, tables
from analysis.cli import main
from symattn import keys
from symattn.tracking.store import experiment_id
from tests.analysis.conftest import matched_group


def logged(client, exp_id: str) -> set:
    [run] = client.search_runs([exp_id], f"tags.{keys.KIND} = '{keys.REPORT_RUN}'")
    return {f.path.split("/")[-1] for f in client.list_artifacts(run.info.run_id, keys.FIGURES_ARTIFACTS)}


def digests(folder) -> dict:
    """Every file's digest, those of the export folder too."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def figures(name, client, out) -> int:
    return main(["figures", name, "--tracking-uri", client.tracking_uri, "--out", str(out)])


@pytest.fixture
def client(tmp_path):
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_a_new_report_leaves_no_stale_file_and_keeps_the_files_it_did_not_write(client, tmp_path, capsys):
    exp_id = experiment_id(client, "stale")
    matched_group(client, exp_id, "tiny", 0)
    small = matched_group(client, exp_id, "small", 0)
    out = tmp_path / "reports" / "stale"
    assert figures("stale", client, out) == 0
    first = {p.name for p in out.iterdir()}
    assert {"loss_small.png", "loss_tiny.png"} <= first
    readme = out / "README.md"
    readme.write_text("What this study shows, written by hand.\n")
    capsys.readouterr()

    for run_id in small:  # the next report has no small runs: no loss_small figure
        client.delete_run(run_id)
    assert figures("stale", client, out) == 0
    text = capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert "loss_tiny.png" in names and not {"loss_small.png", "loss_small.pdf"} & names
    assert readme.read_text() == "What this study shows, written by hand.\n"
    assert "Kept beside them (not written by a report): README.md" in text
    # Only the output folder is left beside it: no partial or old set.
    assert [p.name for p in out.parent.iterdir()] == ["stale"]
    # MLflow holds the same set: the stale figure is removed there too.
    assert logged(client, exp_id) == names - {"README.md", ".symattn-report.json", "export"}
    stale = first - names
    assert {"loss_small.pdf", "loss_small_log.png", "convergence_small.png"} <= stale
    assert f"{len(stale)} files an earlier report logged there and this one did not write: removed" in text


def test_a_report_that_fails_midway_leaves_the_earlier_set_as_it_was(client, tmp_path, monkeypatch):
    exp_id = experiment_id(client, "crash")
    matched_group(client, exp_id, "tiny", 0)
    out = tmp_path / "crash"
    assert figures("crash", client, out) == 0
    before = digests(out)
    matched_group(client, exp_id, "tiny", 1, lift=0.5)  # the next report's loss figure differs

    def fail_at_params(frame, out_dir, name, *args, **kwargs):
        if name == "params":  # after the loss figures are written
            raise OSError("disk full")
        return write_table(frame, out_dir, name, *args, **kwargs)

    write_table = tables.write_table
    monkeypatch.setattr(tables, "write_table", fail_at_params)
    with pytest.raises(OSError, match="disk full"):
        figures("crash", client, out)
    assert digests(out) == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial set left

    monkeypatch.undo()
    assert figures("crash", client, out) == 0
    assert digests(out)["loss_tiny.png"] != before["loss_tiny.png"]


def test_an_out_folder_holding_folders_or_the_current_one_is_refused(client, tmp_path, capsys, monkeypatch):
    exp_id = experiment_id(client, "refused")
    matched_group(client, exp_id, "tiny", 0)
    out = tmp_path / "project"
    (out / "src").mkdir(parents=True)
    (out / "notes.txt").write_text("mine\n")
    assert figures("refused", client, out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds folders a report does not write (src)" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "src"]

    monkeypatch.chdir(out / "src")
    assert figures("refused", client, out) == 2
    assert "holds the current folder" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "src"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_the_new_set_replaces_the_old_with_or_without_an_atomic_exchange(tmp_path, monkeypatch, exchange):
    out = tmp_path / "out"
    with outdir.Staged(out) as stage:
        for name in ("a.csv", "b.png"):
            (stage.path / name).write_text("1")
        stage.commit([stage.path / "a.csv", stage.path / "b.png"])
    (out / "README.md").write_text("mine\n")
    out.chmod(0o750)
    (tmp_path / ".out.partial-999999999-0abc").mkdir()  # left by a report killed midway
    if not exchange:  # a system without renameat2
        monkeypatch.setattr(outdir, "_exchange", lambda a, b: False)
    with outdir.Staged(out) as stage:
        (stage.path / "a.csv").write_text("2")
        written = stage.commit([stage.path / "a.csv"])
    assert written == [out / "a.csv"] and stage.kept == ["README.md"] and stage.recorded
    assert sorted(p.name for p in out.iterdir()) == [outdir.MANIFEST, "README.md", "a.csv"]
    assert (out / "a.csv").read_text() == "2" and (out / "README.md").read_text() == "mine\n"
    assert out.stat().st_mode & 0o777 == 0o750
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_folder_without_a_manifest_keeps_every_file_the_report_does_not_write(tmp_path):
    out = tmp_path / "study"  # as written before reports kept a manifest: a README beside them
    out.mkdir()
    for name in ("README.md", "loss_tiny.png", "loss_old.png"):
        (out / name).write_text("earlier\n")
    with outdir.Staged(out) as stage:
        (stage.path / "loss_tiny.png").write_text("new\n")
        stage.commit([stage.path / "loss_tiny.png"])
    assert (out / "loss_tiny.png").read_text() == "new\n"
    assert stage.kept == ["README.md", "loss_old.png"] and not stage.recorded
    assert stage.kept_text() == (
        "Kept beside them (no record says which an earlier report wrote): README.md, loss_old.png\n"
    )
    with outdir.Staged(out) as stage:  # from now on the manifest tells
        (stage.path / "loss_tiny.png").write_text("newer\n")
        stage.commit([stage.path / "loss_tiny.png"])
    assert stage.kept == ["README.md", "loss_old.png"] and stage.recorded


def test_a_report_killed_between_the_two_renames_gets_the_earlier_set_back(tmp_path):
    """Without renameat2 the earlier set waits under .NAME.old-PID-*/set between two renames: a
    kill there leaves no `out`, and the next report puts that set back rather than removing it."""
    out = tmp_path / "out"
    with outdir.Staged(out) as stage:
        (stage.path / "a.csv").write_text("1")
        stage.commit([stage.path / "a.csv"])
    (out / "README.md").write_text("mine\n")
    waiting = tmp_path / ".out.old-999999999-0abc"  # a dead process's, as the kill left it
    waiting.mkdir()
    out.replace(waiting / "set")
    with outdir.Staged(out) as stage:
        (stage.path / "b.csv").write_text("2")
        stage.commit([stage.path / "b.csv"])
    assert sorted(p.name for p in out.iterdir()) == [outdir.MANIFEST, "README.md", "b.csv"]
    assert (out / "README.md").read_text() == "mine\n" and stage.kept == ["README.md"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
