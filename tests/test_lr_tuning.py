"""Learning-rate tuning on the escape step: a search whose trials are valued by their run's escape
(censored runs after escaped ones), then matched seeds at each variant's best rate (`tuned_from`),
on a real Optuna journal and real tiny training runs."""

import math
import random

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from symattn.config import apply_overrides
from symattn.sweep.design import expand
from symattn.sweep.queue import queue
from symattn.sweep.search import escape_value, startup_value, tuned_values
from symattn.sweep.spec import SearchSpec, SweepSpec, load_spec
from symattn.sweep.storage import open_storage
from symattn.sweep.worker import work

# Documents that count through a cycle of words: a masked word is given by its neighbours, so the
# tiny model leaves the context-free floor within 200 steps at a rate near 1e-3 and stays on it at
# 2.5e-4 (measured: 1e-3 escapes at step 118, 2e-3 at 94, 3e-4 not by 200).
WORDS = (
    "apple river stone cloud maple tiger candle forest silver harbor lemon winter garden rocket "
    "violin desert pepper marble falcon meadow copper island thunder velvet lantern orchard glacier "
    "mirror saddle beacon"
).split()


@pytest.fixture
def counting_corpus(tmp_path):
    folder = tmp_path / "counting"
    folder.mkdir()
    rng = random.Random(0)
    for i in range(60):
        start = rng.randrange(len(WORDS))
        text = " ".join(WORDS[(start + k) % len(WORDS)] for k in range(200))
        (folder / f"doc{i:03d}.txt").write_text(text, encoding="utf-8")
    return folder


def base_config(corpus, tmp_path) -> dict:
    return apply_overrides(
        {},
        [
            f"data.source=path:{corpus}",
            "data.vocab_size=200",
            "data.seq_len=32",
            "data.val_docs=8",
            "model.size=tiny",
            "optim.batch_size=8",
            "optim.max_steps=200",
            "optim.warmup_steps=5",
            "optim.schedule=constant",
            "optim.eps=1e-8",
            "eval.every_n_steps=20",
            "eval.batches=2",
            "tracking.log_every_n_steps=20",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"checkpoint.dir={tmp_path / 'checkpoints'}",
            "checkpoint.every_n_steps=100",
            "speed.progress_bar=false",
        ],
    )


def write_spec(path, **spec) -> str:
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_the_escape_value_ranks_every_escaped_trial_before_every_censored_one():
    budget, level = 3000, 5.837
    escaped = [escape_value(False, s, s, 5.2, level, budget) for s in (100.0, 2422.0, 2999.0)]
    first_eval = escape_value(True, 0.0, 100.0, 5.0, level, budget)  # across at the first evaluation
    censored = [
        escape_value(True, 3000.0, math.nan, loss, level, budget) for loss in (5.80, 5.9, 6.1, 6.3, math.nan)
    ]
    provisional = escape_value(True, 2950.0, 2950.0, 5.7, level, budget)
    assert first_eval < min(escaped) and max(escaped) < budget <= min(censored)
    assert censored == sorted(censored) and len(set(censored[1:])) == 4  # nearer the level is better
    assert provisional == budget <= censored[0]
    assert math.isfinite(censored[-1])  # a value Optuna stores


def test_an_escape_search_is_not_pruned_and_refuses_a_loss_pruner():
    assert SearchSpec(low=1e-4, high=1e-2, objective="escape").pruner == "none"
    assert SearchSpec(low=1e-4, high=1e-2).pruner == "median"  # the final-loss search as before
    with pytest.raises(ValueError, match="escape takes pruner: none"):
        SearchSpec(low=1e-4, high=1e-2, objective="escape", pruner="median")
    with pytest.raises(ValueError, match="optim.max_steps"):
        SearchSpec(param="optim.max_steps", low=100, high=1000, objective="escape")


def test_every_search_starts_from_the_same_spread_proposals():
    search = SearchSpec(low=2.5e-4, high=4e-3, trials=6, objective="escape")
    values = [startup_value(search, n) for n in range(4)]
    assert values == pytest.approx([1e-3, 5e-4, 2e-3, 2.5e-4 * 16**0.125])  # midpoint, quarters, ...
    assert all(search.low < v < search.high for v in values)


