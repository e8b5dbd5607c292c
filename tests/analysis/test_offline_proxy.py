"""The offline proxy score over checkpoints, from real MLflow runs written as `symattn finetune`
writes them: values, crossings with their bracketing checkpoints, the fine-tuning-seed noise, and
the report's figure and tables.

Design: size `tiny`, two matched groups (pre-training seeds 1, 2) of pairwise and vanilla,
checkpoints 100, 200, 400, 800, two offline tasks (rotten-tomatoes: accuracy; sms-spam: F1),
three fine-tuning seeds. Every task's value of run r at checkpoint c and fine-tuning seed s is
BASE[r][c] + DELTA[task][s] * SPREAD[c] percent, so each run's proxy score at c is BASE[r][c] and
the spread across seeds is known. Pairwise seed 1 also has a checkpoint 50 fine-tuned on
rotten-tomatoes alone (one seed): it must get no proxy score.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis import frames, glue, glue_report, mlflow_runs, report, tables
from symattn import keys
from symattn.data.metrics import SCORE_METRICS, compute_metrics

EXPERIMENT = STUDY = "offline-proxy"
BASE = {
    ("pairwise", 1): {100: 60, 200: 70, 400: 78, 800: 80},
    ("pairwise", 2): {100: 60, 200: 66, 400: 72, 800: 82},
    ("vanilla", 1): {100: 55, 200: 62, 400: 68, 800: 74},
    ("vanilla", 2): {100: 55, 200: 60, 400: 70, 800: 75},
}
SPREAD = {100: 1, 200: 2, 400: 3, 800: 4}
DELTA = {"rotten-tomatoes": (-1, 0, 1), "sms-spam": (-2, 0, 2)}  # by fine-tuning seed 1, 2, 3
SMS_ACCURACY = 0.97  # logged beside F1, as finetune logs every metric: the proxy must take F1
PARTIAL_STEP = 50
SCHEME = {"vanilla": ("none", "none"), "pairwise": ("full", "normal")}


def _pretrain(client, experiment_id, variant, seed) -> str:
    from mlflow.entities import Metric, Param

    scheme, init = SCHEME[variant]
    tags = {
        keys.KIND: keys.PRETRAIN,
        keys.ATTENTION: variant,
        keys.SCHEME: scheme,
        keys.INIT: init,
        keys.VARIANT: variant,
        keys.SIZE: "tiny",
        keys.SEED: str(seed),
        keys.GROUP: f"tiny-s{seed}",
        keys.STUDY: STUDY,
        keys.DATA_FINGERPRINT: "abc123",
    }
    run = client.create_run(experiment_id, tags=tags, run_name=f"{variant}-s{seed}")
    loss = [
        Metric(keys.VAL_LOSS, 6.0 if s <= 300 else 6.0 - (s - 300) / 200, 0, s) for s in range(50, 801, 50)
    ]
    params = [Param("seed", str(seed)), Param(keys.VAL_FLOOR, "6.0")]
    client.log_batch(run.info.run_id, metrics=loss, params=params)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _finetune(client, experiment_id, parent, variant, seed, step, task, finetune_seed, value, params=None):
    """One run with the tags and metrics (and, given `params`, the params) `symattn.finetune.run.
    finetune_one` writes."""
    from mlflow.entities import Metric, Param

    scheme, init = SCHEME[variant]
    tags = {
        keys.KIND: keys.FINETUNE,
        keys.PARENT_RUN_ID: parent,
        keys.PRETRAIN_RUN_ID: parent,
        keys.CHECKPOINT_STEP: str(step),
        keys.TASK: task,
        keys.FINETUNE_SEED: str(finetune_seed),
        keys.VARIANT: variant,
        keys.ATTENTION: variant,
        keys.SCHEME: scheme,
        keys.INIT: init,
        keys.SIZE: "tiny",
        keys.SEED: str(seed),
        keys.GROUP: f"tiny-s{seed}",
        keys.STUDY: STUDY,
        keys.DATA_FINGERPRINT: "abc123",
    }
    run = client.create_run(experiment_id, tags=tags)
    # compute_metrics' names: `acc` gives accuracy and score; `f1` gives accuracy, f1 and score.
    logged = {"accuracy": value, "score": value}
    if task == "sms-spam":
        logged = {"accuracy": SMS_ACCURACY, "f1": value, "score": value}
    metrics = [Metric(f"{keys.EVAL_PREFIX}{name}", v, 0, 40) for name, v in logged.items()]
    metrics.append(Metric(keys.TRAIN_SECONDS, 1.0, 0, 40))
    params = [Param(k, str(v)) for k, v in (params or {}).items()]
    client.log_batch(run.info.run_id, metrics=metrics, params=params)
    client.set_terminated(run.info.run_id)


def value(run, step, task, finetune_seed) -> float:
    return BASE[run][step] + DELTA[task][finetune_seed - 1] * SPREAD[step]


@pytest.fixture(scope="module")
def offline_store(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    directory = tmp_path_factory.mktemp("offline-store")
    uri = f"sqlite:///{directory}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(directory / "a").as_uri())
    ids = {}
    for variant, seed in BASE:
        parent = ids[(variant, seed)] = _pretrain(client, experiment_id, variant, seed)
        for step in SPREAD:
            for task in DELTA:
                for finetune_seed in (1, 2, 3):
                    v = value((variant, seed), step, task, finetune_seed) / 100
                    _finetune(client, experiment_id, parent, variant, seed, step, task, finetune_seed, v)
    partial = ("pairwise", 1)
    _finetune(client, experiment_id, ids[partial], *partial, PARTIAL_STEP, "rotten-tomatoes", 1, 0.5)
    return {"uri": uri, "ids": ids}


@pytest.fixture(scope="module")
def offline(offline_store):
    return mlflow_runs.load_runs(EXPERIMENT, offline_store["uri"])


@pytest.fixture(scope="module")
def reported(offline_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("offline-report")
    return out, report.runs_report(EXPERIMENT, offline_store["uri"], out)


def _run_of(ids):
    return {run_id: run for run, run_id in ids.items()}


# ---------------------------------------------------------------- the score


def test_score_metrics_are_what_compute_metrics_scores():
    labels = np.array([0, 1, 1, 0, 1, 2, 1, 0])
    preds = np.array([0, 1, 0, 0, 1, 2, 2, 1])
    for metric, names in SCORE_METRICS.items():
        binary = metric in ("f1", "acc_f1", "mcc")
        y, p = (np.minimum(labels, 1), np.minimum(preds, 1)) if binary else (labels, preds)
        if metric == "pearson_spearman":
            p = p + np.linspace(0, 0.5, len(p))
        out = compute_metrics(metric, p, y)
        assert out["score"] == pytest.approx(np.mean([out[n] for n in names])), metric
        assert set(names) <= frames.GLUE_METRICS  # the frames keep every metric a score needs


def test_the_suite_is_picked_from_the_tasks(offline, loaded):
    suite = glue.suite_of(offline.glue_checkpoints)
    assert suite.name == "offline" and suite.tasks == ("rotten-tomatoes", "sms-spam")
    assert suite.label == "offline proxy score (mean of rotten-tomatoes accuracy, sms-spam F1)"
    assert suite.columns["sms-spam"] == ("sms-spam", ("f1",))  # the registry's metric, not accuracy
    assert glue.suite_of(loaded.glue_checkpoints) is glue.GLUE
    mixed = pd.concat([loaded.glue_checkpoints, offline.glue_checkpoints])
    assert [s.name for s in glue.suites(mixed["task"])] == ["glue", "offline"]
    assert glue.suite_of(mixed) is glue.GLUE  # GLUE runs score GLUE as ever
    assert glue.task_scores(mixed, suite="offline")["score"].notna().any()
    # Four offline tasks: all four, each with its registry metric, in the registry's order.
    four = glue.offline_suite(["bbc-news", "trec6", "sms-spam", "rotten-tomatoes"])
    assert (
        four.definition == "mean of rotten-tomatoes accuracy, sms-spam F1, trec6 accuracy, bbc-news accuracy"
    )


def test_proxy_score_per_run_and_checkpoint(offline_store, offline):
    scores = glue.scores_over_checkpoints(offline.glue_checkpoints)
    run_of = _run_of(offline_store["ids"])
    assert len(scores) == len(BASE) * len(SPREAD)
    for row in scores.itertuples():
        assert row.score == pytest.approx(BASE[run_of[row.pretrain_run_id]][row.checkpoint_step])
        assert row.n_seeds == 3
    per_seed = glue.task_scores(offline.glue_checkpoints).dropna(subset=["score"])
    one = per_seed[
        (per_seed["pretrain_run_id"] == offline_store["ids"][("vanilla", 2)])
        & (per_seed["checkpoint_step"] == 400)
        & (per_seed["finetune_seed"] == 3)
    ].iloc[0]
    assert one["rotten-tomatoes"] == pytest.approx(70 + 3)
    assert one["sms-spam"] == pytest.approx(70 + 6)
    assert one["score"] == pytest.approx(70 + 4.5)


def test_a_checkpoint_missing_a_task_gets_no_proxy_score(offline_store, offline):
    every = offline.glue_checkpoints
    partial = glue.task_scores(every)
    at_50 = partial[partial["checkpoint_step"] == PARTIAL_STEP]
    assert len(at_50) == 1 and at_50["rotten-tomatoes"].iloc[0] == pytest.approx(50)
    assert math.isnan(at_50["score"].iloc[0])  # never the mean of the one task it has
    assert PARTIAL_STEP not in set(glue.scores_over_checkpoints(every)["checkpoint_step"])
    # One seed short of a task at a checkpoint: the others still score it, and only they count.
    run = offline_store["ids"][("vanilla", 1)]
    drop = (
        (every["pretrain_run_id"] == run)
        & (every["checkpoint_step"] == 200)
        & (every["task"] == "sms-spam")
        & (every["finetune_seed"] == 3)
    )
    scores = glue.scores_over_checkpoints(every[~drop]).set_index(["pretrain_run_id", "checkpoint_step"])
    assert scores.loc[(run, 200), "n_seeds"] == 2
    assert scores.loc[(run, 200), "score"] == pytest.approx(62 - 1.5 * 2 / 2)
    # The task gone at a checkpoint for every seed: no score there.
    gone = every[~((every["checkpoint_step"] == 200) & (every["task"] == "sms-spam"))]
    assert 200 not in set(glue.scores_over_checkpoints(gone)["checkpoint_step"])


def test_variant_curves_pool_runs_and_seeds(offline):
    curves = glue.variant_curves(glue.task_scores(offline.glue_checkpoints)).set_index(
        ["variant", "checkpoint_step"]
    )
    at = curves.loc[("pairwise", 400)]
    values = [b + 1.5 * d * 3 for b in (78, 72) for d in (-1, 0, 1)]
    assert at["mean"] == pytest.approx(np.mean(values))
    assert at["std"] == pytest.approx(np.std(values, ddof=1))
    assert (at["n"], at["n_runs"], at["n_seeds"]) == (6, 2, 3)
    assert ("pairwise", PARTIAL_STEP) not in curves.index


# ---------------------------------------------------------------- crossings and noise


def test_crossings_and_their_brackets(offline_store, offline):
    from analysis import convergence

    scores = glue.scores_over_checkpoints(offline.glue_checkpoints)
    crossings = glue.crossing_brackets(scores, convergence.glue_crossings(scores))
    by_run = crossings.set_index("pretrain_run_id")
    ids = offline_store["ids"]
    first = by_run.loc[ids[("pairwise", 1)]]  # threshold 0.95 x 80 = 76, between 70 at 200 and 78 at 400
    assert first["threshold"] == pytest.approx(76)
    assert first["step"] == pytest.approx(200 + (76 - 70) / (78 - 70) * 200)
    assert (first["below_step"], first["above_step"]) == (200, 400)
    second = by_run.loc[ids[("pairwise", 2)]]  # 0.95 x 82 = 77.9, between 72 at 400 and 82 at 800
    assert second["step"] == pytest.approx(400 + (77.9 - 72) / 10 * 400)
    assert (second["below_step"], second["above_step"]) == (400, 800)
    for seed in (1, 2):  # vanilla never crosses: censored at its last checkpoint
        never = by_run.loc[ids[("vanilla", seed)]]
        assert never["censored"] and never["status"] == "not reached" and math.isnan(never["step"])
        assert never["below_step"] == 800 and math.isnan(never["above_step"])
    formatted = tables.crossings_formatted(crossings).set_index(["variant", "seed"])
    assert formatted.loc[("pairwise", 1), "step"] == "350"
    assert formatted.loc[("pairwise", 1), "last checkpoint below"] == "200"
    assert formatted.loc[("pairwise", 1), "first checkpoint at or above"] == "400"
    assert formatted.loc[("vanilla", 1), "step"] == "not reached (>800)"
    assert formatted.loc[("vanilla", 1), "last checkpoint below"] == "800 (its last)"
    assert formatted.loc[("vanilla", 1), "first checkpoint at or above"] == "none"


def test_finetune_noise(offline_store, offline):
    noise = glue.finetune_noise(offline.glue_checkpoints)
    cells = noise.set_index(["pretrain_run_id", "checkpoint_step", "column"])
    run = offline_store["ids"][("vanilla", 2)]
    assert cells.loc[(run, 400, "rotten-tomatoes"), "std"] == pytest.approx(3)
    assert cells.loc[(run, 400, "sms-spam"), "std"] == pytest.approx(6)
    assert cells.loc[(run, 400, "score"), "std"] == pytest.approx(4.5)
    assert cells.loc[(run, 400, "score"), "n"] == 3
    partial = cells.loc[(offline_store["ids"][("pairwise", 1)], PARTIAL_STEP, "rotten-tomatoes")]
    assert partial["n"] == 1 and math.isnan(partial["std"])  # one seed: no std
    summary = glue.noise_summary(noise).set_index(["variant", "column"])
    # Median over 4 checkpoints x 2 runs of SPREAD x (1, 2, 1.5); the one-seed cell is left out.
    for variant in ("pairwise", "vanilla"):
        for column, factor in (("rotten-tomatoes", 1), ("sms-spam", 2), ("score", 1.5)):
            row = summary.loc[(variant, column)]
            assert row["median_std"] == pytest.approx(2.5 * factor)
            assert (row["n_cells"], row["n_checkpoints"], row["n_runs"]) == (8, 4, 2)
            assert (row["seeds_min"], row["seeds_max"]) == (3, 3)
    formatted = tables.noise_formatted(summary.reset_index(), glue.suite_of(offline.glue_checkpoints))
    assert list(formatted["task"]) == ["rotten-tomatoes accuracy", "sms-spam F1", "offline proxy score"]
    assert formatted.iloc[2]["pairwise"] == "3.75 (n=3 seeds; 4 checkpoints \u00d7 2 runs)"


def test_reference_falls_back_when_no_pairwise():
    assert glue_report.reference_variant(["vanilla", "pairwise", "symmetric"]) == "pairwise"
    assert glue_report.reference_variant(["symmetric", "vanilla"]) == "vanilla"
    assert glue_report.reference_variant(["symmetric"]) == "symmetric"


# ---------------------------------------------------------------- the report


def test_runs_report_writes_the_offline_figure_and_tables(reported):
    out, text = reported
    for name in ("offline_over_checkpoints",):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{name}.pdf").exists()
    for name in ("offline_tiny", "offline_score", "offline_crossings", "offline_finetune_noise_summary"):
        assert (out / f"{name}.csv").exists() and (out / f"{name}.md").exists()
    assert not list(out.glob("glue_*"))  # nothing is called GLUE
    assert "GLUE" not in text
    assert "offline proxy score (mean of rotten-tomatoes accuracy, sms-spam F1)" in text
    final = pd.read_csv(out / "offline_tiny.csv").set_index("variant")
    assert final.loc["pairwise", "score"] == pytest.approx(81)
    assert (final.loc["pairwise", "n"], final.loc["pairwise", "n_runs"]) == (6, 2)
    assert "2 pre-training runs \u00d7 3 fine-tuning seeds, n=6" in text
    crossings = pd.read_csv(out / "offline_crossings.csv").set_index(["variant", "seed"])
    assert crossings.loc[("pairwise", 1), "step"] == pytest.approx(350)
    assert crossings.loc[("pairwise", 2), "below_step"] == 400
    assert crossings.loc[("vanilla", 1), "status"] == "not reached"
    assert "reference: pairwise, as in the paper" in text
    assert "not reached (>800)" in text and "800 (its last)" in text
    assert "3.75 (n=3 seeds; 4 checkpoints \u00d7 2 runs)" in text
    # The crossings join the convergence summary, the censored runs counted, never averaged.
    summary = pd.read_csv(out / "convergence_summary.csv")
    proxy = summary[summary["definition"] == "offline>=95%_pairwise"].set_index("variant")
    assert proxy.loc["pairwise", "n_exact"] == 2
    assert proxy.loc["pairwise", "mean"] == pytest.approx((350 + 636) / 2)
    assert proxy.loc["vanilla", "n_exact"] == 0 and math.isnan(proxy.loc["vanilla", "mean"])


def test_the_figure_says_what_it_draws(offline):
    from analysis import convergence, glue_figures

    suite = glue.suite_of(offline.glue_checkpoints)
    scores = glue.scores_over_checkpoints(offline.glue_checkpoints)
    crossings = convergence.glue_crossings(scores)
    fig = glue_figures.glue_over_checkpoints(
        scores,
        crossings,
        seed_scores=glue.task_scores(offline.glue_checkpoints),
        ylabel=f"{suite.short} (%)",
    )
    labels = fig.legends[0].get_texts()
    assert [t.get_text() for t in labels] == [
        "vanilla: mean \u00b1 std over 2 pre-training runs \u00d7 3 fine-tuning seeds, n=6",
        "pairwise: mean \u00b1 std over 2 pre-training runs \u00d7 3 fine-tuning seeds, n=6",
        "threshold: 95% of pairwise's final score in each matched group (76.00, 77.90)",
        "a run's first crossing, interpolated between checkpoints",
        "a run below the threshold at its last checkpoint",
    ]
    [ax] = fig.axes
    mean = next(line for line in ax.get_lines() if line.get_label().startswith("pairwise"))
    assert list(mean.get_xdata()) == [100, 200, 400, 800] and mean.get_marker() == "o"


def test_the_report_png_is_readable(reported):
    out, _ = reported
    width, height = Image.open(out / "offline_over_checkpoints.png").size
    assert width > 800 and height > 600


def test_settings_of_a_grid_are_scored_apart(tmp_path):
    """Two learning rates: each setting gets its own figure, rows and crossings, never a pooled one."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("grid", artifact_location=(tmp_path / "a").as_uri())
    for lr, lift in ((0.001, 0), (0.002, 5)):
        for variant in ("pairwise", "vanilla"):
            parent = _pretrain(client, experiment_id, variant, 1)
            client.set_tag(parent, keys.GROUP, f"lr{lr}")
            client.log_param(parent, "optim.lr", str(lr))
            for step in (100, 400):
                for task in DELTA:
                    for seed in (1, 2):
                        v = (value((variant, 1), step, task, seed) + lift) / 100
                        _finetune(client, experiment_id, parent, variant, 1, step, task, seed, v)
    out = tmp_path / "out"
    report.runs_report("grid", uri, out)
    for k in (1, 2):
        assert (out / f"offline_over_checkpoints_{k}.png").exists()
    final = pd.read_csv(out / "offline_tiny.csv").set_index(["setting", "variant"])
    # Seeds 1 and 2 only: the proxy's deltas at checkpoint 400 are -4.5 and 0.
    assert final.loc[("lr=0.001", "pairwise"), "score"] == pytest.approx(78 - 2.25)
    assert final.loc[("lr=0.002", "pairwise"), "score"] == pytest.approx(83 - 2.25)
    assert (final["n_runs"] == 1).all()
    crossings = pd.read_csv(out / "offline_crossings.csv").set_index(["setting", "variant"])
    assert crossings.loc[("lr=0.002", "pairwise"), "threshold"] == pytest.approx(0.95 * (83 - 2.25))


