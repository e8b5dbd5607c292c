"""`symattn bench` on a tiny configuration: the tables, the CSV, positive numbers (no timed assertions)."""

import csv
import math

import pytest
import torch
import yaml

from symattn.bench.batches import classification_batch, phase_batch, synthetic_batch
from symattn.bench.models import hf_model, our_model, step_flops_per_token
from symattn.bench.race import run_bench
from symattn.bench.report import COLUMNS, format_table, write_csv
from symattn.bench.spec import BenchSpec
from symattn.cli import build_parser
from symattn.tokens import MASK_TOKEN_ID


def tiny_spec(**kw):
    base = dict(
        size="tiny",
        batch=2,
        seq_len=16,
        ft_batch=3,
        ft_seq_len=12,
        vocab=300,
        rounds=2,
        steps=1,
        warmup=1,
        threads=1,
        peak_size=128,
    )
    return BenchSpec(**{**base, **kw})


def test_synthetic_batch_masks_fifteen_percent_and_labels_only_them():
    b = synthetic_batch(4, 40, 1000, seed=0)
    labelled = b["labels"] != -100
    assert labelled.sum(1).tolist() == [6, 6, 6, 6]
    assert (b["input_ids"][labelled] == MASK_TOKEN_ID).all()
    assert (b["attention_mask"] == 1).all()
    assert torch.equal(b["labels"], synthetic_batch(4, 40, 1000, seed=0)["labels"])


def test_classification_batch_is_padded_as_a_task_batch():
    b = classification_batch(5, 20, 1000, num_labels=3, seed=0)
    lengths = b["attention_mask"].sum(1)
    assert lengths[0] == 20 and ((lengths >= 10) & (lengths <= 20)).all()
    assert ((b["input_ids"] == 0) == (b["attention_mask"] == 0)).all()  # [PAD] exactly past each row's end
    assert (b["token_type_ids"] <= b["attention_mask"]).all() and b["token_type_ids"][0, 10:].all()
    assert b["labels"].shape == (5,) and set(b["labels"].tolist()) <= {0, 1, 2}
    assert torch.equal(b["input_ids"], classification_batch(5, 20, 1000, num_labels=3, seed=0)["input_ids"])


def test_fine_tuning_flops_are_what_both_models_compute():
    pytest.importorskip("transformers")
    from torch.utils.flop_counter import FlopCounterMode

    spec = tiny_spec()
    c = spec.model_config("vanilla")
    batch = phase_batch(spec, "finetune", "cpu")
    for model in (hf_model(c, "finetune", 2), our_model(c, "finetune", spec)):
        with FlopCounterMode(display=False) as counter:
            model(**batch).loss.backward()
        want = step_flops_per_token(c, "finetune", spec) * spec.ft_batch * spec.ft_seq_len
        assert counter.get_total_flops() == pytest.approx(want)


def test_bench_rows_table_and_csv(tmp_path, restore_speed_settings):
    pytest.importorskip("transformers")
    rows = run_bench(tiny_spec(variants=("pairwise",)), log=lambda _: None)
    assert [(r["phase"], r["model"], r["precision"]) for r in rows] == [
        (phase, m, p)
        for phase in ("pretrain", "finetune")
        for p in ("fp32", "bf16")
        for m in ("hf-bert", "pairwise")
    ]
    assert {(r["phase"], r["batch"], r["seq_len"]) for r in rows} == {
        ("pretrain", 2, 16),
        ("finetune", 3, 12),
    }
    for r in rows:
        assert set(r) == set(COLUMNS)
        for key in (
            "tokens_per_s",
            "vs_hf",
            "step_ms_median",
            "peak_mem_mib",
            "state_mib",
            "gflop_per_step",
            "matmul_peak_gflops",
            "mfu",
        ):
            assert r[key] > 0 and math.isfinite(r[key]), key
        assert r["peak_mem_mib"] > r["state_mib"]
    assert all(r["vs_hf"] == 1.0 for r in rows if r["model"] == "hf-bert")
    # HF computes the decoder on every position, ours on the masked ones only
    assert rows[0]["gflop_per_step"] > rows[1]["gflop_per_step"]
    table = format_table(rows)
    assert "tokens/s" in table and "MFU" in table and "hf-bert" in table
    path = tmp_path / "out" / "bench.csv"
    write_csv(rows, path)
    with open(path) as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == COLUMNS and len(read) == 8
    assert float(read[1]["tokens_per_s"]) > 0 and read[-1]["phase"] == "finetune"


