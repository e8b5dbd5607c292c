"""The data's context-free floor: the lowest MLM loss any model that ignores context can reach.

Early in pre-training every BERT sits on a plateau at this level: it has learnt which tokens are
frequent, and that a token shown at a target position is often the answer, but not yet how to use
the other tokens of the block. Leaving that level is the escape whose timing the suite measures, so
the level comes from the data, exactly, instead of being read off each curve.

Derivation. A target position holds a non-special token y (targets are drawn uniformly over the
non-special positions of the blocks, so y follows the token distribution of the split). BERT's
masking shows the model

    [MASK]                      with probability m = 0.8,
    y itself                    with probability u = 0.1 (left unchanged),
    a random token v ~ q        with probability r = 0.1 (q uniform over the non-special ids;
                                v may be y itself),

so P(x | y) = m [x = MASK] + u [x = y] + r q(x). A model that sees only x predicts, at best, the
posterior under the training split's unigram p:

    x = [MASK]:  P(y | MASK) = p(y)
    x = v:       P(y | v) = p(y) (u [y = v] + r q(v)) / (u p(v) + r q(v)),

which for u = r is the issue's P(y | v) ∝ p(y) (1[y = v] + q(v)): the unchanged and the random
case both show a real token, and the model cannot tell them apart. Its expected loss on the
validation targets y ~ p_val is

    L* = m H(p_val, p) + u E_y[-log P(y | y)] + r E_y E_{v~q}[-log P(y | v)]

where H(p_val, p) = E_y[-log p(y)] is the cross-entropy of the validation tokens under the training
unigram (`unigram_entropy`, the loss of a context-free model at [MASK] positions). The last term
needs no double sum: with A(v) = u p(v) + r q(v),

    E_{v~q}[-log P(y | v)] = -log p(y) - sum_v q(v) log(r q(v)) - q(y) [log(u + r q(y)) - log(r q(y))]
                             + sum_v q(v) log A(v).

A token of the validation split that never occurs in the training split would make L* infinite; the
training counts get a pseudo-count of 1/2 (Krichevsky-Trofimov) on every non-special id, which moves
L* by less than 1e-3 nats on the default corpus, and `val_unseen_fraction` says how many targets it
concerned. Whether a block with no chosen position gets one forced (see `mask_tokens`) does not
change the distribution of y, so the floor does not depend on `mlm_probability` either.
"""

from __future__ import annotations

import numpy as np

# BERT's split of the chosen positions (also used by `masking.mask_tokens`).
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1
KEEP_SHARE = 1.0 - MASK_SHARE - RANDOM_SHARE
PSEUDO_COUNT = 0.5
FLOOR_KEYS = ("context_free_loss", "unigram_entropy")


def token_counts(blocks: np.ndarray, vocab_size: int, special_ids) -> np.ndarray:
    """How often each id occurs as a possible MLM target (a non-special token) in `blocks`."""
    counts = np.bincount(np.asarray(blocks, dtype=np.int64).ravel(), minlength=vocab_size)[:vocab_size]
    return target_counts(counts, special_ids)


def target_counts(counts: np.ndarray, special_ids) -> np.ndarray:
    """Counts of every id (a bincount) as counts of possible MLM targets: special ids get none."""
    counts = np.asarray(counts, dtype=np.float64).copy()
    counts[list(special_ids)] = 0.0
    return counts


def _unigram_and_replacement(train_counts: np.ndarray, special_ids) -> tuple:
    """(p, q, candidate): the training unigram (with the pseudo-count), the distribution of a
    random replacement, and which ids can be targets or replacements."""
    candidate = np.ones(len(train_counts), dtype=bool)
    candidate[list(special_ids)] = False
    seen = train_counts + PSEUDO_COUNT * candidate
    return seen / seen.sum(), candidate / candidate.sum(), candidate


def context_free_floor(
    train_counts: np.ndarray,
    val_counts: np.ndarray,
    special_ids,
    mask_share: float = MASK_SHARE,
    random_share: float = RANDOM_SHARE,
) -> dict:
    """L* (`context_free_loss`) and the unigram cross-entropy (`unigram_entropy`) in nats, for
    targets distributed as `val_counts` and a predictor built from `train_counts` (see the module
    docstring); also the share of validation targets never seen in training."""
    keep_share = 1.0 - mask_share - random_share
    p, q, candidate = _unigram_and_replacement(train_counts, special_ids)
    p_val = val_counts / val_counts.sum()
    on = p_val > 0
    log_p = np.log(p[on])
    cross_entropy = float(-(p_val[on] * log_p).sum())
    # x = y: P(y | y) = p(y) (u + r q(y)) / (u p(y) + r q(y))
    keep = -(
        log_p + np.log(keep_share + random_share * q[on]) - np.log(keep_share * p[on] + random_share * q[on])
    )
    # x = v ~ q
    c = candidate
    q_log_rq = float((q[c] * np.log(random_share * q[c])).sum())
    q_log_a = float((q[c] * np.log(keep_share * p[c] + random_share * q[c])).sum())
    own = q[on] * (np.log(keep_share + random_share * q[on]) - np.log(random_share * q[on]))
    shown_random = -log_p - q_log_rq - own + q_log_a
    loss = (
        mask_share * cross_entropy
        + keep_share * float((p_val[on] * keep).sum())
        + random_share * float((p_val[on] * shown_random).sum())
    )
    return {
        "context_free_loss": loss,
        "unigram_entropy": cross_entropy,
        "val_unseen_fraction": float(p_val[train_counts == 0].sum()),
    }


def evaluated_floor(
    targets: np.ndarray,
    shown: np.ndarray,
    train_counts: np.ndarray,
    special_ids,
    mask_id: int,
    mask_share: float = MASK_SHARE,
    random_share: float = RANDOM_SHARE,
) -> float:
    """The loss of the same context-free predictor on given targets: the mean of -log P(y | x) over
    target ids `targets` shown to the model as `shown` (a run's fixed validation masks). L* is its
    expectation over the masks; on the few thousand targets a run evaluates, this realisation
    differs from L* by up to about 0.1 nats, so a run's own escape is measured from it."""
    keep_share = 1.0 - mask_share - random_share
    p, q, _ = _unigram_and_replacement(train_counts, special_ids)
    y, x = np.asarray(targets, dtype=np.int64), np.asarray(shown, dtype=np.int64)
    real = keep_share * (y == x) + random_share * q[x]
    with np.errstate(divide="ignore", invalid="ignore"):  # [MASK] has q = 0: the other branch
        shown_token = p[y] * real / (keep_share * p[x] + random_share * q[x])
    posterior = np.where(x == mask_id, p[y], shown_token)
    return float(-np.log(posterior).mean())


def data_floor(train: np.ndarray, val: np.ndarray, vocab_size: int, special_ids) -> dict:
    """`context_free_floor` of packed blocks, rounded for a cache entry's meta.json."""
    return floor_from_counts(
        np.bincount(np.asarray(train, dtype=np.int64).ravel(), minlength=vocab_size)[:vocab_size],
        np.bincount(np.asarray(val, dtype=np.int64).ravel(), minlength=vocab_size)[:vocab_size],
        special_ids,
    )


def floor_from_counts(train_counts: np.ndarray, val_counts: np.ndarray, special_ids) -> dict:
    """`context_free_floor` from each split's count of every id (as gathered while packing), rounded
    for a cache entry's meta.json."""
    floor = context_free_floor(
        target_counts(train_counts, special_ids), target_counts(val_counts, special_ids), special_ids
    )
    return {key: round(value, 6) for key, value in floor.items()}
