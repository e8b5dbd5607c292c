"""The per-arm outputs of a study report, on a real sqlite MLflow store of a controls-like design.

Design: size `tiny`, six matched groups (g0-g5) of four arms: vanilla, vanilla-qk32 (a control,
labelled by its tag), symmetric and pairwise-scaled. Every validation loss follows the conftest
shape (9 -> 6 by step 200, a plateau at the floor 6 until step E, then 1 per 100 steps down to 2),
evaluated every 50 steps to 1,500, so each escape step is known: E + 100 * margin. Vanilla leaves
at 700 + 50 g; vanilla-qk32 at known fractions of that; symmetric only in group 0; pairwise-scaled
never. Diagnostics are logged for two layers at step 0 and every 100 steps, with known values;
symmetric's group-5 run has none at step 0 (an older run). Vanilla's runs of groups 0 and 1 carry
the tag `stopped_early_at`; run g of every arm ran 10 + g minutes.
"""

from __future__ import annotations

import colorsys
import math
import shutil
import tempfile
import time
from pathlib import Path

import matplotlib.colors
import numpy as np
import pandas as pd
import pytest

from analysis import (
    convergence,
    convergence_figures,
    diagnostics,
    figures,
    mlflow_runs,
    report,
    stats,
    tables,
)

STUDY = "arms-study"
GROUPS = range(6)
LAST, EVERY = 1500, 50
FLOOR = 6.0
QK32_FRACTION = (0.5, 0.6, 0.55, 0.45, 0.7, 0.65)
PARAMS = {"vanilla": 1000, "vanilla-qk32": 900, "symmetric": 900, "pairwise-scaled": 916}
ATTENTION = {
    "vanilla": ("vanilla", "none", "none"),
    "vanilla-qk32": ("vanilla", "none", "none"),
    "symmetric": ("symmetric", "none", "none"),
    "pairwise-scaled": ("pairwise", "full", "scaled"),
}
ARMS = list(PARAMS)


def escape(arm: str, group: int):
    """The step at which a run leaves the plateau (None: never)."""
    vanilla = 700 + 50 * group
    return {
        "vanilla": vanilla,
        "vanilla-qk32": round(vanilla * QK32_FRACTION[group] / 50) * 50,
        "symmetric": 600 if group == 0 else None,
        "pairwise-scaled": None,
    }[arm]


def val_loss(step, leaves):
    if step <= 200:
        return 9.0 - (step - 50) / 150 * 3
    if leaves is None or step <= leaves:
        return FLOOR
    return max(2.0, FLOOR - (step - leaves) / 400 * 4)


def diag_value(arm: str, group: int, layer: int, quantity: str, step: int) -> float:
    """A known, distinct value for every run, layer, quantity and step."""
    base = {"self_mass": 0.02, "entropy": 4.0, "logit_sd": 0.5}[quantity]
    return base * (1 + ARMS.index(arm) / 4) + 0.01 * group + 0.001 * layer + step / 1e5


def _run(client, experiment_id, arm, group, start):
    from mlflow.entities import Metric, Param

    attention, scheme, init = ATTENTION[arm]
    tags = {
        "kind": "pretrain",
        "study": STUDY,
        "size": "tiny",
        "attention": attention,
        "scheme": scheme,
        "init": init,
        "variant": arm,
        "seed": str(group),
        "group": f"g{group}",
    }
    if arm == "vanilla" and group < 2:
        tags["stopped_early_at"] = str(LAST)
    run = client.create_run(experiment_id, start_time=start, tags=tags, run_name=f"{arm}-s{group}")
    total = PARAMS[arm]
    params = {
        "model.size": "tiny",
        "optim.lr": 1e-3,
        "params_total": total,
        "params_non_embedding": total - 500,
        "data.context_free_loss": FLOOR + 0.05,
        "data.val_context_free_loss": FLOOR,
        **({"model.attention.qk_dim": 32} if arm == "vanilla-qk32" else {}),
    }
    now = int(time.time() * 1000)
    leaves = escape(arm, group)
    metrics = [Metric("val/loss", val_loss(s, leaves), now, s) for s in range(EVERY, LAST + 1, EVERY)]
    first = 100 if (arm == "symmetric" and group == 5) else 0  # an older run: nothing at step 0
    for step in range(first, LAST + 1, 100):
        for layer in (0, 1):
            for quantity in diagnostics.QUANTITIES:
                value = diag_value(arm, group, layer, quantity, step)
                metrics.append(Metric(f"diag/layer{layer}/{quantity}", value, now, step))
    metrics.append(Metric("diag/layer0/qk_symmetry", 0.5, now, 0))  # not drawn
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
    client.set_terminated(run.info.run_id, "FINISHED", end_time=start + (10 + group) * 60_000)
    return run.info.run_id


