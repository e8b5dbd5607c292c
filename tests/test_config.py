"""The run config: torch-free, one rule for seeds, and the variant registry it validates against."""

import subprocess
import sys

import pytest

from symattn.config import RunConfig, load_config
from symattn.data.config import DataConfig
from symattn.errors import one_line
from symattn.model import variants
from symattn.sweep.design import expand
from symattn.sweep.spec import SweepSpec


@pytest.mark.parametrize(
    "config, data_seed",
    [
        ({"seed": 1}, 1),  # data order and masks follow the seed
        ({"seed": 1, "data": {"vocab_size": 512}}, 1),
        ({"seed": 1, "data": {"seed": 7}}, 7),  # unless the config sets them apart
        ({}, 0),
    ],
)
def test_data_seed_defaults_to_the_run_seed(config, data_seed):
    assert RunConfig.model_validate(config).data.seed == data_seed


def test_data_seed_follows_seed_on_the_train_path_and_the_sweep_path():
    assert load_config(None, ["seed=3"]).data.seed == 3
    assert RunConfig(seed=3, data=DataConfig(vocab_size=512)).data.seed == 3
    assert RunConfig(seed=3, data=DataConfig(seed=5)).data.seed == 5
    cells = expand(SweepSpec(name="s", axes={"seed": [0, 4]}))
    assert [(c.config.seed, c.config.data.seed) for c in cells] == [(0, 0), (4, 4)]
    # Two runs of one seed are one run, whichever path made them.
    assert (
        cells[1].config.config_hash() == load_config(None, ["seed=4", "tracking.experiment=s"]).config_hash()
    )


