"""The data's context-free floor L*, against a brute-force computation and against the masks the
suite really draws."""

import json

import numpy as np
import pytest

from symattn.data.floor import MASK_SHARE, PSEUDO_COUNT, RANDOM_SHARE, context_free_floor, token_counts
from symattn.data.masking import mask_tokens
from symattn.data.tokenizer import SpecialIds
from symattn.tokens import IGNORE_INDEX

SPECIAL = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
VOCAB = 12  # 5 special ids, 7 ordinary ones


def brute_force(train_counts, val_counts):
    """Enumerate every (target y, shown token x): P(x | y) from the masking rule as a dense matrix,
    the context-free posterior P(y | x) by Bayes' rule under the training unigram, and the
    expected loss over the validation targets."""
    keep = 1 - MASK_SHARE - RANDOM_SHARE
    ordinary = [i for i in range(VOCAB) if i not in SPECIAL.all]
    seen = train_counts + PSEUDO_COUNT * np.isin(np.arange(VOCAB), ordinary)  # as documented
    p = seen / seen.sum()
    p_val = val_counts / val_counts.sum()
    shown = np.zeros((VOCAB, VOCAB))  # shown[y, x] = P(x | y)
    for y in ordinary:
        shown[y, SPECIAL.mask] += MASK_SHARE
        shown[y, y] += keep
        for v in ordinary:
            shown[y, v] += RANDOM_SHARE / len(ordinary)
    joint = p[:, None] * shown  # P(y, x) under training
    with np.errstate(invalid="ignore"):  # x never shown: 0/0, never used
        posterior = joint / joint.sum(axis=0, keepdims=True)  # P(y | x)
    loss = 0.0
    for y in ordinary:
        for x in range(VOCAB):
            if p_val[y] and shown[y, x]:
                loss -= p_val[y] * shown[y, x] * np.log(posterior[y, x])
    return loss


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_floor_matches_brute_force_on_a_toy_vocabulary(seed):
    rng = np.random.default_rng(seed)
    train = np.zeros(VOCAB)
    val = np.zeros(VOCAB)
    train[5:] = rng.integers(1, 500, VOCAB - 5)
    val[5:] = rng.integers(0, 100, VOCAB - 5)
    floor = context_free_floor(train, val, SPECIAL.all)
    assert floor["context_free_loss"] == pytest.approx(brute_force(train, val), rel=1e-12)
    p = (train[5:] + PSEUDO_COUNT) / (train[5:] + PSEUDO_COUNT).sum()
    assert floor["unigram_entropy"] == pytest.approx(-(val[5:] / val.sum() * np.log(p)).sum())
    # Seeing the token in 20% of the cases can only help.
    assert floor["context_free_loss"] < floor["unigram_entropy"]


def test_floor_is_the_loss_of_the_bayes_predictor_on_the_suites_own_masks():
    """Monte Carlo: draw masks with `mask_tokens`, score the context-free posterior on them."""
    rng = np.random.default_rng(0)
    probs = np.r_[np.zeros(5), rng.dirichlet(np.ones(VOCAB - 5))]
    blocks = rng.choice(VOCAB, size=(20_000, 16), p=probs)
    counts = token_counts(blocks, VOCAB, SPECIAL.all)
    floor = context_free_floor(counts, counts, SPECIAL.all)["context_free_loss"]
    inputs, labels = mask_tokens(blocks, np.arange(len(blocks)), 0, 1, SPECIAL, VOCAB, 0.5)
    target = labels != IGNORE_INDEX
    y, x = labels[target], inputs[target]
    p = counts / counts.sum()
    ordinary = np.array([i for i in range(VOCAB) if i not in SPECIAL.all])
    q = np.isin(np.arange(VOCAB), ordinary) / len(ordinary)
    keep = 1 - MASK_SHARE - RANDOM_SHARE
    # P(y | x) for a shown real token; p(y) for [MASK].
    with np.errstate(invalid="ignore", divide="ignore"):  # x = [MASK] takes the other branch
        post_real = p[y] * (keep * (y == x) + RANDOM_SHARE * q[x]) / (keep * p[x] + RANDOM_SHARE * q[x])
    posterior = np.where(x == SPECIAL.mask, p[y], post_real)
    assert -np.log(posterior).mean() == pytest.approx(floor, abs=0.01)


def test_tokens_never_seen_in_training_keep_the_floor_finite():
    train = np.r_[np.zeros(5), [10, 10, 10, 0, 5, 5, 5]]
    val = np.r_[np.zeros(5), [1, 1, 1, 1, 1, 1, 1]]
    floor = context_free_floor(train, val, SPECIAL.all)
    assert np.isfinite(floor["context_free_loss"])
    assert floor["val_unseen_fraction"] == pytest.approx(1 / 7)


def test_a_cache_entry_records_its_floor(corpus_dir, cache):
    from symattn.data import DataConfig, load_prepared, prepare_pretraining
    from symattn.data.floor import data_floor

    data = prepare_pretraining(
        DataConfig(source=f"path:{corpus_dir}", vocab_size=200, seq_len=32, val_docs=8)
    )
    expected = data_floor(data.train, data.val, data.vocab_size, data.special_ids.all)
    meta = json.loads((data.path / "meta.json").read_text())
    assert meta["context_free_loss"] == expected["context_free_loss"]
    assert meta["unigram_entropy"] == expected["unigram_entropy"]
    assert data.floor == {
        "context_free_loss": expected["context_free_loss"],
        "unigram_entropy": expected["unigram_entropy"],
    }
    # An entry written before the floor was recorded gets it computed when opened.
    for key in ("context_free_loss", "unigram_entropy"):
        meta.pop(key)
    (data.path / "meta.json").write_text(json.dumps(meta))
    assert load_prepared(data.fingerprint).floor == data.floor