@pytest.mark.slow  # about 20 s: run with the slow set
def test_a_search_tunes_on_the_escape_and_the_next_stage_runs_each_variant_at_its_best(
    counting_corpus, cache, tmp_path
):
    storage = str(tmp_path / "optuna.journal")
    stores = {"optuna": storage}
    workers = {"heartbeat_seconds": 1, "grace_seconds": 30}
    base = base_config(counting_corpus, tmp_path)
    search = {"param": "optim.lr", "objective": "escape", "low": 1e-4, "high": 4e-3, "trials": 3}
    axes = {"model.attention.variant": ["vanilla", "symmetric"]}
    first = write_spec(
        tmp_path / "tune.yaml",
        name="tune",
        base=base,
        axes=axes,
        search=search,
        stores=stores,
        workers=workers,
    )
    queue(load_spec(first))
    done = work("tune", storage, "cpu", per_device=2)
    assert sorted(state for _, state in done) == ["COMPLETE"] * 6  # 3 trials per variant, none pruned

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    journal = open_storage(storage)
    searches = optuna.load_study(study_name="tune", storage=journal).user_attrs["searches"]
    escaped, censored, best = [], [], {}
    for name, attrs in searches.items():
        variant = attrs["config"]["model"]["attention"]["variant"]
        trials = optuna.load_study(study_name=name, storage=journal).get_trials()
        assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
        for t in trials:
            run = client.get_run(t.user_attrs["mlflow_run_id"])
            m = run.data.metrics
            assert float(run.data.params["optim.lr"]) == t.params["optim.lr"]
            if m["escape/censored"] == 0:
                assert t.value == pytest.approx(m["escape/step"])  # the recorded escape step
                escaped.append(t.value)
            else:  # the budget plus its distance to the escape level (floor - 0.25), in budgets
                level = float(run.data.params["data.val_context_free_loss"]) - 0.25
                assert t.value == pytest.approx(200 * (1 + max(0.0, m["val/loss"] - level)))
                censored.append(t.value)
        best[variant] = min(trials, key=lambda t: t.value).params["optim.lr"]
    # the rates span both outcomes, and every escaped trial ranks before every censored one
    assert escaped and censored and max(escaped) < 200 <= min(censored)

    axes2 = {"seed": [0, 1], "model.attention.variant": ["vanilla", "symmetric"]}
    second = write_spec(
        tmp_path / "tuned.yaml",
        name="tuned",
        base=base,
        axes=axes2,
        tuned_from="tune",
        stores=stores,
        workers=workers,
    )
    cells = expand(load_spec(second))
    assert {(c.axes["model.attention.variant"], c.config.optim.lr) for c in cells} == set(best.items())
    assert {c.axes["seed"] for c in cells} == {0, 1}
    queue(load_spec(second))
    assert sorted(state for _, state in work("tuned", storage, "cpu", per_device=2)) == ["COMPLETE"] * 4
    exp = client.get_experiment_by_name("tuned")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'pretrain'")
    assert sorted(
        (r.data.tags["attention"], float(r.data.params["optim.lr"]), r.data.params["seed"]) for r in runs
    ) == sorted((variant, lr, str(seed)) for variant, lr in best.items() for seed in (0, 1))


