"""The BERT model: exact parameter counts, parity with HF BERT, seeded init, the MLM loss."""

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from symattn.model.attention import AttentionConfig
from symattn.model.bert import (
    BertForMaskedLM,
    BertForSequenceClassification,
    ModelConfig,
    count_parameters,
    flops_per_token,
)
from symattn.model.params_table import parameter_rows

PAPER_COUNTS = {
    "base": {"vanilla": 109_514_298, "symmetric": 102_427_194, "pairwise": 103_017_018},
    "small": {"vanilla": 28_795_194, "symmetric": 27_744_570, "pairwise": 27_875_642},
}


@pytest.mark.parametrize("size", PAPER_COUNTS)
def test_parameter_counts_match_the_paper(size):
    rows = {r["label"]: r for r in parameter_rows(size)}
    assert rows["vanilla"]["total"] == PAPER_COUNTS[size]["vanilla"]
    assert rows["symmetric"]["total"] == PAPER_COUNTS[size]["symmetric"]
    assert rows["pairwise"]["total"] == PAPER_COUNTS[size]["pairwise"]
    assert rows["pairwise-symmetric"]["total"] == PAPER_COUNTS[size]["pairwise"]  # stores A, uses (A+A^T)/2
    assert rows["pairwise-diagonal"]["total"] < PAPER_COUNTS[size]["pairwise"]
    assert round(rows["pairwise"]["vs_vanilla_pct"], 2) == {"base": -5.93, "small": -3.19}[size]


def test_parameter_breakdown_of_a_real_model():
    cfg = ModelConfig(size="tiny", vocab_size=1000, max_positions=64)
    counts = count_parameters(BertForMaskedLM(cfg))
    embeddings = 1000 * 128 + 64 * 128 + 2 * 128
    assert counts["non_embedding"] == counts["total"] - embeddings
    assert counts["attention"] == 2 * 3 * (128 * 128 + 128)


def tiny(kind="vanilla", seed=0, **kw):
    cfg = ModelConfig(
        size="tiny", vocab_size=500, max_positions=32, attention=AttentionConfig(variant=kind, **kw)
    )
    return BertForMaskedLM(cfg, seed=seed)


def test_shared_parameters_start_identical_across_variants():
    models = [tiny("vanilla"), tiny("symmetric"), tiny("pairwise"), tiny("pairwise", scheme="diagonal")]
    ref = models[0].state_dict()
    for m in models[1:]:
        for name, value in m.state_dict().items():
            if name in ref:
                assert torch.equal(value, ref[name]), name
    other_seed = tiny("vanilla", seed=1).state_dict()
    assert not torch.equal(
        other_seed["bert.embeddings.word_embeddings.weight"], ref["bert.embeddings.word_embeddings.weight"]
    )


def test_init_follows_bert():
    m = tiny()
    w = m.bert.embeddings.word_embeddings.weight
    assert abs(w[1:].std().item() - 0.02) < 0.002 and w[0].abs().max() == 0  # [PAD] row is zero
    assert m.cls.predictions.decoder.weight is w  # tied
    assert m.cls.predictions.bias.abs().max() == 0
    assert torch.equal(m.bert.encoder.layer[0].output.LayerNorm.weight, torch.ones(128))


def batch(seed=0, vocab=500):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (4, 16), generator=g)
    mask = torch.ones(4, 16, dtype=torch.long)
    mask[1, 10:] = 0
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    labels[2, 7] = ids[2, 7]
    return ids, mask, labels


