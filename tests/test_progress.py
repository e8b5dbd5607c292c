"""Long work shows progress: the data cache's build stages, the worker's start and its live line per
slot, and `symattn status --watch` with the study's ETA (all on real stores, a real worker)."""

import re
from datetime import datetime

import optuna
import pytest
import yaml

from symattn.cli import main
from symattn.config import apply_overrides
from symattn.sweep import status as status_module
from symattn.sweep.progress import (
    STEP,
    STEP_TIME,
    TRAIN_START,
    VAL_LOSS,
    cell_eta,
    cell_rate,
    duration,
    progress_text,
    study_eta,
)
from symattn.sweep.queue import queue
from symattn.sweep.spec import load_spec
from symattn.sweep.status import status_rows, watch
from symattn.sweep.storage import open_storage
from symattn.sweep.worker import work

# --- the rate and ETA, on synthetic attributes ----------------------------------------------------


def test_a_cells_rate_and_eta_count_from_its_training_start_and_last_report():
    attrs = {TRAIN_START: [100, 1000.0], STEP: 300, STEP_TIME: 1050.0, VAL_LOSS: 6.5}
    assert cell_rate(attrs) == pytest.approx(4.0)  # 200 steps in 50 s: a resumed cell counts from 100
    assert cell_eta(attrs, 1000, now=1050.0) == pytest.approx(175.0)  # 700 steps at 4/s
    assert cell_eta(attrs, 1000, now=1060.0) == pytest.approx(165.0)  # time since the report counts
    assert cell_eta(attrs, 1000, now=99999.0) == 0.0  # never negative
    text = progress_text(attrs, 1000, now=1050.0)
    assert text == "step 300/1,000, val/loss 6.5000, 4.0 steps/s, ETA 2m55s"


@pytest.mark.parametrize(
    "attrs",
    [
        {},  # nothing reported yet
        {TRAIN_START: [0, 1000.0]},  # started, no step reported
        {TRAIN_START: [200, 1000.0], STEP: 200, STEP_TIME: 1000.0},  # no step past its start
    ],
)
def test_no_rate_and_no_eta_before_a_step_is_measured(attrs):
    assert cell_rate(attrs) is None and cell_eta(attrs, 1000, now=2000.0) is None
    assert progress_text(attrs, 1000, now=2000.0).endswith("ETA ?")


def cell(state, kind="pretrain", **known):
    return {"state": state, "kind": kind, **known}


def test_the_study_eta_shares_the_work_left_among_the_running_cells():
    cells = [
        cell("COMPLETE", seconds=100.0),
        cell("COMPLETE", seconds=140.0),  # a pre-training cell takes 120 s
        cell("RUNNING", eta=30.0, elapsed=90.0),
        cell("RUNNING", elapsed=20.0),  # no rate yet: 120 - 20 left
        cell("WAITING"),
        cell("WAITING"),
    ]
    # 30 + 100 + 2 x 120 = 370 s of work on 2 busy slots
    assert study_eta(cells) == (pytest.approx(185.0), "")
    # never less than the longest running cell's
    assert study_eta([cell("RUNNING", eta=500.0), cell("RUNNING", eta=10.0)])[0] == pytest.approx(500.0)


def test_the_study_eta_comes_from_running_rates_until_a_cell_finishes():
    cells = [cell("RUNNING", eta=60.0, estimate=100.0, elapsed=40.0), cell("WAITING"), cell("WAITING")]
    assert study_eta(cells) == (pytest.approx(260.0), "")  # 60 + 2 x 100 on one slot


@pytest.mark.parametrize(
    "cells,why",
    [
        ([cell("RUNNING", elapsed=5.0), cell("WAITING")], "no pretrain cell measured yet"),
        ([cell("WAITING"), cell("COMPLETE", seconds=10.0)], "no cell is running"),
        (  # fine-tuning cells are measured on their own
            [cell("COMPLETE", seconds=100.0), cell("RUNNING", eta=5.0), cell("WAITING", "finetune")],
            "no finetune cell measured yet",
        ),
    ],
)
def test_the_study_eta_is_unknown_until_something_is_measured(cells, why):
    assert study_eta(cells) == (None, why)


def test_a_finished_study_has_nothing_left():
    assert study_eta([cell("COMPLETE", seconds=5.0), cell("FAIL")]) == (0.0, "")


def test_durations_read_at_a_glance():
    assert [duration(s) for s in (None, 7.4, 245, 3725)] == ["?", "7s", "4m05s", "1h02m"]


# --- the data cache's build ---------------------------------------------------------------------


def test_a_data_build_says_each_stage_and_a_cache_hit_says_nothing(corpus_dir, cache, capsys):
    from symattn.data import DataConfig, prepare_pretraining

    cfg = DataConfig.model_validate(
        {"source": f"path:{corpus_dir}", "vocab_size": 200, "seq_len": 32, "val_docs": 8}
    )
    prepare_pretraining(cfg)
    err = capsys.readouterr().err
    stages = [
        r"data: building the data for path:\S+ \(wordpiece, seq_len 32\)",
        r"data: read 60 documents \(cleaned, without duplicates\) in \d+\.\ds",
        r"data: trained a WordPiece vocabulary of \d+ on 52 documents in \d+\.\ds",
        r"data: tokenised and packed train: [\d,]+ tokens into [\d,]+ blocks in \d+\.\ds",
        r"data: tokenised and packed val: ",
        r"data: context-free floor L\* = \d\.\d{3} nats in \d+\.\ds",
        r"data: entry \w{12}: [\d,]+ train / \d+ val blocks of 32 tokens, built in \d+\.\ds",
    ]
    lines = err.splitlines()
    assert len(lines) == len(stages), err
    for line, stage in zip(lines, stages):
        assert re.match(r"\d\d:\d\d:\d\d " + stage, line), line
    prepare_pretraining(cfg)
    assert capsys.readouterr().err == ""


