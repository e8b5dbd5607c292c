import numpy as np
import pandas as pd
import pytest

from analysis import frames, mlflow_runs, paper_results


def test_variant_label():
    assert mlflow_runs.variant_label("vanilla", "none", "none") == "vanilla"
    assert mlflow_runs.variant_label("pairwise", "full", "normal") == "pairwise"
    assert mlflow_runs.variant_label("pairwise", "diagonal") == "pairwise-diagonal"
    assert mlflow_runs.variant_label("pairwise", "symmetric", "identity") == "pairwise-symmetric-identity"
    assert mlflow_runs.variant_label("symmetric", None, float("nan")) == "symmetric"


# ---------------------------------------------------------------- MLflow store


def test_runs_frame_holds_every_run_with_its_attributes(loaded, store, known):
    runs = loaded.runs.set_index("run_id")
    assert len(runs) == len(known.ESCAPE) + 2  # + a failed attempt + a running run
    assert runs.loc[store["failed"], "state"] == "FAILED"
    assert runs.loc[store["diagonal"], "state"] == "RUNNING"
    assert runs.loc[store["diagonal"], "variant"] == "pairwise-diagonal-identity"
    vanilla = runs.loc[store["ids"][("vanilla", 2)]]
    assert vanilla["variant"] == "vanilla" and vanilla["seed"] == 2
    assert vanilla["group"] == "tiny-s2" and vanilla["size"] == "tiny"
    assert vanilla["kind"] == "pretrain" and vanilla["study"] == known.STUDY
    assert vanilla["params_total"] == known.PARAMS["vanilla"]
    assert vanilla["flops_per_token"] == 6 * known.PARAMS["vanilla"]
    assert vanilla["param.optim.lr"] == pytest.approx(1e-4)
    assert vanilla["param.model.size"] == "tiny"
    assert str(runs["seed"].dtype) == "Int64"


def test_curves_are_exact(loaded, store, known):
    curves = loaded.curves
    for (attention, seed), escape in known.ESCAPE.items():
        steps, values = frames.curve(curves, store["ids"][(attention, seed)])
        expected_steps, expected = known.curve_of(escape)
        np.testing.assert_array_equal(steps, expected_steps)
        np.testing.assert_allclose(values, expected)
    steps, values = frames.curve(curves, store["diagonal"])
    assert steps[-1] == known.DIAGONAL_LAST
    steps, values = frames.curve(curves, store["ids"][("pairwise", 1)], "train/loss")
    assert len(steps) == known.LAST // 10
    assert values[0] == pytest.approx(known.val_loss(10, 400) + 0.1)
    assert set(curves["metric"]) == {"val/loss", "train/loss", "train/lr", "diag/layer0/entropy"}
    assert list(curves.columns) == frames.CURVE_COLUMNS


def test_metric_selection_study_lookup_and_tag_filter(store, known):
    by_study = mlflow_runs.load_runs(known.STUDY, store["uri"])  # no experiment of that name
    assert set(by_study.curves["metric"]) == {"val/loss"}
    assert len(by_study.runs) == len(known.ESCAPE) + 2
    vanilla = mlflow_runs.load_runs(known.EXPERIMENT, store["uri"], tags={"attention": "vanilla"})
    assert set(vanilla.runs["variant"]) == {"vanilla"} and len(vanilla.runs) == 4
    assert vanilla.glue.empty  # fine-tuning runs have no such tag


def test_unknown_name_and_missing_store(store, tmp_path):
    with pytest.raises(LookupError):
        mlflow_runs.load_runs("no-such-thing", store["uri"])
    with pytest.raises(FileNotFoundError):
        mlflow_runs.load_runs("x", f"sqlite:///{tmp_path}/absent.db")
    assert not (tmp_path / "absent.db").exists()


def test_one_run_per_cell_keeps_the_retry_not_the_failed_attempt(loaded, store, known):
    kept = frames.one_run_per_cell(loaded.runs)
    assert len(kept) == len(known.ESCAPE) + 1
    assert store["failed"] not in set(kept["run_id"])
    assert store["diagonal"] in set(kept["run_id"])
    finished = frames.one_run_per_cell(loaded.runs, states=["FINISHED"])
    assert set(finished["state"]) == {"FINISHED"} and len(finished) == len(known.ESCAPE)