@pytest.mark.parametrize("kind", ["vanilla", "symmetric", "pairwise"])
def test_masked_only_loss_equals_loss_over_full_logits(kind):
    m = tiny(kind).eval()
    ids, mask, labels = batch()
    out = m(ids, mask, labels=labels)
    full = m(ids, mask).logits
    assert out.logits.shape == (5, 500)
    expected = F.cross_entropy(full.view(-1, 500), labels.view(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=1e-5)


def test_attention_probabilities_on_request_match_the_fast_path():
    m = tiny("pairwise").eval()
    ids, mask, _ = batch()
    fast = m(ids, mask).logits
    slow = m(ids, mask, output_attentions=True)
    torch.testing.assert_close(slow.logits, fast, atol=1e-5, rtol=1e-5)
    assert len(slow.attentions) == 2 and slow.attentions[0].shape == (4, 2, 16, 16)


def test_classification_head_loads_a_pretrained_encoder():
    mlm = tiny("symmetric", seed=3)
    clf = BertForSequenceClassification(mlm.config, num_labels=3, seed=0)
    clf.load_encoder(mlm.state_dict())
    assert torch.equal(
        clf.bert.encoder.layer[1].attention.self.query.weight,
        mlm.bert.encoder.layer[1].attention.self.query.weight,
    )
    ids, mask, _ = batch()
    out = clf(ids, mask, labels=torch.tensor([0, 1, 2, 1]))
    assert out.logits.shape == (4, 3) and out.loss.item() > 0
    reg = BertForSequenceClassification(mlm.config, num_labels=1)
    assert reg(ids, mask, labels=torch.rand(4)).loss.item() > 0
    with pytest.raises(ValueError, match="does not match"):
        clf.load_encoder(tiny("vanilla").state_dict())


def test_flops_follow_the_variants():
    def cfg(kind, **kw):
        return ModelConfig(size="base", attention=AttentionConfig(variant=kind, **kw))

    van, sym, pair = (flops_per_token(cfg(k), 512) for k in ("vanilla", "symmetric", "pairwise"))
    assert sym < pair < van
    assert van - sym == pytest.approx(3 * 12 * 2 * 768 * 768)
    # 6N rule of thumb for the non-embedding matmuls, plus attention and the masked head
    assert 6 * 85e6 < van < 6 * 85e6 * 1.5


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"size": "huge"}, "unknown model size"),
        ({"size": "tiny", "heads": 3}, "3 heads do not divide hidden size 128"),
        ({"vocab_size": 4}, "smaller than the 5 special tokens"),
        ({"attention": {"variant": "pairwise", "scheme": "banded"}}, "unknown coefficient scheme"),
        ({"attention": {"variant": "symmetric", "scheme": "full"}}, "has no coefficients"),
        ({"attention": {"variant": "fancy"}}, "unknown attention"),
    ],
)
def test_bad_model_config_is_refused_at_construction(kwargs, words):
    with pytest.raises(ValidationError, match=words):
        ModelConfig(**kwargs)


def test_sequence_longer_than_positions_is_refused():
    with pytest.raises(ValueError, match="exceeds max_positions 32"):
        tiny()(torch.zeros(1, 40, dtype=torch.long))


@pytest.mark.parametrize("kind", ["vanilla", "symmetric", "pairwise"])
def test_training_step_fast_path_equals_math_path(kind):
    """Dropout on, same seed: loss and every gradient agree between the fast path (fused projections,
    CPU attention kernel) and the math path (materialised probabilities)."""
    grads = []
    for math_path in (False, True):
        m = tiny(kind).train()
        ids, mask, labels = batch()
        torch.manual_seed(11)
        out = m(ids, mask, labels=labels, output_attentions=math_path)
        out.loss.backward()
        grads.append((out.loss.detach(), {n: p.grad for n, p in m.named_parameters()}))
    (loss_fast, g_fast), (loss_math, g_math) = grads
    torch.testing.assert_close(loss_fast, loss_math, atol=1e-5, rtol=1e-5)
    for name, g in g_fast.items():
        torch.testing.assert_close(g, g_math[name], atol=1e-5, rtol=1e-4, msg=name)


def test_dropout_modules_are_ours_and_respect_eval():
    from symattn.model.attention import Dropout

    m = tiny()
    assert isinstance(m.bert.embeddings.dropout, Dropout)
    ids, mask, _ = batch()
    m.eval()
    torch.testing.assert_close(m(ids, mask).logits, m(ids, mask).logits)
    m.train()
    assert not torch.allclose(m(ids, mask).logits, m(ids, mask).logits)
