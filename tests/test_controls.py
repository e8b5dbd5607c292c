"""The study's controls: a parameter-matched vanilla (query/key width per head), a scale-matched
vanilla (a fixed query/key initial gain), pairwise with scaled S, and the shared-projection
variant; each is a registry or config entry like any variant."""

from __future__ import annotations

import pytest
import torch

from symattn.config import RunConfig
from symattn.model.attention import build_attention, padding_mask
from symattn.model.bert import BertForMaskedLM
from symattn.model.config import SIZES, AttentionConfig, ModelConfig
from symattn.model.diagnostics import attention_stats
from symattn.model.params_table import matched_qk_dim, parameter_rows


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_vanilla_at_half_the_query_key_width_has_symmetrics_parameter_count_exactly(size):
    rows = {r["label"]: r for r in parameter_rows(size)}
    half = SIZES[size][1] // SIZES[size][2] // 2
    matched = rows[f"vanilla-qk{half}"]
    assert matched["matches"] == "symmetric" and matched["exact"]
    assert matched["total"] == rows["symmetric"]["total"]
    assert matched["attention"] == rows["symmetric"]["attention"] < rows["vanilla"]["attention"]
    # a real (not shape-only) model has the same counts
    real = (
        {
            att.label: sum(
                p.numel() for p in BertForMaskedLM(ModelConfig(size=size, attention=att)).parameters()
            )
            for att in (AttentionConfig(qk_dim=half), AttentionConfig(variant="symmetric"))
        }
        if size == "tiny"
        else {}
    )
    assert all(count == matched["total"] for count in real.values())


def test_pairwise_gets_the_nearest_width_and_says_it_is_not_exact():
    rows = {r["label"]: r for r in parameter_rows("tiny", vocab_size=4096, max_positions=64)}
    [row] = [r for r in rows.values() if r.get("matches") == "pairwise"]
    assert not row["exact"]
    width, total = matched_qk_dim(
        ModelConfig(size="tiny", vocab_size=4096, max_positions=64), rows["pairwise"]["total"]
    )
    for other in (width - 1, width + 1):  # no other width comes nearer
        cfg = ModelConfig(
            size="tiny", vocab_size=4096, max_positions=64, attention=AttentionConfig(qk_dim=other)
        )
        count = sum(p.numel() for p in BertForMaskedLM(cfg).parameters())
        assert abs(count - rows["pairwise"]["total"]) >= abs(total - rows["pairwise"]["total"])


def _inputs():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 7, 32, generator=g)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0
    return x, mask


@pytest.mark.parametrize(
    "att",
    [
        AttentionConfig(qk_dim=3),
        AttentionConfig(variant="pairwise", qk_dim=5),
        AttentionConfig(variant="shared"),
    ],
)
def test_narrow_query_keys_and_the_shared_projection_agree_on_both_paths(att):
    torch.manual_seed(0)
    layer = build_attention(att, hidden=32, heads=4, dropout=0.0).eval()
    if att.variant == "shared":  # start away from ones, so each role's scaling matters
        with torch.no_grad():
            layer.role_scales.uniform_(0.5, 1.5)
    x, mask = _inputs()
    fast, _ = layer(x, padding_mask(mask))
    slow, probs = layer(x, padding_mask(mask), math_path=True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    q, k, v = layer.query_key_value(x)
    assert q.shape[-1] == k.shape[-1] == (att.qk_dim or 8) and v.shape[-1] == 8
    fast.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_the_shared_projection_has_one_projection_and_role_scalings():
    layer = build_attention(AttentionConfig(variant="shared"), hidden=32, heads=4, dropout=0.0)
    assert {n for n, _ in layer.named_parameters()} == {"query.weight", "query.bias", "role_scales"}
    with pytest.raises(ValueError, match="qk_dim does not apply"):
        AttentionConfig(variant="shared", qk_dim=4)


def _initial_logit_sd(attention: AttentionConfig) -> float:
    cfg = ModelConfig(size="tiny", vocab_size=4096, max_positions=64, init_std=0.07, attention=attention)
    model = BertForMaskedLM(cfg, seed=0).eval()
    ids = torch.randint(5, 4096, (16, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(ids, torch.ones_like(ids), output_attentions=True)
    return attention_stats(out.attentions, torch.ones_like(ids))["diag/layer0/logit_sd"]


def test_the_scale_controls_match_the_initial_logit_spread_they_claim():
    vanilla = _initial_logit_sd(AttentionConfig())
    pairwise = _initial_logit_sd(AttentionConfig(variant="pairwise"))
    assert pairwise > 5 * vanilla  # the gap the controls remove
    assert _initial_logit_sd(AttentionConfig(qk_gain=2.83)) == pytest.approx(pairwise, rel=0.15)
    assert _initial_logit_sd(AttentionConfig(variant="pairwise", init="scaled")) == pytest.approx(
        vanilla, rel=0.15
    )


def test_the_gain_scales_the_initial_query_and_key_weights_only():
    plain = BertForMaskedLM(ModelConfig(size="tiny"), seed=4).state_dict()
    gained = BertForMaskedLM(
        ModelConfig(size="tiny", attention=AttentionConfig(qk_gain=2.5)), seed=4
    ).state_dict()
    for name, value in plain.items():
        factor = 2.5 if name.endswith(("self.query.weight", "self.key.weight")) else 1.0
        torch.testing.assert_close(gained[name], value * factor, msg=name)


def test_the_gain_on_the_shared_projection_scales_its_query_and_key_roles_not_its_values():
    """One projection makes Q, K and V: the gain goes on the Q and K role scalings, so the initial
    logits scale by gain^2 as for any variant, and the values (and the projection) are untouched."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 128)
    plain, gained = (
        BertForMaskedLM(
            ModelConfig(size="tiny", attention=AttentionConfig(variant="shared", qk_gain=g)), seed=4
        )
        for g in (None, 2.5)
    )
    p_state, g_state = plain.state_dict(), gained.state_dict()
    for name, value in p_state.items():
        if name.endswith("role_scales"):
            torch.testing.assert_close(g_state[name], torch.tensor([[2.5], [2.5], [1.0]]).expand_as(value))
        else:
            torch.testing.assert_close(g_state[name], value, msg=name)
    layers = [m.bert.encoder.layer[0].attention.self for m in (plain, gained)]
    (q0, k0, v0), (q1, k1, v1) = (layer.query_key_value(x) for layer in layers)
    torch.testing.assert_close(v1, v0)
    torch.testing.assert_close(q1, 2.5 * q0)
    torch.testing.assert_close(q1 @ k1.transpose(-1, -2), 2.5**2 * (q0 @ k0.transpose(-1, -2)))


def test_controls_are_new_runs_of_the_same_matched_group():
    base = RunConfig()
    for attention in ({"qk_dim": 32}, {"qk_gain": 2.83}):
        control = RunConfig.model_validate({"model": {"attention": attention}})
        assert control.config_hash() != base.config_hash()
        assert control.group_id() == base.group_id()
    # unset controls leave a run's identity as it was
    assert "qk_dim" not in base._identity()["model"]["attention"]


def test_labels_name_the_controls():
    assert AttentionConfig(qk_dim=32).label == "vanilla-qk32"
    assert AttentionConfig(qk_gain=2.83).label == "vanilla-gain2.83"
    assert AttentionConfig(variant="pairwise", init="scaled").label == "pairwise-scaled"