def test_a_reference_that_pre_training_did_not_raise_is_flagged():
    scores = pd.DataFrame(
        {
            "variant": ["pairwise"] * 3 + ["pairwise"] * 2,
            "group": ["g1"] * 3 + ["g2"] * 2,
            "checkpoint_step": [0, 1500, 3000, 0, 3000],
            "score": [40.0, 35.0, 30.0, 40.0, 60.0],
        }
    )
    note = glue_report._flat_reference_note(scores, "pairwise", glue.offline_suite(["trec6"]))
    assert note.count("\n") == 1 and "Group g1" in note and "(30.00 at step 3,000)" in note
    assert "at step 0 (40.00)" in note and "do not measure convergence" in note


def test_fine_tuning_recipes_are_scored_apart(tmp_path):
    """The spec's fine-tuning recipe changed (5 epochs, then 3) after its first cells ran: each
    recipe gets its own rows, crossings, statistics and figure, never a pooled one."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("recipes", artifact_location=(tmp_path / "a").as_uri())
    lift = {5.0: 0, 3.0: 5}  # the 3-epoch recipe scores 5 points more
    for seed in (1, 2):
        for variant in ("pairwise", "vanilla"):
            parent = _pretrain(client, experiment_id, variant, seed)
            for epochs in lift:
                for step in (100, 400):
                    for task in DELTA:
                        for finetune_seed in (1, 2):
                            v = (value((variant, seed), step, task, finetune_seed) + lift[epochs]) / 100
                            # As finetune_one records its config; total_steps and threads differ
                            # between tasks and machines without making another recipe.
                            params = {
                                "finetune.task": task,
                                "finetune.seed": finetune_seed,
                                "finetune.epochs": epochs,
                                "finetune.lr": 1e-5,
                                "finetune.threads": finetune_seed,
                                "finetune.total_steps": int(epochs * (10 if task == "sms-spam" else 7)),
                            }
                            args = (parent, variant, seed, step, task, finetune_seed, v, params)
                            _finetune(client, experiment_id, *args)
    loaded = mlflow_runs.load_runs("recipes", uri)
    assert set(loaded.glue_checkpoints["recipe"]) == {"fine-tuning epochs=5.0", "fine-tuning epochs=3.0"}

    out = tmp_path / "out"
    text = report.runs_report("recipes", uri, out, log_artifacts=False)
    final = pd.read_csv(out / "offline_tiny.csv").set_index(["setting", "variant"])
    # Per recipe, the mean over both pre-training runs (78, 72 at checkpoint 400) and both
    # fine-tuning seeds (deltas -4.5 and 0).
    assert final.loc[("fine-tuning epochs=5.0", "pairwise"), "score"] == pytest.approx(75 - 2.25)
    assert final.loc[("fine-tuning epochs=3.0", "pairwise"), "score"] == pytest.approx(80 - 2.25)
    assert (final["n_runs"] == 2).all() and (final["n_seeds"] == 2).all()
    crossings = pd.read_csv(out / "offline_crossings.csv")
    assert len(crossings) == 8  # 4 runs x 2 recipes
    thresholds = crossings.groupby(["setting", "group"])["threshold"].first()
    assert thresholds[("fine-tuning epochs=3.0", "tiny-s1")] == pytest.approx(0.95 * (83 - 2.25))
    assert thresholds[("fine-tuning epochs=5.0", "tiny-s1")] == pytest.approx(0.95 * (78 - 2.25))
    summary = pd.read_csv(out / "convergence_summary.csv")
    proxy = summary[summary["definition"] == "offline>=95%_pairwise"]
    assert len(proxy) == 4 and (proxy["n"] == 2).all()
    noise = pd.read_csv(out / "offline_finetune_noise.csv")
    assert (noise["n"] == 2).all()  # the seeds of one recipe, never both recipes' four
    for k in (1, 2):
        assert (out / f"offline_over_checkpoints_{k}.png").exists()
    assert "fine-tuning epochs=3.0" in text and "fine-tuning epochs=5.0" in text
