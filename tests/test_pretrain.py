"""One tracked pre-training run, against a temporary sqlite MLflow store and a real Lightning Trainer."""

import hashlib
import os
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient

from symattn.config import load_config
from symattn.errors import NonFiniteLoss, RunStopped
from symattn.run.pretrain import pretrain


def client_of(cfg):
    return MlflowClient(cfg.tracking.uri)


def history(cfg, run_id, key):
    return [(m.step, m.value) for m in client_of(cfg).get_metric_history(run_id, key)]


def test_a_run_logs_exactly_what_it_promises(run_overrides, tmp_path):
    cfg = load_config(None, run_overrides + ["model.attention.variant=pairwise", "optim.warmup_steps=10"])
    called = time.time()
    result = pretrain(cfg)
    returned = time.time()
    run = client_of(cfg).get_run(result["run_id"])
    assert run.info.status == "FINISHED" and result["steps"] == 40

    tags = run.data.tags
    assert tags["attention"] == "pairwise" and tags["scheme"] == "full" and tags["init"] == "normal"
    assert tags["size"] == "tiny" and tags["seed"] == "0" and tags["kind"] == "pretrain"
    assert len(tags["group"]) == 12 and len(tags["data_fingerprint"]) >= 12 and tags["git_commit"]
    assert tags["version.torch"].startswith("2.") and "version.mlflow" in tags
    assert "invalid_utf8_skipped" not in tags  # no file of the corpus was skipped

    params = run.data.params
    assert params["optim.lr"] == "0.001" and params["model.attention.variant"] == "pairwise"
    assert params["model.vocab_size"] == "200"  # follows the tokenizer
    # the size preset expanded (tiny: 2 layers of 128, 2 heads), the source as its shorthand
    shape = [params[f"model.{k}"] for k in ("layers", "hidden", "heads", "intermediate")]
    assert shape == ["2", "128", "2", "512"]
    assert params["data.source"] == f"path:{cfg.data.source[0].path}"
    assert (
        int(params["params_total"])
        > int(params["params_non_embedding"])
        > int(params["params_attention"])
        > 0
    )
    assert float(params["flops_per_token"]) > 0
    # The data's context-free floor, as the data layer computes it, is a param of the run.
    from symattn.data import prepare_pretraining
    from symattn.run.mlm import validation_batches
    from symattn.run.pretrain import resolve_vocab

    data = prepare_pretraining(cfg.data)
    floor = data.floor
    assert float(params["data.context_free_loss"]) == pytest.approx(floor["context_free_loss"])
    assert float(params["data.unigram_entropy"]) == pytest.approx(floor["unigram_entropy"])
    assert float(params["data.context_free_loss"]) < float(params["data.unigram_entropy"])
    # ... and the same for the run's own validation targets, which its escape is measured from
    own = data.evaluated_floor(validation_batches(resolve_vocab(cfg, data), data))
    assert float(params["data.val_context_free_loss"]) == pytest.approx(own, abs=1e-6)

    expected = {
        "train/loss",
        "train/lr",
        "train/tokens",
        "train/tokens_per_s",
        "train/grad_norm",
        "val/loss",
        "train/accuracy",
        "val/accuracy",
        "time/startup_s",
        "time/tracking_share",
        # 40 steps do not leave the floor: censored, so no `escape/step`
        "escape/low",
        "escape/censored",
    }
    for layer in (0, 1):
        expected |= {
            f"diag/layer{layer}/{k}"
            for k in (
                "entropy",
                "self_mass",
                "logit_sd",
                "s_symmetry",
                "s_sv_max",
                "s_sv_min",
                "s_effective_rank",
            )
        }
    assert set(run.data.metrics) == expected
    # Diagnostics also at step 0, before any update: where each variant starts.
    for key in ("diag/layer0/logit_sd", "diag/layer1/entropy", "diag/layer0/s_sv_max"):
        assert [s for s, _ in history(cfg, run.info.run_id, key)] == [0, 20, 40]
    assert [s for s, _ in history(cfg, run.info.run_id, "train/loss")] == list(range(5, 41, 5))
    assert [s for s, _ in history(cfg, run.info.run_id, "val/loss")] == [20, 40]
    accuracy = history(cfg, run.info.run_id, "val/accuracy")
    assert [s for s, _ in accuracy] == [20, 40] and all(0 < v < 1 for _, v in accuracy)
    assert [s for s, _ in history(cfg, run.info.run_id, "train/accuracy")] == list(range(5, 41, 5))
    assert history(cfg, run.info.run_id, "escape/low") == [(40, 40.0)]
    assert history(cfg, run.info.run_id, "escape/censored") == [(40, 1.0)]
    assert tags["escape"] == "not reached (>40)"
    floor = float(params["data.val_context_free_loss"])
    assert tags["escape_floor"] == f"context-free floor of the validation targets = {floor:.3f}"
    assert history(cfg, run.info.run_id, "train/tokens")[-1] == (40, 40 * 8 * 32)
    lrs = [v for _, v in history(cfg, run.info.run_id, "train/lr")]
    assert lrs[0] < max(lrs) and lrs[-1] < max(lrs)  # warm-up, then decay

    # Start-up counts from the call (by default); tracking is a small share of the loop.
    [(step, startup)] = history(cfg, run.info.run_id, "time/startup_s")
    assert step == 0 and 0 < startup < returned - called
    [(step, share)] = history(cfg, run.info.run_id, "time/tracking_share")
    assert step == 40 and 0 < share < 0.5
    # Points carry the time they were logged, not the time of the batch write.
    stamps = [m.timestamp for m in client_of(cfg).get_metric_history(run.info.run_id, "train/loss")]
    assert stamps == sorted(stamps) and stamps[-1] > stamps[0]

    # a sqlite store keeps its artifacts beside it, not in the project's folder
    location = client_of(cfg).get_experiment(run.info.experiment_id).artifact_location
    assert location == (tmp_path / "mlartifacts" / cfg.tracking.experiment).as_uri()
    artifacts = {a.path for a in client_of(cfg).list_artifacts(run.info.run_id)}
    assert {"config.yaml", "diagnostics.json", "model"} <= artifacts