def test_glue_frames_from_finetuning_runs(loaded, store, known):
    every = loaded.glue_checkpoints
    assert list(every.columns) == frames.GLUE_COLUMNS
    assert set(every["checkpoint_step"]) == {500, 1000, 2000}
    assert set(every["metric"]) <= frames.GLUE_METRICS  # eval/loss left out
    pairwise = every[every["pretrain_run_id"] == store["ids"][("pairwise", 1)]]
    assert set(pairwise["variant"]) == {"pairwise"} and set(pairwise["group"]) == {"tiny-s1"}
    n_values = sum(len(m) for m in known.TASK_METRICS.values())
    assert len(every) == 3 * 4 * n_values  # variants x (3 ckpts + 1 seed)
    final = loaded.glue
    assert set(final["checkpoint_step"]) == {2000}
    assert set(final["finetune_seed"]) == {1, 2}
    cola = final[(final["task"] == "cola") & (final["variant"] == "pairwise") & (final["finetune_seed"] == 1)]
    assert cola["metric"].tolist() == ["matthews_correlation"]
    assert cola["value"].iloc[0] == pytest.approx(0.80)


# ---------------------------------------------------------------- the paper's results


def test_paper_frames():
    data = paper_results.paper_frames()
    assert len(data.runs) == 6
    assert data.runs.set_index("run_id").loc["acl2024/base/pairwise", "params_total"] == 103_017_018
    counts = data.curves.groupby("run_id")["step"].agg(["min", "max", "count"])
    assert (counts["min"] == 250).all() and (counts["max"] == 200_000).all()
    assert (counts["count"] == 800).all()
    steps, loss = frames.curve(data.curves, "acl2024/base/vanilla")
    assert np.all(np.diff(steps) == 250)
    assert loss[0] == pytest.approx(8.998251914978027)  # first row of the export
    assert loss[-1] == pytest.approx(1.6833235025405884)  # step 200K, not the re-evaluation
    assert set(data.glue["finetune_seed"]) == {1, 2, 3, 4, 5}
    assert set(data.glue_checkpoints["size"]) == {"base"}
    assert data.glue_checkpoints["checkpoint_step"].nunique() == 18
    assert isinstance(data.glue, pd.DataFrame) and list(data.glue.columns) == frames.GLUE_COLUMNS


def test_setting_labels_name_what_differs_besides_attention_and_seed():
    runs = pd.DataFrame(
        {
            "run_id": list("abcdef"),
            "param.model.attention.variant": ["vanilla", "pairwise"] * 3,
            "param.seed": [0, 0, 1, 1, 0, 0],
            "param.data.seed": [0, 0, 1, 1, 0, 0],
            "param.optim.lr": [0.002] * 4 + [0.005] * 2,
            "param.model.init_std": [0.02] * 6,
            "param.data.context_free_loss": [5.5] * 6,
            "param.speed.threads": [1, 2, 1, 2, 1, 2],  # never changes results: not a setting
        }
    )
    labels = frames.setting_labels(runs)
    assert list(labels) == ["lr=0.002"] * 4 + ["lr=0.005"] * 2
    assert set(frames.setting_labels(runs.iloc[:4])) == {""}


def test_a_grid_is_reported_per_setting_never_pooled(tmp_path):
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from analysis import report

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("grid", artifact_location=(tmp_path / "a").as_uri())
    for lr, escape in ((0.002, 600), (0.005, 300)):
        for seed in (0, 1):
            run = client.create_run(
                experiment,
                tags={
                    "kind": "pretrain",
                    "attention": "vanilla",
                    "variant": "vanilla",
                    "size": "tiny",
                    "seed": str(seed),
                    "group": f"g{lr}-{seed}",
                },
            )
            steps = range(100, 1501, 100)
            client.log_batch(
                run.info.run_id,
                params=[
                    Param("optim.lr", str(lr)),
                    Param("seed", str(seed)),
                    Param("data.val_context_free_loss", "6.0"),
                ],
                metrics=[
                    Metric("val/loss", 6.0 if s <= escape else 6.0 - (s - escape) / 100, 0, s) for s in steps
                ],
            )
            client.set_terminated(run.info.run_id)
    text = report.runs_report("grid", uri, tmp_path / "out")
    summary = pd.read_csv(tmp_path / "out" / "convergence_summary.csv")
    escape = summary[summary["definition"] == "escape_0.25"].set_index("setting")
    assert escape.loc["lr=0.002", "mean"] == pytest.approx(625)
    assert escape.loc["lr=0.005", "mean"] == pytest.approx(325)
    assert escape["n"].tolist() == [2, 2]
    assert "setting 1: lr=0.002" in text and "setting 2: lr=0.005" in text
    assert (tmp_path / "out" / "loss_tiny_2.png").exists()