def _search_study(tmp_path, values_by_variant: dict, trials: int = 3, states=None):
    """A finished search study written straight into a journal: the study with its spec and one
    search per variant holding trials of these values (lr -> value)."""
    storage_url = str(tmp_path / "optuna.journal")
    storage = open_storage(storage_url)
    base = {"model": {"size": "tiny"}, "data": {"vocab_size": 256, "seq_len": 32}}
    spec = SweepSpec(
        name="tune",
        base=base,
        axes={"model.attention.variant": list(values_by_variant)},
        search=SearchSpec(low=1e-4, high=1e-2, trials=trials, objective="escape"),
    )
    study = optuna.create_study(study_name="tune", storage=storage)
    study.set_user_attr("spec", spec.model_dump(mode="json"))
    searches = {}
    for cell in expand(spec):
        name = f"tune.search.{cell.id}"
        one = optuna.create_study(study_name=name, storage=storage)
        for lr, value in values_by_variant[cell.axes["model.attention.variant"]].items():
            state = (states or {}).get(lr, TrialState.COMPLETE)
            one.add_trial(
                create_trial(
                    state=state,
                    value=value if state == TrialState.COMPLETE else None,
                    params={"optim.lr": lr},
                    distributions={"optim.lr": FloatDistribution(1e-4, 1e-2, log=True)},
                )
            )
        searches[name] = {
            "index": cell.index,
            "config": cell.config.model_dump(mode="json", exclude_unset=True),
        }
    study.set_user_attr("searches", searches)
    return storage_url, base


def test_tuned_from_gives_each_variant_the_best_rate_of_its_own_search(tmp_path):
    storage, base = _search_study(
        tmp_path,
        {
            "vanilla": {1e-3: 2400.0, 2e-3: 3000 * 1.3, 5e-4: 1800.0},
            "symmetric": {1e-3: 3000 * 1.1, 2e-3: 2100.0, 5e-4: 3000 * 1.2},
            "pairwise": {1e-3: 3000 * 1.2, 2e-3: 3000 * 1.5, 5e-4: 3000 * 1.35},  # none escaped
        },
    )
    tuned = SweepSpec(
        name="tuned",
        base=base,
        axes={"seed": [0, 1, 2], "model.attention.variant": ["vanilla", "symmetric", "pairwise"]},
        tuned_from="tune",
        stores={"optuna": storage},
    )
    cells = expand(tuned)
    rates = {(c.axes["model.attention.variant"], c.config.optim.lr) for c in cells}
    assert rates == {("vanilla", 5e-4), ("symmetric", 2e-3), ("pairwise", 1e-3)}
    assert cells[0].name == "tiny-vanilla-lr0.0005-s0" and len(cells) == 9
    # the matched seeds of a variant share its rate; each seed's cells stay one matched group
    assert {c.config.seed for c in cells if c.axes["model.attention.variant"] == "pairwise"} == {0, 1, 2}
    groups = {seed: {c.group for c in cells if c.config.seed == seed} for seed in (0, 1, 2)}
    assert all(len(g) == 1 for g in groups.values()) and len(set.union(*groups.values())) == 3
    assert all(c.config.tracking.tags["group"] == c.group for c in cells)
    assert len({c.config.group_id() for c in cells[:3]}) == 3  # the configs alone differ by rate
    assert tuned_values("tune", storage).param == "optim.lr"


def test_tuned_from_refuses_an_unfinished_search_and_a_cell_no_search_matches(tmp_path):
    storage, base = _search_study(tmp_path, {"vanilla": {1e-3: 2400.0, 2e-3: 1900.0}}, trials=3)
    spec = SweepSpec(
        name="tuned",
        base=base,
        axes={"model.attention.variant": ["vanilla"]},
        tuned_from="tune",
        stores={"optuna": storage},
    )
    with pytest.raises(ValueError, match=r"not finished \(2 of 3 trials complete\); run `symattn work tune`"):
        expand(spec)
    with pytest.raises(ValueError, match="no study 'other'"):
        expand(spec.model_copy(update={"tuned_from": "other"}))
    with pytest.raises(ValueError, match="move its search block"):
        SweepSpec(name="x", tuned_from="tune", search={"low": 1e-4, "high": 1e-2})

    (tmp_path / "two").mkdir()
    storage, base = _search_study(tmp_path / "two", {"vanilla": {1e-3: 2400.0, 2e-3: 1900.0}}, trials=2)
    other = SweepSpec(
        name="tuned",
        base={**base, "model": {"size": "mini"}},
        axes={"model.attention.variant": ["vanilla"]},
        tuned_from="tune",
        stores={"optuna": storage},
    )
    with pytest.raises(ValueError, match="no search of study 'tune' has this cell's settings"):
        expand(other)
