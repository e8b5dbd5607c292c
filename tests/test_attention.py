"""The variant x scheme matrix through both computation paths, and the identities between variants."""

import math

import pytest
import torch
from pydantic import ValidationError

from symattn.model.attention import (
    ATTENTIONS,
    COEFFICIENT_INITS,
    AttentionConfig,
    attend_math,
    build_attention,
    padding_mask,
)
from symattn.model.params_table import attention_configs

HIDDEN, HEADS, D = 32, 4, 8


def make(kind, scheme=None, init=None, seed=0):
    torch.manual_seed(seed)
    att = build_attention(AttentionConfig(variant=kind, scheme=scheme, init=init), HIDDEN, HEADS, dropout=0.0)
    return att.eval()


def inputs(padded: bool):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, HIDDEN, generator=g)
    mask = torch.ones(3, 7, dtype=torch.long)
    if padded:
        mask[0, 5:] = 0
        mask[2, 2:] = 0
    return x, mask


MATRIX = [
    (c.variant, c.scheme, i) for c in attention_configs() for i in (COEFFICIENT_INITS if c.scheme else [None])
]


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("kind,scheme,init", MATRIX)
def test_fast_and_math_paths_agree(kind, scheme, init, padded):
    att = make(kind, scheme, init)
    x, mask = inputs(padded)
    m = padding_mask(mask)
    fast, none = att(x, m)
    slow, probs = att(x, m, math_path=True)
    assert none is None and probs.shape == (3, HEADS, 7, 7)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    if padded:  # padded keys get no attention; rows still sum to one
        assert probs[0, :, :, 5:].abs().max() == 0
        assert probs[2, :, :, 2:].abs().max() == 0
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, HEADS, 7))


def logits_of(att, x):
    q, k, _ = att.query_key_value(x)
    return q @ k.transpose(-1, -2) / math.sqrt(D)


@pytest.mark.parametrize(
    "kind,scheme", [("symmetric", None), ("pairwise", "diagonal"), ("pairwise", "symmetric")]
)
def test_symmetric_forms_give_symmetric_logits(kind, scheme):
    att = make(kind, scheme)
    logits = logits_of(att, inputs(False)[0])
    torch.testing.assert_close(logits, logits.transpose(-1, -2), atol=1e-5, rtol=1e-5)


def test_pairwise_full_is_not_symmetric_in_general():
    logits = logits_of(make("pairwise", "full"), inputs(False)[0])
    assert (logits - logits.transpose(-1, -2)).abs().max() > 1e-2


def test_symmetric_logits_are_positive_semidefinite():
    logits = logits_of(make("symmetric"), inputs(False)[0])
    assert torch.linalg.eigvalsh(logits.double()).min() > -1e-4


@pytest.mark.parametrize("scheme", ["full", "diagonal", "symmetric"])
def test_pairwise_identity_equals_symmetric(scheme):
    sym, pair = make("symmetric"), make("pairwise", scheme, "identity")
    pair.load_state_dict({**sym.state_dict(), "pairwise_factors": pair.pairwise_factors.detach()})
    x, mask = inputs(True)
    torch.testing.assert_close(pair(x, padding_mask(mask))[0], sym(x, padding_mask(mask))[0])


def test_vanilla_with_shared_projection_equals_symmetric():
    sym, van = make("symmetric"), make("vanilla")
    sd = sym.state_dict()
    van.load_state_dict({**sd, "key.weight": sd["query.weight"], "key.bias": sd["query.bias"]})
    x, mask = inputs(True)
    torch.testing.assert_close(van(x, padding_mask(mask))[0], sym(x, padding_mask(mask))[0])