# --- the worker and status --watch, on a real study ------------------------------------------------


@pytest.fixture
def study(tmp_path, run_overrides):
    """Two cells of a mini sweep, queued: long enough (200 steps, evaluated every 40) for the worker
    to read their progress a few times."""
    # the worker sets each cell's threads
    given = [o for o in run_overrides if not o.startswith("speed.threads=")]
    base = apply_overrides({}, [*given, "optim.max_steps=200", "eval.every_n_steps=40"])
    spec = {
        "name": "mini-sweep",
        "base": base,
        "axes": {"model.attention.variant": ["vanilla", "symmetric"]},
        "stores": {"optuna": str(tmp_path / "optuna.journal")},
        "workers": {"heartbeat_seconds": 0.2, "grace_seconds": 30},
    }
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(spec))
    queue(load_spec(path))
    return str(tmp_path / "optuna.journal")


def test_the_worker_shows_progress_and_watch_follows_the_study_to_its_end(study, capsys):
    worked = []

    def sleep(seconds):  # between two refreshes of the watch, a worker runs the whole study
        worked.extend(work("mini-sweep", study, "cpu", per_device=2, progress_every=0))

    assert watch("mini-sweep", study, interval=0.01, sleep=sleep) == 2
    out = capsys.readouterr().out
    assert sorted(state for _, state in worked) == ["COMPLETE", "COMPLETE"]

    first, rest = out.split("ETA unknown (no cell is running; 2 cells left, 0 running)\n", 1)
    assert "2 waiting" in first
    # the worker says what it does before the first cell starts
    start = rest.index("tiny-vanilla-lr0.001-s0: started on cpu")
    said = rest[:start]
    assert "study mini-sweep (" in said and ": 2 cells waiting, 0 running elsewhere, 0 complete" in said
    assert re.search(r"2 slots \(2 on cpu, \d+ CPU threads each\)", said)
    assert "opening the MLflow store sqlite:///" in said and "MLflow store open in " in said
    # a line per evaluation it saw, with step/total, the loss, the rate and the ETA
    progress = re.findall(
        r"^\d\d:\d\d:\d\d (tiny-\w+-lr0\.001-s0): step (\d+)/200, val/loss \d\.\d{4}, "
        r"[\d.]+ steps/s, ETA (\S+)$",
        rest,
        flags=re.M,
    )
    assert progress, rest
    assert all(int(step) % 40 == 0 for _, step, _ in progress)  # read at evaluations
    # the trials carry what the rate is computed from
    trials = optuna.load_study(study_name="mini-sweep", storage=open_storage(study)).trials
    for t in trials:
        step0, time0 = t.user_attrs[TRAIN_START]
        assert step0 == 0 and time0 < t.user_attrs[STEP_TIME] and t.user_attrs[STEP] == 200
    # the last refresh: done
    assert rest.rstrip().endswith("no cell is waiting or running")
    assert "2 complete" in rest

    # a finished study: watch prints once and exits 0
    assert main(["status", "mini-sweep", "--storage", study, "--watch", "--interval", "0.01"]) == 0
    once = capsys.readouterr().out
    assert once.count("2 complete") == 1 and once.rstrip().endswith("no cell is waiting or running")


def test_status_shows_a_running_cells_eta(study):
    storage = open_storage(study)
    trial = optuna.load_study(study_name="mini-sweep", storage=storage).trials[0]
    now = datetime.now().timestamp()
    storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.RUNNING)
    for key, value in {TRAIN_START: [0, now - 50], STEP: 100, STEP_TIME: now, VAL_LOSS: 6.0}.items():
        storage.set_trial_user_attr(trial._trial_id, key, value)
    rows = status_rows("mini-sweep", study, now=now)
    assert rows[0]["progress"] == "100/200" and rows[0]["eta"] == pytest.approx(50.0)
    # its whole duration at its rate (it started just now) stands for the waiting cell's
    assert rows[0]["estimate"] == pytest.approx(50.0, abs=5)
    text = status_module.format_status(rows)
    assert re.search(r"100/200 +6\.0000 +50s$", text.splitlines()[2])
    assert status_module.eta_line(rows).startswith("ETA ")


def test_ctrl_c_stops_watching_quietly(study, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(status_module, "watch", interrupted)
    assert main(["status", "mini-sweep", "--storage", study, "--watch"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("store", ["optuna.journal", "sqlite:///{}/optuna.db"])
def test_status_of_an_unknown_study_is_one_line_and_creates_no_store(tmp_path, capsys, store):
    storage = store.format(tmp_path) if "{}" in store else str(tmp_path / store)
    for watching in ([], ["--watch"]):
        assert main(["status", "nope", "--storage", storage, *watching]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no study 'nope'" in err
    assert list(tmp_path.iterdir()) == []