@pytest.fixture(scope="module")
def store():
    from mlflow.tracking import MlflowClient

    directory = tempfile.mkdtemp(
        prefix="symattn-arms-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None
    )
    uri = f"sqlite:///{directory}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(STUDY, artifact_location=f"file://{directory}/artifacts")
    start = int(time.time() * 1000) - 3_600_000
    ids = {(arm, g): _run(client, experiment_id, arm, g, start + g) for g in GROUPS for arm in ARMS}
    yield {"uri": uri, "ids": ids}
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def written(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("arms-report")
    text = report.runs_report(STUDY, store["uri"], out_dir=out, log_artifacts=False)
    return out, text


@pytest.fixture(scope="module")
def loaded(store):
    data = mlflow_runs.load_runs(STUDY, store["uri"], metrics=("val/loss", *diagnostics.METRICS))
    return data


def test_forest_rows_every_arm_with_its_ratio_or_why(loaded):
    runs, curves = loaded.runs, loaded.curves
    conv = convergence.convergence_table(curves, runs, dict.fromkeys(runs["run_id"], FLOOR))
    paired = stats.paired_vs_baseline(conv)
    rows = tables.forest_rows(conv, paired, runs["variant"])
    # Every non-baseline arm, in both escape margins, in the report's order: none dropped.
    assert list(rows["definition"]) == ["escape_0.25"] * 3 + ["escape_0.5"] * 3
    assert list(rows["variant"]) == ["vanilla-qk32", "symmetric", "pairwise-scaled"] * 2
    for margin in convergence.MARGINS:
        part = rows[rows["definition"] == f"escape_{margin:g}"].set_index("variant")
        # vanilla-qk32: the geometric mean of the six known ratios, with a t-interval over 6 pairs.
        ratios = [
            (escape("vanilla-qk32", g) + 100 * margin) / (escape("vanilla", g) + 100 * margin) for g in GROUPS
        ]
        qk32 = part.loc["vanilla-qk32"]
        assert qk32["ratio"] == pytest.approx(math.exp(np.mean(np.log(ratios))))
        assert qk32["ci_low"] < qk32["ratio"] < qk32["ci_high"] and qk32["ci_method"] == "t"
        assert qk32["n_both_exact"] == 6 and qk32["why"] == ""
        assert "(t-interval, n=6)" in qk32["text"] and "6 of 6 pairs both exact" in qk32["text"]
        # Faster in all six pairs: the sign test's p with its n, as stats.p_text states it.
        assert "faster/slower/undecided 6/0/0" in qk32["text"]
        assert stats.p_text(2 / 2**6, 6) in qk32["text"]
        # symmetric: one pair both exact gives a ratio but no interval.
        sym = part.loc["symmetric"]
        assert sym["n_both_exact"] == 1 and math.isnan(sym["ci_low"]) and "no interval" in sym["text"]
        # pairwise-scaled never escaped: no ratio, and the row says why.
        never = part.loc["pairwise-scaled"]
        assert math.isnan(never["ratio"])
        assert never["why"] == "no exact pairs: pairwise-scaled exact in 0 of 6, vanilla in 6 of 6"
        assert "faster/slower/undecided 0/6/0" in never["text"]


def test_forest_rows_say_why_without_a_baseline_or_without_steps(loaded):
    runs, curves = loaded.runs, loaded.curves
    conv = convergence.convergence_table(curves, runs, dict.fromkeys(runs["run_id"], FLOOR))
    no_vanilla = conv[conv["variant"] != "vanilla"]
    rows = tables.forest_rows(no_vanilla, stats.paired_vs_baseline(no_vanilla), runs["variant"])
    assert len(rows) == 6 and rows["ratio"].isna().all()
    assert set(rows["why"]) == {"no vanilla run with a step to pair with"}
    # An arm of the runs with no step at all (no curve yet) still gets its row.
    without = conv[conv["variant"] != "symmetric"]
    rows = tables.forest_rows(without, stats.paired_vs_baseline(without), runs["variant"])
    sym = rows[rows["variant"] == "symmetric"]
    assert len(sym) == 2 and sym["why"].str.startswith("no symmetric run with a step").all()


def test_forest_plot_draws_a_row_per_arm(loaded):
    runs, curves = loaded.runs, loaded.curves
    conv = convergence.convergence_table(curves, runs, dict.fromkeys(runs["run_id"], FLOOR))
    rows = tables.forest_rows(conv, stats.paired_vs_baseline(conv), runs["variant"])
    fig = convergence_figures.forest_plot(rows, title="t")
    plots = [ax for ax in fig.axes if ax.axison]
    assert len(plots) == 2  # one panel per escape margin
    for ax in plots:
        assert [t.get_text() for t in ax.get_yticklabels()] == [
            "vanilla-qk32",
            "symmetric",
            "pairwise-scaled",
        ]
        assert ax.get_xscale() == "log"
        assert any(np.allclose(line.get_xdata(), 1.0) for line in ax.get_lines())  # the line at 1
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert sum(t.startswith("no exact pairs: pairwise-scaled") for t in texts) == 2
    assert texts.count("no ratio") == 2


def test_initial_diagnostics_are_the_logged_step_0_values(loaded):
    table, missing = diagnostics.initial_table(loaded.curves, loaded.runs, by=("size", "variant"))
    # The older run without step-0 diagnostics is left out, and named.
    symmetric_5 = loaded.runs.set_index(["variant", "seed"]).loc[("symmetric", 5), "run_id"]
    assert missing == [symmetric_5]
    assert list(dict.fromkeys(table["variant"])) == ARMS
    rows = table.set_index(["variant", "layer"])
    for arm in ARMS:
        groups = [g for g in GROUPS if not (arm == "symmetric" and g == 5)]
        assert rows.loc[(arm, "mean"), "n"] == len(groups)
        for quantity in diagnostics.QUANTITIES:
            per_run = [np.mean([diag_value(arm, g, layer, quantity, 0) for layer in (0, 1)]) for g in groups]
            assert rows.loc[(arm, "mean"), quantity] == pytest.approx(np.mean(per_run))
            assert rows.loc[(arm, "mean"), f"{quantity}_std"] == pytest.approx(np.std(per_run, ddof=1))
            layer1 = [diag_value(arm, g, 1, quantity, 0) for g in groups]
            assert rows.loc[(arm, "1"), quantity] == pytest.approx(np.mean(layer1))


def test_report_writes_the_arm_outputs(written, store):
    out, text = written
    for name in ("convergence_forest_tiny", "diagnostics_tiny"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    for name in ("convergence_forest_tiny", "initial_diagnostics", "arms", "diagnostics_tiny"):
        assert f"{name}:" in text  # each output named in the printed text, once
    assert "1 of 24 runs have no step-0 diagnostics" in text
    initial = pd.read_csv(out / "initial_diagnostics.csv")
    vanilla = initial[(initial["variant"] == "vanilla") & (initial["layer"] == "mean")].iloc[0]
    expected = np.mean(
        [np.mean([diag_value("vanilla", g, layer, "logit_sd", 0) for layer in (0, 1)]) for g in GROUPS]
    )
    assert vanilla["logit_sd"] == pytest.approx(expected) and vanilla["n"] == 6
    assert "1 of 24 runs have no step-0 diagnostics" in (out / "initial_diagnostics.md").read_text()


def test_arms_table(written):
    out, _ = written
    arms = pd.read_csv(out / "arms.csv").set_index("variant")
    assert list(arms.index) == ARMS
    assert (
        arms.loc["vanilla-qk32", "params_total"] == 900 and arms.loc["vanilla", "params_non_embedding"] == 500
    )
    assert (arms["n_runs"] == 6).all() and (arms["n_finished"] == 6).all()
    final = [val_loss(LAST, escape("pairwise-scaled", g)) for g in GROUPS]
    assert arms.loc["pairwise-scaled", "final_loss"] == pytest.approx(np.mean(final))
    assert arms.loc["vanilla", "n_stopped_early"] == 2 and arms.loc["vanilla", "stopped_early_max"] == LAST
    assert arms.loc["symmetric", "n_stopped_early"] == 0
    assert arms.loc["vanilla", "minutes_mean"] == pytest.approx(np.mean([10 + g for g in GROUPS]), abs=1e-3)
    assert arms.loc["vanilla", "minutes_total"] == pytest.approx(sum(10 + g for g in GROUPS), abs=1e-3)
    assert (arms["steps_max"] == LAST).all()
    md = (out / "arms.md").read_text()
    assert "2 of 6 (at 1,500)" in md and "12.5" in md


def test_control_labels_take_their_variants_hue_and_a_line_of_their_own():
    labels = ["vanilla", "vanilla-qk32", "vanilla-gain2.83", "symmetric", "pairwise", "pairwise-scaled"]
    colors = figures.variant_colors(labels)
    styles = figures.variant_linestyles(labels)
    assert list(colors) == [
        "vanilla",
        "vanilla-gain2.83",
        "vanilla-qk32",
        "symmetric",
        "pairwise",
        "pairwise-scaled",
    ]
    assert len(set(colors.values())) == 6
    assert colors["vanilla"] == figures.COLORS["vanilla"] and colors["pairwise"] == figures.COLORS["pairwise"]

    def hue(color):
        return colorsys.rgb_to_hsv(*matplotlib.colors.to_rgb(color))[0]

    for control, base in (
        ("vanilla-qk32", "vanilla"),
        ("vanilla-gain2.83", "vanilla"),
        ("pairwise-scaled", "pairwise"),
    ):
        assert hue(colors[control]) == pytest.approx(hue(colors[base]), abs=0.02)
        assert styles[base] == "-" and styles[control] != "-"
    assert styles["vanilla-qk32"] != styles["vanilla-gain2.83"]
    # Stable: the same labels in another order get the same colours.
    assert figures.variant_colors(labels[::-1]) == colors


def test_diagnostics_plot_means_over_the_steps_every_run_has(loaded):
    fig = diagnostics.diagnostics_plot(loaded.curves, loaded.runs)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [diagnostics.LABELS[q] for q in ("self_mass", "entropy", "logit_sd")]
    colors = figures.variant_colors(loaded.runs["variant"])
    [mean] = [line for line in fig.axes[2].get_lines() if line.get_label() == "symmetric: mean of 6 runs"]
    # Symmetric's group-5 run has no step 0: the mean starts where all six have a value.
    assert mean.get_xdata().min() == 100 and mean.get_color() == colors["symmetric"]
    expected = np.mean(
        [np.mean([diag_value("symmetric", g, layer, "logit_sd", 100) for layer in (0, 1)]) for g in GROUPS]
    )
    assert mean.get_ydata()[0] == pytest.approx(expected)
    [qk32] = [line for line in fig.axes[0].get_lines() if line.get_label().startswith("vanilla-qk32")]
    assert qk32.get_linestyle() != "-" and qk32.get_color() == colors["vanilla-qk32"]