def test_vanilla_run_reports_how_symmetric_its_query_key_forms_are(run_overrides):
    cfg = load_config(None, run_overrides + ["optim.max_steps=20"])
    result = pretrain(cfg)
    assert -1.0 <= result["diag/layer0/qk_symmetry"] <= 1.0
    assert "diag/layer0/s_symmetry" not in result


def test_same_config_and_seed_give_the_same_curve(run_overrides):
    a = pretrain(load_config(None, run_overrides + ["tracking.experiment=a"]))
    b_cfg = load_config(None, run_overrides + ["tracking.experiment=b"])
    b = pretrain(b_cfg)
    assert history(b_cfg, a["run_id"], "train/loss") == history(b_cfg, b["run_id"], "train/loss")
    assert history(b_cfg, a["run_id"], "val/loss") == history(b_cfg, b["run_id"], "val/loss")
    for key in ("train/accuracy", "val/accuracy"):
        assert history(b_cfg, a["run_id"], key) == history(b_cfg, b["run_id"], key), key
    c = pretrain(load_config(None, run_overrides + ["tracking.experiment=c", "seed=1"]))
    assert history(b_cfg, c["run_id"], "train/loss") != history(b_cfg, a["run_id"], "train/loss")


def test_a_constant_schedule_after_warm_up_does_not_depend_on_the_budget(run_overrides):
    """Escape timing must not move with max_steps: with warmup_steps and a constant schedule, two
    budgets give the same curve up to the shorter one; with a decaying schedule they do not."""

    def curves(schedule, steps):
        cfg = load_config(
            None,
            run_overrides
            + [
                f"optim.schedule={schedule}",
                "optim.warmup_steps=10",
                f"optim.max_steps={steps}",
                "eval.every_n_steps=10",
                f"tracking.experiment={schedule}-{steps}",
            ],
        )
        run_id = pretrain(cfg)["run_id"]
        return {
            key: [(s, v) for s, v in history(cfg, run_id, key) if s <= 20]
            for key in ("train/loss", "train/lr", "val/loss")
        }

    assert curves("constant", 20) == curves("constant", 40)
    assert curves("linear", 20)["train/lr"] != curves("linear", 40)["train/lr"]


def test_stop_below_ends_a_run_that_stayed_below_the_level(run_overrides):
    over = run_overrides + ["eval.every_n_steps=10", "optim.max_steps=60"]
    cfg = load_config(None, over + ['eval.stop_below={level: "L* + 100", evaluations: 3}'])
    result = pretrain(cfg)
    run = client_of(cfg).get_run(result["run_id"])
    assert result["steps"] == 30 and run.info.status == "FINISHED"
    assert run.data.tags["stopped_early_at"] == "30"
    assert [s for s, _ in history(cfg, result["run_id"], "val/loss")] == [10, 20, 30]
    # A level never reached changes nothing.
    never = load_config(None, over + ["eval.stop_below={level: 0.01}", "tracking.experiment=never"])
    result = pretrain(never)
    assert result["steps"] == 60
    assert "stopped_early_at" not in client_of(never).get_run(result["run_id"]).data.tags


