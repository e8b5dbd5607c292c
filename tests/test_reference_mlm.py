"""The minimal reference loop beside the suite (experiments/reference_mlm.py), run as a user runs it."""

import csv
import importlib.util
import math
from pathlib import Path

import pytest

pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "reference_mlm.py"


def reference():
    spec = importlib.util.spec_from_file_location("reference_mlm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("extra", [[], ["--suite-masks", "--suite-model"]])
def test_the_reference_trains_on_the_suites_blocks_and_reports_its_floor(
    corpus_dir, cache, tmp_path, capsys, extra
):
    from symattn.data import DataConfig, prepare_pretraining, val_batches

    out = tmp_path / "ref.csv"
    args = [
        "--source",
        f"path:{corpus_dir}",
        "--vocab",
        "200",
        "--seq-len",
        "32",
        "--val-docs",
        "8",
        "--batch",
        "4",
        "--steps",
        "6",
        "--every",
        "3",
        "--val-blocks",
        "8",
        "--out",
        str(out),
        *extra,
    ]
    assert reference().main(args) == 0
    rows = list(csv.DictReader(out.open()))
    assert [int(r["step"]) for r in rows] == [3, 6]
    assert all(math.isfinite(float(r["val_loss"])) for r in rows)
    data = prepare_pretraining(
        DataConfig(source=f"path:{corpus_dir}", vocab_size=200, seq_len=32, val_docs=8)
    )
    printed = capsys.readouterr().out
    assert f"# L* = {data.floor['context_free_loss']:.4f} nats" in printed
    if extra:
        # The suite's masks: the same validation targets, so the same floor, as a run of the suite.
        floor = data.evaluated_floor(val_batches(data, 4, limit=8))
        assert f", {floor:.4f} on these validation targets" in printed
        loss = float(rows[0]["val_loss"])
        assert float(rows[0]["below_floor"]) == pytest.approx(floor - loss)
