"""Self-attention variants, chosen by name: the ONLY place where matched runs differ in code.

Every variant maps the hidden states X to a query side, a key side and values, then attends:

    vanilla    Q = X W_q + b_q, K = X W_k + b_k          logits Q_h K_h^T / sqrt(d_h)
    symmetric  K := Q (no key projection)                logits Q_h Q_h^T / sqrt(d_h)
    pairwise   K := Q, learned S_h per head              logits Q_h S_h Q_h^T / sqrt(d_h)
    shared     P = X W + b; Q, K, V = P diag(a_q), P diag(a_k), P diag(a_v)   (Kowsher et al.)

d_h is the query/key width per head: hidden / heads unless `qk_dim` sets it (values keep
hidden / heads).

Pairwise attention is computed as vanilla attention on (Q S, Q, V), so the fast path is plain
`scaled_dot_product_attention` with no custom kernel. The math path materialises the attention
probabilities (for tests and diagnostics) and must agree with the fast path.

Adding a variant = one `Variant` in `symattn.model.variants` and one `SelfAttention` subclass here,
decorated with `@register_attention("name")`. Adding a coefficient scheme or initialisation = its
name in `symattn.model.variants` and one entry in `COEFFICIENT_SCHEMES` or `COEFFICIENT_INITS` here.
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from symattn.model import variants
from symattn.model.config import AttentionConfig

ATTENTIONS: dict[str, type["SelfAttention"]] = {}


def register_attention(name: str):
    """Class decorator: the computation of the variant `name` (declared in `symattn.model.variants`,
    which says whether it has a key projection and coefficients)."""

    def add(cls: type[SelfAttention]) -> type[SelfAttention]:
        cls.variant = variants.VARIANTS[name]
        cls.name, cls.has_key, cls.has_coefficients = name, cls.variant.has_key, cls.variant.has_coefficients
        ATTENTIONS[name] = cls
        return cls

    return add


# --- coefficient schemes: how S_h is parametrised -------------------------------------------------
# Each scheme maps the stored parameter P to the per-head matrix S (heads, d, d), or, for the
# diagonal scheme, applies S to the queries directly (a broadcast multiply, no matmul).


def _full(p: torch.Tensor) -> torch.Tensor:
    return p


def _symmetric(p: torch.Tensor) -> torch.Tensor:
    return 0.5 * (p + p.transpose(-1, -2))


def _times_matrix(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """q (B, H, T, d) times s (H, d, d), head by head: `q @ s`, as ONE batched matmul over heads.

    A broadcast `q @ s` copies q into (B*H, T, d) and runs B*H tiny products; here the heads are
    the batch, and when q is a slice of the fused projection output (rows of stride 3*hidden) the
    batched matmul reads it in place."""
    b, h, t, d = q.shape
    out = torch.bmm(q.transpose(0, 1).reshape(h, b * t, d), s)
    return out.view(h, b, t, d).transpose(0, 1)


class CoefficientScheme:
    def __init__(self, shape: Callable[[int, int], tuple[int, ...]], matrix, apply) -> None:
        self.shape = shape  # (heads, d_h) -> parameter shape
        self.matrix = matrix  # parameter -> S as (heads, d_h, d_h)
        self.apply = apply  # (q (B, H, T, d), parameter) -> q S


COEFFICIENT_SCHEMES: dict[str, CoefficientScheme] = {
    # One unconstrained d_h x d_h matrix per head: the paper's release.
    "full": CoefficientScheme(lambda h, d: (h, d, d), _full, _times_matrix),
    # One vector per head: S = diag(s); logits stay symmetric.
    "diagonal": CoefficientScheme(
        lambda h, d: (h, d), torch.diag_embed, lambda q, p: q * p[None, :, None, :]
    ),
    # S = (A + A^T) / 2: a symmetric, not necessarily PSD, bilinear form; logits stay symmetric.
    "symmetric": CoefficientScheme(
        lambda h, d: (h, d, d), _symmetric, lambda q, p: _times_matrix(q, _symmetric(p))
    ),
}


def _init_normal(p: torch.Tensor, generator: Optional[torch.Generator]) -> None:
    p.normal_(0.0, 1.0, generator=generator)  # the release: torch.randn, not rescaled


def _init_scaled(p: torch.Tensor, generator: Optional[torch.Generator]) -> None:
    p.normal_(0.0, 1.0 / math.sqrt(p.shape[-1]), generator=generator)  # N(0, 1/d_h)


def _init_identity(p: torch.Tensor, generator: Optional[torch.Generator]) -> None:
    # S = I: starts as plain symmetric attention.
    with torch.no_grad():
        p.zero_()
        if p.dim() == 2:  # diagonal scheme stores the diagonal only
            p.fill_(1.0)
        else:
            p.copy_(torch.eye(p.shape[-1], dtype=p.dtype).expand_as(p))


COEFFICIENT_INITS: dict[str, Callable[[torch.Tensor, Optional[torch.Generator]], None]] = {
    "normal": _init_normal,
    "scaled": _init_scaled,
    "identity": _init_identity,
}


# --- dropout -------------------------------------------------------------------------------------
# Every dropout of the model (embeddings, residual branches, attention probabilities) goes through
# `dropout`, on the fast path and the math path alike, so both draw the same masks.
#
# On the CPU, `F.dropout` draws one double-precision Bernoulli sample per element from the Mersenne
# Twister (MKL's vectorised generator is used on Intel CPUs only), a noticeable share of a CPU step
# (measured: benchmarks/README.md). Here each element takes 32 random bits (two per 64-bit draw of the
# same seeded generator) and is dropped when they fall below p * 2^32: the same distribution (the
# drop probability is p rounded to a multiple of 2^-32), several times faster. Accelerators keep
# their fused `F.dropout`.


def _drop_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Boolean mask, True with probability p (to a multiple of 2^-32), from the default generator."""
    n = math.prod(shape)
    words = torch.empty((n + 1) // 2, dtype=torch.int64, device=device).random_(-(2**63), None)
    threshold = -(2**31) + round(p * 2**32)
    return (words.view(torch.int32)[:n] < threshold).view(shape)


class _CPUDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        drop = _drop_mask(x.shape, p, x.device)
        # 0 or 1/(1-p) in x's dtype: forward and backward are then one vectorised multiply each
        mask = torch.where(drop, x.new_zeros(()), x.new_full((), 1.0 / (1.0 - p)))
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def has_fused_dropout(x: torch.Tensor) -> bool:
    """Whether `F.dropout` and SDPA's dropout run as fused kernels on x's device (accelerators);
    on the CPU they do not, and the routes in this module take over. Tests switch this to run the
    accelerator routes on the CPU."""
    return x.device.type != "cpu"


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout, as `F.dropout`; on the CPU with the fast mask above."""
    if not training or p == 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    if has_fused_dropout(x):
        return F.dropout(x, p, True)
    return _CPUDropout.apply(x, p)


class Dropout(nn.Module):
    """`nn.Dropout` through `dropout`: same interface, no parameters (state dicts are unaffected)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, not {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# --- attention computation ------------------------------------------------------------------------


def padding_mask(attention_mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """(B, T) with 1 for real tokens -> boolean (B, 1, 1, T) with True where keys may be attended.

    None when there is nothing to mask (no mask, or, on the CPU, a mask of all ones as packed
    pre-training blocks have): the same result, without masking work. The all-ones check is skipped
    on accelerators (it would wait for the device) and under torch.compile."""
    if attention_mask is None:
        return None
    if (
        attention_mask.device.type == "cpu"
        and not torch.compiler.is_compiling()
        and bool(attention_mask.all())
    ):
        return None
    return attention_mask.bool()[:, None, None, :]


def attend_math(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Optional[torch.Tensor],
    dropout_p: float = 0.0,
    training: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain attention; returns (context, probabilities). Same maths as the fast path."""
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    probs = logits.softmax(dim=-1)
    return dropout(probs, dropout_p, training) @ v, probs


def _attend_dropout_cpu(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor], dropout_p: float
) -> torch.Tensor:
    """Attention with dropout on the CPU, where SDPA has no fused kernel for dropout and falls back
    to a math version with extra passes (q and k scaled apart, a NaN-safe softmax, mask checks).

    Scaled logits (+ additive mask) in one batched matmul, softmax, dropout, and the product with
    the values. Dropout draws its mask exactly as `attend_math` does (same shape, same
    generator), so in training both paths give the same result up to float rounding."""
    b, h, t, d = q.shape
    q3, k3 = (x.reshape(b * h, t, d) for x in (q, k))
    v3 = v.reshape(b * h, t, v.shape[-1])
    if mask is None:
        logits = torch.bmm(q3, k3.transpose(1, 2)).mul_(1.0 / math.sqrt(d))
    else:
        # finite minimum, not -inf: exp() gives exactly 0 for masked keys, and no NaN on a fully
        # padded row (softmax of equal values: uniform, as SDPA and HF BERT give)
        bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(
            ~mask, torch.finfo(q.dtype).min
        )
        bias = bias.expand(b, h, 1, t).reshape(b * h, 1, t)
        logits = torch.baddbmm(bias, q3, k3.transpose(1, 2), alpha=1.0 / math.sqrt(d))
    probs = dropout(logits.softmax(dim=-1), dropout_p, True)
    return torch.bmm(probs, v3).view(b, h, t, v.shape[-1])


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Optional[torch.Tensor],
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """The fast path: context (B, H, T, d) without materialising probabilities for the caller."""
    if dropout_p > 0.0 and not has_fused_dropout(q):
        return _attend_dropout_cpu(q, k, v, mask, dropout_p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


class SelfAttention(nn.Module):
    """Base class: the HF BERT `attention.self` block (query/key/value projections, multi-head).

    Subclasses implement `query_key_value(x)` returning the query side, key side and values, each
    (B, H, T, d_h); the base class does the rest, on the fast or the math path.

    The projections keep HF's names and shapes (`query`, `key`, `value`: separate nn.Linear), but
    run as ONE matmul: `project(x)` concatenates their weights at call time (a few hundred KB, no
    stored copy), so the input is read once and the product is one large GEMM instead of two or
    three small ones; gradients flow back to each Linear's own parameters.
    """

    variant: ClassVar[variants.Variant]  # set by `register_attention`, with the three below
    name: ClassVar[str] = ""
    has_coefficients: ClassVar[bool] = False
    has_key: ClassVar[bool] = True

    def __init__(self, hidden: int, heads: int, dropout: float, config: AttentionConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, config.qk_dim or hidden // heads  # the query/key width
        self.dropout_p = dropout
        self.query = nn.Linear(hidden, heads * self.head_dim)
        if self.has_key:
            self.key = nn.Linear(hidden, heads * self.head_dim)
        if self.variant.has_value:
            self.value = nn.Linear(hidden, hidden)
        # Named once here: `project` runs in every forward.
        self.projection_names = tuple(n for n in ("query", "key", "value") if n in self._modules)

    def projections(self) -> list[nn.Linear]:
        """The projection layers, in the order `project` returns them."""
        return [getattr(self, name) for name in self.projection_names]

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each projection of x (B, T, hidden), as (B, T, width) views into one fused product."""
        layers = self.projections()
        if len(layers) == 1:
            return (layers[0](x),)
        weight = torch.cat([layer.weight for layer in layers])
        bias = torch.cat([layer.bias for layer in layers])
        return F.linear(x, weight, bias).split([layer.out_features for layer in layers], dim=-1)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, H * w) -> (B, H, T, w): a view, no copy (also of a slice of the fused output)."""
        b, t, width = x.shape
        return x.view(b, t, self.heads, width // self.heads).transpose(1, 2)

    def query_key_value(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(
        self,
        x: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        math_path: bool = False,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """x (B, T, hidden), mask from `padding_mask`. Returns (context (B, T, hidden), probs or None)."""
        q, k, v = self.query_key_value(x)
        dropout_p = self.dropout_p if self.training else 0.0
        if math_path:
            ctx, probs = attend_math(q, k, v, mask, dropout_p, self.training)
        else:
            ctx, probs = attend(q, k, v, mask, dropout_p), None
        b, _, t, _ = ctx.shape
        return ctx.transpose(1, 2).reshape(b, t, -1), probs


@register_attention("vanilla")
class VanillaAttention(SelfAttention):
    def query_key_value(self, x):
        return tuple(self.split_heads(y) for y in self.project(x))


@register_attention("symmetric")
class SymmetricAttention(SelfAttention):
    """K := Q: one biased projection serves as queries and keys, so logits are a PSD form."""

    def query_key_value(self, x):
        q, v = (self.split_heads(y) for y in self.project(x))
        return q, q, v


@register_attention("pairwise")
class PairwiseAttention(SelfAttention):
    """K := Q with a learned bilinear form S_h per head: logits Q_h S_h Q_h^T / sqrt(d_h)."""

    def __init__(self, hidden: int, heads: int, dropout: float, config: AttentionConfig) -> None:
        super().__init__(hidden, heads, dropout, config)
        self.scheme = COEFFICIENT_SCHEMES[config.resolved_scheme]
        self.init_name = config.resolved_init
        self.pairwise_factors = nn.Parameter(torch.empty(self.scheme.shape(heads, self.head_dim)))
        self.reset_coefficients()

    def reset_coefficients(self, generator: Optional[torch.Generator] = None) -> None:
        if self.pairwise_factors.is_meta:
            return
        with torch.no_grad():
            COEFFICIENT_INITS[self.init_name](self.pairwise_factors, generator)

    def coefficient_matrix(self) -> torch.Tensor:
        """S as (heads, d_h, d_h), whatever the scheme: for diagnostics."""
        return self.scheme.matrix(self.pairwise_factors)

    def query_key_value(self, x):
        q, v = (self.split_heads(y) for y in self.project(x))
        return self.scheme.apply(q, self.pairwise_factors), q, v


@register_attention("shared")
class SharedProjectionAttention(SelfAttention):
    """One projection P = X W + b (HF name `query`) serves all three roles, each scaled by its own
    learned per-channel vector (`role_scales`: rows a_q, a_k, a_v, initialised to ones): Q = P a_q,
    K = P a_k, V = P a_v. Logits P_h diag(a_q a_k) P_h^T are symmetric (Kowsher et al.)."""

    def __init__(self, hidden: int, heads: int, dropout: float, config: AttentionConfig) -> None:
        super().__init__(hidden, heads, dropout, config)
        self.role_scales = nn.Parameter(torch.ones(3, hidden))

    def reset_role_scales(self, qk_gain: Optional[float] = None) -> None:
        """Ones; `qk_gain` goes on a_q and a_k only. The projection also makes the values, so a gain on
        its weights would scale V too: here the initial logits scale by qk_gain^2, as for any variant,
        and V and P start as without it."""
        with torch.no_grad():
            self.role_scales.fill_(1.0)
            if qk_gain:
                self.role_scales[:2].mul_(qk_gain)

    def query_key_value(self, x):
        (p,) = self.project(x)
        scaled = p.unsqueeze(-2) * self.role_scales  # (B, T, 3, hidden): one broadcast multiply
        return tuple(self.split_heads(scaled[..., i, :]) for i in range(3))


if set(ATTENTIONS) != set(variants.VARIANTS) or (tuple(COEFFICIENT_SCHEMES), tuple(COEFFICIENT_INITS)) != (
    variants.COEFFICIENT_SCHEMES,
    variants.COEFFICIENT_INITS,
):
    raise ImportError(
        "symattn.model.attention and symattn.model.variants name different variants or coefficient options"
    )


def build_attention(config: AttentionConfig, hidden: int, heads: int, dropout: float) -> SelfAttention:
    return ATTENTIONS[config.variant](hidden, heads, dropout, config)