def test_the_config_and_spec_layer_imports_no_torch():
    code = (
        "import sys; import symattn.config, symattn.sweep.spec, symattn.cli; "
        "from symattn.sweep.spec import SweepSpec; from symattn.sweep.design import expand; expand(SweepSpec(name='s', axes={'seed': [0]})); "
        "print(sorted(m for m in ('torch', 'pytorch_lightning', 'mlflow', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_variant_has_its_computation_and_the_model_asks_the_variant():
    from symattn.model.attention import ATTENTIONS
    from symattn.model.bert import BertForMaskedLM, ModelConfig

    assert set(ATTENTIONS) == set(variants.VARIANTS)
    for name, variant in variants.VARIANTS.items():
        assert (ATTENTIONS[name].has_key, ATTENTIONS[name].has_coefficients) == (
            variant.has_key,
            variant.has_coefficients,
        )
        model = BertForMaskedLM(ModelConfig(attention={"variant": name}))
        names = {n.rsplit(".", 1)[0] for n, _ in model.named_parameters() if ".attention.self." in n}
        assert any(n.endswith(".key") for n in names) == variant.has_key
        assert any("pairwise_factors" in n for n, _ in model.named_parameters()) == variant.has_coefficients


@pytest.mark.parametrize(
    "kind, scheme, init, label",
    [
        ("vanilla", "none", "none", "vanilla"),
        ("pairwise", "full", "normal", "pairwise"),
        ("pairwise", "diagonal", None, "pairwise-diagonal"),
        ("pairwise", "symmetric", "identity", "pairwise-symmetric-identity"),
        ("symmetric", None, float("nan"), "symmetric"),
        ("someone-elses", "x", None, "someone-elses-x"),
    ],
)
def test_one_label_rule_for_configs_and_recorded_runs(kind, scheme, init, label):
    assert variants.variant_label(kind, scheme, init) == label
    if kind in variants.VARIANTS and scheme != "x":
        attention = {"variant": kind, **({"scheme": scheme, "init": init} if kind == "pairwise" else {})}
        assert RunConfig.model_validate({"model": {"attention": attention}}).model.attention.label == label


def test_run_identity_is_stable_and_earlier_field_names_still_load():
    # Recorded runs are found (and resumed) by these hashes: a change to them orphans every run.
    pairwise = {"model": {"attention": {"variant": "pairwise", "scheme": "full", "init": "scaled"}}}
    assert (RunConfig().config_hash(), RunConfig().group_id()) == ("02314b6f6828", "95f330c882cf")
    assert RunConfig.model_validate(pairwise).config_hash() == "0de44d235aed"
    path_source = RunConfig.model_validate({"data": {"source": ["path:/tmp/x.txt"]}})
    assert (path_source.config_hash(), path_source.group_id()) == ("80c6769e4b4e", "e4907db33835")
    # Configs and MLflow params written with the earlier name `kind` load as the same run.
    earlier = {
        "model": {"attention": {"kind": "pairwise", "scheme": "full", "init": "scaled"}},
        "data": {"source": [{"kind": "path", "path": "/tmp/x.txt"}]},
    }
    now = {**pairwise, "data": {"source": [{"type": "path", "path": "/tmp/x.txt"}]}}
    assert RunConfig.model_validate(earlier) == RunConfig.model_validate(now)
    assert RunConfig.model_validate(now).model.attention.variant == "pairwise"


def test_a_kept_step_beyond_the_budget_is_refused_naming_the_step_and_the_fix():
    with pytest.raises(ValueError) as info:
        load_config(None, ["optim.max_steps=3000", "checkpoint.keep=[1500, 3000, 4000, 5000]"])
    line = one_line(info.value)
    assert "checkpoint.keep" in line and "4000" in line and "max_steps 3000" in line, line
    assert "raise optim.max_steps" in line and "\n" not in line, line
    # step 0 (the initial weights) and the last step are kept
    assert load_config(None, ["optim.max_steps=20", "checkpoint.keep=[0, 20]"]).checkpoint.keep == [0, 20]


def _spec(axes: dict, base: dict | None = None) -> SweepSpec:
    return SweepSpec.model_validate({"name": "s", "base": base or {}, "axes": axes})


def test_a_spec_takes_the_earlier_attention_key_as_the_config_does():
    now = expand(_spec({"seed": [0, 1], "model.attention.variant": ["vanilla", "pairwise"]}))
    earlier_spec = _spec({"seed": [0, 1], "model.attention.kind": ["vanilla", "pairwise"]})
    earlier = expand(earlier_spec)
    # resolved to the one name: the same cells, ids, names and axis values
    assert list(earlier_spec.axes) == ["seed", "model.attention.variant"]
    assert [(c.id, c.name, c.axes) for c in earlier] == [(c.id, c.name, c.axes) for c in now]
    assert [c.id for c in now] == [
        RunConfig.model_validate({"seed": s, "model": {"attention": {"variant": v}}}).config_hash()
        for s in (0, 1)
        for v in ("vanilla", "pairwise")
    ]


@pytest.mark.parametrize(
    "build",
    [
        lambda: load_config(None, ["model.attention.kind=pairwise", "model.attention.variant=vanilla"]),
        lambda: _spec({"model.attention.kind": ["vanilla"], "model.attention.variant": ["pairwise"]}),
        lambda: expand(
            _spec({"model.attention.variant": ["pairwise"]}, {"model": {"attention": {"kind": "vanilla"}}})
        ),
    ],
    ids=["config", "spec-axes", "spec-base-and-axis"],
)
def test_both_names_of_the_variant_are_refused_as_one_setting(build):
    with pytest.raises(ValueError) as info:
        build()
    line = one_line(info.value)
    assert "same setting" in line and "keep variant" in line and "unknown setting" not in line, line


def test_params_of_earlier_runs_read_as_this_version_logs_them():
    """A preset's shape logged as None and a source as a Python repr (earlier versions) read as the
    shape and shorthand runs log now, so that one design's runs are one setting across versions."""
    from symattn.config import current_params

    old = {"model.size": "tiny", "model.layers": "None", "model.hidden": "None", "model.heads": "None"}
    old |= {"model.intermediate": "None", "data.source": "[{'type': 'registry', 'name': 'pypi-news'}]"}
    new = current_params(old)
    assert [new[f"model.{k}"] for k in ("layers", "hidden", "heads", "intermediate")] == [
        "2",
        "128",
        "2",
        "512",
    ]
    assert new["data.source"] == "pypi-news"
    wider = current_params({**old, "model.hidden": "256"})  # an explicit width: the rest follow it
    assert (wider["model.hidden"], wider["model.intermediate"]) == ("256", "1024")
    assert current_params(new) == new  # this version's params are left as they are