def test_pairwise_full_equals_vanilla_with_keys_q_s_transposed():
    """Q S Q^T = Q (Q S^T)^T: vanilla attention whose keys are Q_h S_h^T."""
    pair = make("pairwise", "full")
    x, mask = inputs(True)
    q = pair.split_heads(pair.query(x))
    v = pair.split_heads(pair.value(x))
    keys = q @ pair.pairwise_factors.transpose(-1, -2)
    expected, _ = attend_math(q, keys, v, padding_mask(mask))
    got, _ = pair(x, padding_mask(mask))
    torch.testing.assert_close(got, expected.transpose(1, 2).reshape(3, 7, HIDDEN), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scheme", ["full", "diagonal", "symmetric"])
def test_gradients_reach_coefficients(scheme):
    att = make("pairwise", scheme)
    x, mask = inputs(True)
    att(x, padding_mask(mask))[0].square().sum().backward()
    assert att.pairwise_factors.grad is not None and att.pairwise_factors.grad.abs().sum() > 0


def test_parameter_names_follow_the_release():
    assert {n for n, _ in make("vanilla").named_parameters()} >= {"query.weight", "key.weight", "value.bias"}
    names = {n for n, _ in make("pairwise").named_parameters()}
    assert "key.weight" not in names and "pairwise_factors" in names
    assert make("pairwise").pairwise_factors.shape == (HEADS, D, D)
    assert make("pairwise", "diagonal").pairwise_factors.shape == (HEADS, D)


def test_normal_init_is_unscaled_and_scaled_init_is_one_over_d():
    big = build_attention(AttentionConfig(variant="pairwise"), 1024, 4, 0.0).pairwise_factors
    assert abs(big.std().item() - 1.0) < 0.01
    big = build_attention(AttentionConfig(variant="pairwise", init="scaled"), 1024, 4, 0.0).pairwise_factors
    assert abs(big.std().item() - 1 / 16) < 0.001


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"variant": "linear"}, "unknown attention 'linear'"),
        ({"variant": "pairwise", "scheme": "lowrank"}, "unknown coefficient scheme"),
        ({"variant": "pairwise", "init": "zeros"}, "unknown coefficient init"),
        ({"variant": "vanilla", "scheme": "full"}, "has no coefficients"),
        ({"variant": "symmetric", "init": "normal"}, "has no coefficients"),
        ({"variant": "vanilla", "colour": 1}, "colour"),
    ],
)
def test_bad_attention_config_is_refused(kwargs, words):
    with pytest.raises(ValidationError, match=words):
        AttentionConfig(**kwargs)


def test_registry_lists_the_variants():
    assert list(ATTENTIONS) == ["vanilla", "symmetric", "pairwise", "shared"]


# --- the fast path against the plain one ---------------------------------------------------------

from symattn.model.attention import Dropout, attend, dropout  # noqa: E402


def plain_query_key_value(att, x):
    """The unfused computation: one Linear per projection, broadcast q @ S."""
    if att.name == "shared":
        p = att.query(x)
        return tuple(att.split_heads(p * scale) for scale in att.role_scales)
    q = att.split_heads(att.query(x))
    v = att.split_heads(att.value(x))
    if att.name == "vanilla":
        return q, att.split_heads(att.key(x)), v
    if att.name == "symmetric":
        return q, q, v
    return q @ att.coefficient_matrix(), q, v