def test_bench_command_parses_and_runs(tmp_path, capsys, restore_speed_settings):
    parser = build_parser()
    out = tmp_path / "b.csv"
    args = parser.parse_args(
        [
            "bench",
            "--size",
            "tiny",
            "--batch",
            "2",
            "--seq-len",
            "8",
            "--ft-batch",
            "2",
            "--ft-seq-len",
            "10",
            "--vocab",
            "200",
            "--variants",
            "symmetric",
            "--precision",
            "fp32",
            "--no-hf",
            "--rounds",
            "1",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--no-memory",
            "--csv",
            str(out),
        ]
    )
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "symmetric" in text and "| model" in text and out.exists()
    assert "pre-training step (MLM), batch 2 x 8" in text
    assert "fine-tuning step (sequence classification), batch 2 x 10" in text
    with open(out) as f:
        assert [r["phase"] for r in csv.DictReader(f)] == ["pretrain", "finetune"]


@pytest.mark.parametrize(
    "kw,words",
    [
        ({"variants": ("linear",)}, "unknown attention 'linear'"),
        ({"precisions": ("fp8",)}, "unknown precision"),
        ({"size": "huge"}, "unknown model size"),
        ({"batch": 0}, "batch must be at least 1"),
        ({"seq_len": 1024}, "exceeds the 512 position"),
        ({"ft_seq_len": 600}, "ft-seq-len 600 exceeds the 512 position"),
        ({"ft_batch": 0}, "ft-batch must be at least 1"),
        ({"phases": ("train",)}, "unknown phase 'train'"),
        ({"phases": ()}, "nothing to measure"),
        ({"variants": (), "hf": False}, "nothing to measure"),
    ],
)
def test_bad_bench_settings_are_refused(kw, words):
    with pytest.raises(ValueError, match=words):
        tiny_spec(**kw).check()


@pytest.mark.slow  # about 20 s: run with the slow set
def test_overhead_sweep_reports_start_up_and_tracking_of_each_cell(tmp_path, run_overrides, capsys):
    """`symattn bench --overhead SPEC --overhead-only`: a real worker runs the spec's first matched group."""
    from symattn.config import apply_overrides

    base = apply_overrides({}, run_overrides)
    spec = {
        "name": "tiny-demo",
        "base": base,
        "workers": {"per_device": 2},
        "axes": {"seed": [3, 4], "model.attention.variant": ["vanilla", "pairwise"]},
        "stores": {"mlflow": f"sqlite:///{tmp_path / 'never.db'}"},
    }
    path = tmp_path / "tiny-demo.yaml"
    path.write_text(yaml.safe_dump(spec))
    parser = build_parser()
    out = tmp_path / "b.csv"
    args = parser.parse_args(
        ["bench", "--overhead", str(path), "--overhead-only", "--overhead-steps", "12", "--csv", str(out)]
    )
    assert args.func(args) == 0
    with open(tmp_path / "b-overhead.csv") as f:
        rows = list(csv.DictReader(f))
    # the first seed's group only: one cell per variant, each 12 steps, named as in the sweep
    assert sorted(r["variant"] for r in rows) == ["pairwise", "vanilla"]
    assert all(r["steps"] == "12" and r["cell"].endswith("-s3") for r in rows)
    for r in rows:
        launch, worker = float(r["launch_to_first_step_s"]), float(r["worker_to_first_step_s"])
        assert 0 < launch < worker  # a cell is launched after its worker started
        assert 0 < float(r["tracking_share"]) < 1 and float(r["step_ms"]) > 0
    assert [r["slot_order"] for r in rows] == ["1", "2"]
    assert "worker start" in capsys.readouterr().out
    # neither the spec's own stores nor the project's artifacts and checkpoints are touched
    assert not (tmp_path / "never.db").exists()
    from symattn.paths import project_root

    assert not (project_root() / "mlartifacts" / "tiny-demo-overhead").exists()
    assert not any((tmp_path / "checkpoints").glob("tiny-demo-overhead*"))


def test_overhead_steps_below_the_logging_interval_are_refused(tmp_path, run_overrides):
    from symattn.bench.cell_overhead import check
    from symattn.config import apply_overrides
    from symattn.sweep.spec import SweepSpec

    spec = SweepSpec(
        name="s", base=apply_overrides({}, run_overrides), axes={"model.attention.variant": ["vanilla"]}
    )
    with pytest.raises(ValueError, match="below the spec's tracking.log_every_n_steps \\(5\\)"):
        check(spec, 4)
    check(spec, 5)


def test_overhead_only_without_a_spec_is_refused():
    parser = build_parser()
    with pytest.raises(ValueError, match="--overhead-only needs --overhead SPEC"):
        args = parser.parse_args(["bench", "--overhead-only"])
        args.func(args)