class StopAt(pl.Callback):
    """Presses Ctrl-C once the given optimizer step is done."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


@pytest.mark.parametrize("accumulate", [1, 2])
def test_resumed_run_continues_the_same_run_step_for_step(run_overrides, accumulate):
    over = run_overrides + [
        f"optim.accumulate={accumulate}",
        "optim.batch_size=4",
        "checkpoint.every_n_steps=10",
    ]
    whole = pretrain(load_config(None, over + ["tracking.experiment=whole"]))
    cfg = load_config(None, over + ["tracking.experiment=parts"])
    with pytest.raises(RunStopped, match="--resume"):
        pretrain(cfg, callbacks=[StopAt(25)])
    run_id = (
        client_of(cfg)
        .search_runs([client_of(cfg).get_experiment_by_name("parts").experiment_id])[0]
        .info.run_id
    )
    stopped = client_of(cfg).get_run(run_id)
    assert stopped.info.status == "KILLED" and stopped.data.tags["stopped_at_step"] == "25"

    resumed = pretrain(cfg, resume=True)
    assert resumed["run_id"] == run_id  # the same MLflow run
    for key in ("train/loss", "val/loss", "train/lr", "train/tokens", "train/accuracy", "val/accuracy"):
        assert history(cfg, run_id, key) == history(cfg, whole["run_id"], key), key
    assert client_of(cfg).get_run(run_id).info.status == "FINISHED"
    # Each start pays its own start-up: from scratch, and from the checkpoint written at the stop.
    assert [s for s, _ in history(cfg, run_id, "time/startup_s")] == [0, 25]


def test_a_resumed_run_keeps_its_count_of_evaluations_below_the_stop_level(run_overrides):
    over = run_overrides + [
        "eval.every_n_steps=10",
        "optim.max_steps=60",
        "checkpoint.every_n_steps=10",
        'eval.stop_below={level: "L* + 100", evaluations: 3}',
    ]
    cfg = load_config(None, over)
    with pytest.raises(RunStopped):
        pretrain(cfg, callbacks=[StopAt(15)])  # one evaluation below the level so far
    resumed = pretrain(cfg, resume=True)
    assert resumed["steps"] == 30  # not 40: the evaluation at step 10 still counts


def test_resume_without_an_unfinished_run_is_refused(run_overrides):
    with pytest.raises(ValueError, match="no unfinished run of this config"):
        pretrain(load_config(None, run_overrides), resume=True)


def test_matched_variants_share_initial_weights_and_batches(run_overrides):
    from symattn.data import prepare_pretraining
    from symattn.run.mlm import MLMPretraining, PretrainingDataModule
    from symattn.run.pretrain import resolve_vocab

    modules, first_batches, groups = [], [], set()
    for kind in ("vanilla", "symmetric", "pairwise"):
        cfg = load_config(None, run_overrides + [f"model.attention.variant={kind}"])
        data = prepare_pretraining(cfg.data)
        cfg = resolve_vocab(cfg, data)
        modules.append(MLMPretraining(cfg).model.state_dict())
        first_batches.append(next(iter(PretrainingDataModule(cfg, data).train_dataloader())))
        groups.add(cfg.group_id())
    assert len(groups) == 1
    shared = (
        "embeddings",
        "attention.self.query",
        "attention.self.value",
        "attention.output",
        "intermediate",
        "output.dense",
        "cls.predictions",
    )
    for name, value in modules[0].items():
        if any(s in name for s in shared):
            for other in modules[1:]:
                assert torch.equal(other[name], value), name
    for other in first_batches[1:]:
        for key in ("input_ids", "labels", "attention_mask"):
            assert torch.equal(other[key], first_batches[0][key])


def test_non_finite_loss_fails_the_run_with_its_reason(run_overrides):
    cfg = load_config(None, run_overrides + ["optim.lr=1e12", "optim.grad_clip=null", "optim.warmup_steps=0"])
    with pytest.raises(NonFiniteLoss, match="lower optim.lr"):
        pretrain(cfg)
    client = client_of(cfg)
    run = client.search_runs([client.get_experiment_by_name("test").experiment_id])[0]
    assert run.info.status == "FAILED"
    assert "NonFiniteLoss" in run.data.tags["failure_reason"]


def symattn(capsys, *args):
    """The command as a user runs it, in this process (a subprocess would import torch again)."""
    from symattn.cli import main

    code = main(list(args))
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "override,words",
    [
        ("optim.lrr=1", "optim.lrr: unknown setting"),
        ("model.attention.variant=banded", "unknown attention 'banded'"),
        ("data.seq_len=1024", "data.seq_len 1024 exceeds model.max_positions 512"),
        ("optim.lr", "not key=value"),
        ("optim.lr=1e-3", "optim.lr is given twice"),
    ],
)
def test_bad_override_is_one_line_and_creates_nothing(run_overrides, tmp_path, capsys, override, words):
    given = [o for o in run_overrides if o.split("=")[0] != override.split("=")[0] or "twice" in words]
    code, err = symattn(capsys, "train", *[a for o in given for a in ("--set", o)], "--set", override)
    assert code == 2, err
    assert err.strip().count("\n") == 0 and words in err
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_makes_one_run(run_overrides, tmp_path):
    """Lightning relaunches the command once per device; only rank zero tracks."""
    import subprocess
    import sys

    given = [o for o in run_overrides if not o.startswith(("optim.max_steps=", "eval.every_n_steps="))]
    args = [a for o in given for a in ("--set", o)]
    args += [
        "--set",
        "speed.accelerator=cpu",
        "--set",
        "speed.devices=2",
        "--set",
        "speed.strategy=ddp",
        "--set",
        "optim.max_steps=10",
        "--set",
        "eval.every_n_steps=5",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "symattn", "train", *args], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("FINISHED after 10 steps") == 1
    cfg = load_config(None, run_overrides)
    client = client_of(cfg)
    runs = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    # two devices, each with its slice of the global batch of 2 x 8 sequences
    assert history(cfg, runs[0].info.run_id, "train/tokens")[-1] == (10, 10 * 2 * 8 * 32)


def test_a_kept_checkpoint_series_survives_a_resume_without_duplicates(run_overrides):
    """`checkpoint.keep` and `keep_every` keep the weights at those steps, registered on the run
    (path and sha256); a run stopped and resumed keeps the same series, with the same weights as
    an uninterrupted run, once per step."""
    from symattn.model.bert import BertForMaskedLM, ModelConfig
    from symattn.tracking.store import kept_checkpoints

    keep = ["checkpoint.keep=[0, 15]", "checkpoint.keep_every=10", "checkpoint.every_n_steps=10"]
    whole_cfg = load_config(None, run_overrides + keep + ["tracking.experiment=kept-whole"])
    whole = kept_checkpoints(client_of(whole_cfg).get_run(pretrain(whole_cfg)["run_id"]))
    assert sorted(whole) == [0, 10, 15, 20, 30, 40]
    for step, record in whole.items():
        path = Path(record["path"])
        assert path.name == f"step-{step:07d}.pt" and path.parent.name == "kept"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]
    # HF names, weights only: loads into a model of the run's shape
    state = torch.load(whole[40]["path"], weights_only=True)
    assert not any("optimizer" in k for k in state)
    BertForMaskedLM(ModelConfig(size="tiny", vocab_size=200, max_positions=512)).load_hf_state_dict(state)
    assert whole[0]["sha256"] != whole[10]["sha256"]

    cfg = load_config(None, run_overrides + keep + ["tracking.experiment=kept-parts"])
    with pytest.raises(RunStopped):
        pretrain(cfg, callbacks=[StopAt(25)])
    run_id = pretrain(cfg, resume=True)["run_id"]
    parts = kept_checkpoints(client_of(cfg).get_run(run_id))
    assert sorted(parts) == sorted(whole)
    assert {s: r["sha256"] for s, r in parts.items()} == {s: r["sha256"] for s, r in whole.items()}
    kept_files = sorted(p.name for p in Path(parts[40]["path"]).parent.iterdir())
    assert kept_files == [f"step-{s:07d}.pt" for s in sorted(whole)]


def test_system_metrics_are_logged_unless_turned_off(run_overrides, monkeypatch):
    """MLflow's system metrics beside the run's own, from its monitor thread; off by a setting."""
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    cfg = load_config(None, run_overrides + ["tracking.system_metrics=true", "optim.max_steps=20"])
    run_id = pretrain(cfg)["run_id"]
    memory = client_of(cfg).get_metric_history(run_id, "system/system_memory_usage_megabytes")
    cpu = client_of(cfg).get_metric_history(run_id, "system/cpu_utilization_percentage")
    assert memory and min(m.value for m in memory) > 0  # a sample every 0.2 s of a run of seconds
    assert cpu and all(0 <= m.value <= 100 * os.cpu_count() for m in cpu)
    cfg = load_config(None, run_overrides + ["optim.max_steps=20", "tracking.experiment=quiet"])
    assert not [
        k for k in client_of(cfg).get_run(pretrain(cfg)["run_id"]).data.metrics if k.startswith("system/")
    ]


def test_kept_checkpoints_resolve_on_another_machine(run_overrides, tmp_path, monkeypatch):
    """A kept checkpoint's tag holds its path relative to the checkpoint folder: the folder copied
    under another machine's SYMATTN_HOME, the run's weights are found there, sha256 checked."""
    import shutil

    from symattn.finetune.source import run_sources
    from symattn.tracking.store import kept_checkpoints

    cfg = load_config(None, run_overrides + ["checkpoint.keep=[0, 20]", "optim.max_steps=20"])
    run_id = pretrain(cfg)["run_id"]
    run = client_of(cfg).get_run(run_id)
    assert run.data.tags["kept_checkpoint.0000020"].startswith(
        f'{{"path": "test/{run_id}/kept/step-0000020.pt"'
    )

    home = tmp_path / "elsewhere"
    shutil.move(tmp_path / "checkpoints", home / "checkpoints")
    monkeypatch.setenv("SYMATTN_HOME", str(home))
    kept = kept_checkpoints(run)
    assert kept[20]["path"] == str(home / "checkpoints" / "test" / run_id / "kept" / "step-0000020.pt")
    assert [s.weights for s in run_sources(client_of(cfg), run_id, "all")] == [
        Path(kept[0]["path"]),
        Path(kept[20]["path"]),
    ]
    # Written under a SYMATTN_HOME and read without it (on the same machine): found where it was written.
    big = tmp_path / "big"
    cfg = load_config(
        None, run_overrides + ["checkpoint.keep=[20]", "optim.max_steps=20", "checkpoint.dir=null"]
    )
    monkeypatch.setenv("SYMATTN_HOME", str(big))
    written = pretrain(cfg)["run_id"]
    monkeypatch.delenv("SYMATTN_HOME")
    [source] = run_sources(client_of(cfg), written, "all")
    assert source.weights == big / "checkpoints" / "test" / written / "kept" / "step-0000020.pt"

    monkeypatch.setenv("SYMATTN_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="missing .* set SYMATTN_HOME"):
        run_sources(client_of(cfg), run_id, [20])


@pytest.mark.parametrize("keep, words", [("[-1]", "negative step"), ("[abc]", "keep")])
def test_a_bad_keep_series_is_refused(keep, words):
    with pytest.raises(ValueError, match=words):
        load_config(None, [f"checkpoint.keep={keep}"])


def test_corpus_files_skipped_as_not_utf8_are_recorded_on_the_run(run_overrides, corpus_dir):
    """As a fine-tuning run records the task rows it skipped: the count, and the first file."""
    from symattn import keys

    for name in ("doc900.txt", "doc901.txt"):
        (corpus_dir / name).write_bytes(b"Latin-1 text, caf\xe9 and cr\xe8me, is not UTF-8.")
    cfg = load_config(None, run_overrides + ["optim.max_steps=5", "eval.every_n_steps=5"])
    tags = client_of(cfg).get_run(pretrain(cfg)["run_id"]).data.tags
    assert tags[keys.INVALID_UTF8_SKIPPED] == "2"
    assert tags[keys.INVALID_UTF8_FIRST] == str(corpus_dir / "doc900.txt")


def test_skipped_files_are_counted_over_every_source_of_a_corpus():
    from symattn import keys
    from symattn.run.record import skipped_files

    one = {"files": 9, "invalid_utf8_skipped": 2, "invalid_utf8_first": "/c/a.txt"}
    assert skipped_files(one) == {keys.INVALID_UTF8_SKIPPED: "2", keys.INVALID_UTF8_FIRST: "/c/a.txt"}
    several = {
        "documents": 20,
        "sources": [{"invalid_utf8_skipped": 0}, {}, one, {"invalid_utf8_skipped": 1}],
    }
    assert skipped_files(several) == {keys.INVALID_UTF8_SKIPPED: "3", keys.INVALID_UTF8_FIRST: "/c/a.txt"}
    assert skipped_files({"files": 9, "invalid_utf8_skipped": 0}) == skipped_files({}) == {}