@pytest.mark.parametrize("kind,scheme,init", MATRIX)
def test_fused_projection_equals_separate_linears(kind, scheme, init):
    att = make(kind, scheme, init)
    x, _ = inputs(False)
    for got, expected in zip(att.query_key_value(x), plain_query_key_value(att, x)):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kind,scheme", [("vanilla", None), ("symmetric", None), ("pairwise", "full"), ("pairwise", "diagonal")]
)
def test_fused_projection_gradients_reach_each_linear(kind, scheme):
    att, ref = make(kind, scheme), make(kind, scheme)
    x, mask = inputs(True)
    att(x, padding_mask(mask))[0].square().sum().backward()
    q, k, v = plain_query_key_value(ref, x)
    ctx, _ = attend_math(q, k, v, padding_mask(mask))
    ctx.transpose(1, 2).reshape(3, 7, HIDDEN).square().sum().backward()
    for (name, p), (_, p_ref) in zip(att.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("kind,scheme", [("vanilla", None), ("symmetric", None), ("pairwise", "full")])
def test_fast_and_math_paths_agree_in_training_with_dropout(kind, scheme, padded):
    """Same seed, dropout on: the CPU fast path draws the same dropout mask as the math path."""
    torch.manual_seed(0)
    att = build_attention(AttentionConfig(variant=kind, scheme=scheme), HIDDEN, HEADS, dropout=0.3).train()
    x, mask = inputs(padded)
    m = padding_mask(mask)
    torch.manual_seed(5)
    fast, _ = att(x, m)
    torch.manual_seed(5)
    slow, _ = att(x, m, math_path=True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    torch.manual_seed(6)
    assert not torch.allclose(att(x, m)[0], fast)  # a different mask


def test_all_ones_mask_is_dropped_and_gives_the_same_result():
    att = make("pairwise")
    x, _ = inputs(False)
    ones = torch.ones(3, 7, dtype=torch.long)
    assert padding_mask(ones) is None
    explicit = ones.bool()[:, None, None, :]
    torch.testing.assert_close(att(x, None)[0], att(x, explicit)[0], atol=1e-6, rtol=1e-6)


def test_fully_padded_row_stays_finite_on_the_training_path():
    q = k = v = torch.randn(2, HEADS, 5, D)
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[1] = 0
    out = attend(q, k, v, padding_mask(mask), dropout_p=0.1)
    assert torch.isfinite(out).all()


def test_coefficients_as_one_batched_matmul_equal_broadcast():
    pair = make("pairwise")
    s = pair.pairwise_factors.detach()
    q = torch.randn(3, HEADS, 7, D)  # contiguous
    torch.testing.assert_close(pair.scheme.apply(q, s), q @ s, atol=1e-5, rtol=1e-5)
    strided = torch.randn(3, 7, 3 * HIDDEN)[..., :HIDDEN].view(3, 7, HEADS, D).transpose(1, 2)
    torch.testing.assert_close(pair.scheme.apply(strided, s), strided @ s, atol=1e-5, rtol=1e-5)


def test_dropout_keeps_the_right_fraction_scales_and_routes_gradients():
    x = torch.ones(200_000, requires_grad=True)
    torch.manual_seed(0)
    y = dropout(x, 0.1, True)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.005
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.9))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.9)
    torch.manual_seed(0)
    assert torch.equal(dropout(x, 0.1, True) != 0, kept)  # seeded: reproducible
    assert dropout(x, 0.1, False) is x and dropout(x, 0.0, True) is x
    assert dropout(x, 1.0, True).abs().sum() == 0


def test_dropout_module_follows_train_and_eval():
    d = Dropout(0.5)
    x = torch.ones(1000)
    assert (d.eval()(x) == x).all()
    assert (d.train()(x) == 0).any()
    with pytest.raises(ValueError, match="between 0 and 1"):
        Dropout(1.5)


@pytest.fixture(params=["cpu route", "accelerator route"])
def dropout_route(request, monkeypatch):
    """Runs a test on the CPU's own dropout routes and on the fused ones accelerators take
    (F.dropout, SDPA with dropout), which also run on the CPU, only slower."""
    import symattn.model.attention as attention

    accelerator = request.param == "accelerator route"
    monkeypatch.setattr(attention, "has_fused_dropout", lambda x: accelerator)
    return request.param


@pytest.mark.parametrize("padded", [False, True])
def test_attention_dropout_is_unbiased_and_trains_on_either_route(dropout_route, padded):
    torch.manual_seed(0)
    att = build_attention(AttentionConfig(variant="pairwise"), HIDDEN, HEADS, dropout=0.3)
    x, mask = inputs(padded)
    m = padding_mask(mask)
    with torch.no_grad():
        expected = att.eval()(x, m)[0]
        att.train()
        draws = torch.stack([att(x, m)[0] for _ in range(2000)])
    assert not torch.allclose(draws[0], draws[1])  # dropout is on
    # dropout keeps the expectation: the mean over draws approaches the output without dropout
    torch.testing.assert_close(draws.mean(0), expected, atol=0.08, rtol=0.0)  # unscaled: off by 0.4
    out, _ = att(x, m)
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in att.parameters())


def test_dropout_keeps_the_fraction_and_scale_on_either_route(dropout_route):
    y = dropout(torch.ones(200_000), 0.1, True)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.005
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.9))
