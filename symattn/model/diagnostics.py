"""Diagnostics of the mechanism, cheap enough for every evaluation.

From attention probabilities: entropy per layer, and the mass a token puts on itself (large when keys
equal queries: the PSD form makes q_i . q_i the largest score). From weights: how symmetric each
head's bilinear form is (vanilla: W_q^T W_k; pairwise: S), and the spectrum of S.
"""

from __future__ import annotations

import torch

from symattn import keys
from symattn.model.attention import SelfAttention


@torch.no_grad()
def attention_stats(probs: list[torch.Tensor], attention_mask: torch.Tensor) -> dict[str, float]:
    """probs: per layer (B, H, T, T); averaged over heads and real (non-padding) query tokens.

    `logit_sd` is the spread of one query's scaled logits over the real keys (their standard
    deviation, which is that of the log-probabilities: softmax only shifts a row), the scale at
    which attention starts: near 0 it is uniform, large it is peaked."""
    real = attention_mask.bool()  # (B, T)
    n = real.sum().clamp(min=1) * probs[0].shape[1]
    keys_real = real[:, None, None, :].float()  # (B, 1, 1, T)
    n_keys = keys_real.sum(-1).clamp(min=1)
    out = {}
    for i, p in enumerate(probs):
        p = p.float()
        log_p = p.clamp_min(1e-30).log()
        entropy = -(p * log_p).sum(-1)  # (B, H, T)
        self_mass = p.diagonal(dim1=-2, dim2=-1)  # (B, H, T)
        mean = (log_p * keys_real).sum(-1, keepdim=True) / n_keys[..., None]
        logit_sd = (((log_p - mean) ** 2 * keys_real).sum(-1) / n_keys).sqrt()  # (B, H, T)
        out[keys.diag(i, "entropy")] = float((entropy * real[:, None]).sum() / n)
        out[keys.diag(i, "self_mass")] = float((self_mass * real[:, None]).sum() / n)
        out[keys.diag(i, "logit_sd")] = float((logit_sd * real[:, None]).sum() / n)
    return out


def symmetry(m: torch.Tensor) -> torch.Tensor:
    """(|sym(M)|^2 - |anti(M)|^2) / |M|^2 per matrix: 1 symmetric, 0 unstructured, -1 antisymmetric."""
    sym = 0.5 * (m + m.transpose(-1, -2))
    anti = 0.5 * (m - m.transpose(-1, -2))
    return (sym.square().sum((-1, -2)) - anti.square().sum((-1, -2))) / m.square().sum((-1, -2)).clamp_min(
        1e-30
    )


@torch.no_grad()
def weight_stats(layers: list[SelfAttention]) -> dict[str, float]:
    out = {}
    for i, att in enumerate(layers):
        h, d = att.heads, att.head_dim
        if att.has_key:
            # Per head, logits = x W_q,h^T W_k,h x^T: the bilinear form W_q,h^T W_k,h (hidden x hidden).
            wq = att.query.weight.float().view(h, d, -1)
            wk = att.key.weight.float().view(h, d, -1)
            out[keys.diag(i, "qk_symmetry")] = float(symmetry(wq.transpose(1, 2) @ wk).mean())
        if att.has_coefficients:
            s = att.coefficient_matrix().float()
            sv = torch.linalg.svdvals(s)  # (H, d), descending
            out[keys.diag(i, "s_symmetry")] = float(symmetry(s).mean())
            out[keys.diag(i, "s_sv_max")] = float(sv[:, 0].mean())
            out[keys.diag(i, "s_sv_min")] = float(sv[:, -1].mean())
            # effective rank: exp of the entropy of the normalised singular values
            q = sv / sv.sum(-1, keepdim=True).clamp_min(1e-30)
            out[keys.diag(i, "s_effective_rank")] = float(
                (-(q * q.clamp_min(1e-30).log()).sum(-1)).exp().mean()
            )
    return out


@torch.no_grad()
def coefficient_spectra(layers: list[SelfAttention]) -> dict[str, list[list[float]]]:
    """Full singular values of S per layer and head, for the diagnostics artifact."""
    return {
        f"layer{i}": torch.linalg.svdvals(att.coefficient_matrix().float()).tolist()
        for i, att in enumerate(layers)
        if att.has_coefficients
    }
