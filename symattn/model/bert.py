"""The BERT model: size presets, encoder, MLM and classification heads, parameter counts, FLOPs.

Module and parameter names follow Hugging Face `BertForMaskedLM` / `BertForSequenceClassification`,
so state dicts load both ways with HF BERT checkpoints. Symmetric and pairwise attention have no
`key` projection; pairwise adds `bert.encoder.layer.N.attention.self.pairwise_factors`, as in the
paper's release.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from symattn.model.attention import Dropout, build_attention, padding_mask
from symattn.model.config import NUM_SPECIAL_TOKENS, SIZES, AttentionConfig, ModelConfig  # noqa: F401  re-exported
from symattn.tokens import IGNORE_INDEX  # label of positions the MLM loss skips

# --- modules, named as in HF BERT ----------------------------------------------------------------


class BertEmbeddings(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.n_hidden, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_positions, c.n_hidden)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.n_hidden)
        self.LayerNorm = nn.LayerNorm(c.n_hidden, eps=c.layer_norm_eps)
        self.dropout = Dropout(c.dropout)
        self.register_buffer("position_ids", torch.arange(c.max_positions)[None], persistent=False)

    def forward(self, input_ids: torch.Tensor, token_type_ids: Optional[torch.Tensor]) -> torch.Tensor:
        t = input_ids.shape[1]
        x = self.word_embeddings(input_ids) + self.position_embeddings(self.position_ids[:, :t])
        if token_type_ids is None:  # all segment 0: add the row without materialising ids
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertResidualOutput(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual): HF's `attention.output` and `output` blocks."""

    def __init__(self, d_in: int, c: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, c.n_hidden)
        self.LayerNorm = nn.LayerNorm(c.n_hidden, eps=c.layer_norm_eps)
        self.dropout = Dropout(c.dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.self = build_attention(c.attention, c.n_hidden, c.n_heads, c.attention_dropout)
        self.output = BertResidualOutput(c.n_hidden, c)

    def forward(self, x, mask, math_path):
        ctx, probs = self.self(x, mask, math_path)
        return self.output(ctx, x), probs


class BertIntermediate(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.n_hidden, c.n_intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    """Post-LayerNorm transformer layer."""

    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertResidualOutput(c.n_intermediate, c)

    def forward(self, x, mask, math_path=False):
        x, probs = self.attention(x, mask, math_path)
        return self.output(self.intermediate(x), x), probs


class BertEncoder(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(c) for _ in range(c.n_layers))


class BertPooler(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.n_hidden, c.n_hidden)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(h[:, 0]))


@dataclass
class EncoderOutput:
    hidden: torch.Tensor  # (B, T, hidden)
    attentions: Optional[list[torch.Tensor]] = None  # per layer (B, H, T, T), when asked for


class BertModel(nn.Module):
    def __init__(self, c: ModelConfig, add_pooling_layer: bool = False) -> None:
        super().__init__()
        self.config = c
        self.embeddings = BertEmbeddings(c)
        self.encoder = BertEncoder(c)
        self.pooler = BertPooler(c) if add_pooling_layer else None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        output_attentions: bool = False,
    ) -> EncoderOutput:
        if input_ids.shape[1] > self.config.max_positions:
            raise ValueError(
                f"sequence length {input_ids.shape[1]} exceeds max_positions "
                f"{self.config.max_positions}; shorten seq_len or raise model.max_positions"
            )
        x = self.embeddings(input_ids, token_type_ids)
        mask = padding_mask(attention_mask)
        attentions = [] if output_attentions else None
        for layer in self.encoder.layer:
            # Probabilities are only materialised on the math path.
            x, probs = layer(x, mask, math_path=output_attentions)
            if output_attentions:
                attentions.append(probs)
        return EncoderOutput(x, attentions)


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.n_hidden, c.n_hidden)
        self.LayerNorm = nn.LayerNorm(c.n_hidden, eps=c.layer_norm_eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(h)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, c: ModelConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(c)
        self.decoder = nn.Linear(c.n_hidden, c.vocab_size)
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))
        # Tied as in HF: decoder weight = word embeddings, decoder bias = cls.predictions.bias.
        self.decoder.weight = word_embeddings.weight
        self.decoder.bias = self.bias

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(h))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, c: ModelConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(c, word_embeddings)


@dataclass
class ModelOutput:
    loss: Optional[torch.Tensor]
    logits: torch.Tensor  # MLM: (B, T, V) without labels, (n_masked, V) with labels
    attentions: Optional[list[torch.Tensor]] = None


class BertPreTrainedModel(nn.Module):
    """Shared by both heads: seeded initialisation and HF state-dict exchange."""

    config: ModelConfig

    def init_weights(self, seed: int = 0) -> None:
        """Initialise every tensor from a generator seeded by (seed, parameter name).

        Variants of a matched group share parameter names for the tensors they share, so those get
        identical initial values whatever extra parameters a variant has.
        """
        std, seen = self.config.init_std, set()
        for mod_name, module in self.named_modules():
            for p_name, p in module.named_parameters(recurse=False):
                if id(p) in seen:  # tied decoder weight/bias: initialised once, as the embedding
                    continue
                seen.add(id(p))
                if p.is_meta:  # shape-only models (parameter counting) hold no values
                    continue
                gen = _generator(seed, f"{mod_name}.{p_name}")
                with torch.no_grad():
                    if p_name == "pairwise_factors":  # a variant with coefficients: its own init
                        module.reset_coefficients(gen)
                    elif isinstance(module, nn.LayerNorm):
                        p.fill_(1.0 if p_name == "weight" else 0.0)
                    elif p_name == "bias":
                        p.zero_()
                    elif p_name == "role_scales":  # the shared projection's role scalings (and gain)
                        module.reset_role_scales(self.config.attention.qk_gain)
                    else:  # Linear and Embedding weights: N(0, 0.02), as BERT
                        p.normal_(0.0, std * _gain(self.config, mod_name), generator=gen)
                        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                            p[module.padding_idx].zero_()

    def load_hf_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True):
        """Load an HF BERT state dict (or one of ours); `position_ids` buffers are ignored."""
        sd = {k: v for k, v in state_dict.items() if not k.endswith("embeddings.position_ids")}
        return self.load_state_dict(sd, strict=strict)


def _gain(c: ModelConfig, module_name: str) -> float:
    """`model.attention.qk_gain` for the query and key projections, else 1. A variant without a value
    projection of its own (`shared`) makes V from the same weights: its gain goes on the query and
    key role scalings instead (`reset_role_scales`)."""
    gain = c.attention.qk_gain
    if not gain or not c.attention.spec.has_value:
        return 1.0
    return gain if module_name.endswith(("attention.self.query", "attention.self.key")) else 1.0


def _generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


class BertForMaskedLM(BertPreTrainedModel):
    def __init__(self, config: ModelConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config, self.bert.embeddings.word_embeddings)
        self.init_weights(seed)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        output_attentions: bool = False,
    ) -> ModelOutput:
        enc = self.bert(input_ids, attention_mask, token_type_ids, output_attentions)
        if labels is None:
            return ModelOutput(None, self.cls.predictions(enc.hidden), enc.attentions)
        # Score only the masked positions: the decoder is the largest matmul of a small model.
        selected = labels != IGNORE_INDEX
        logits = self.cls.predictions(enc.hidden[selected])
        loss = F.cross_entropy(logits.float(), labels[selected]) if logits.shape[0] else logits.sum() * 0.0
        return ModelOutput(loss, logits, enc.attentions)


class BertForSequenceClassification(BertPreTrainedModel):
    """Pooler + classifier; `num_labels == 1` is regression (MSE), as in HF."""

    def __init__(self, config: ModelConfig, num_labels: int, seed: int = 0) -> None:
        super().__init__()
        self.config, self.num_labels = config, num_labels
        self.bert = BertModel(config, add_pooling_layer=True)
        self.dropout = Dropout(config.dropout)
        self.classifier = nn.Linear(config.n_hidden, num_labels)
        self.init_weights(seed)

    def load_encoder(self, mlm_state_dict: dict[str, torch.Tensor]) -> None:
        """Take the encoder of a pre-trained MLM checkpoint; pooler and classifier stay fresh."""
        enc = {k: v for k, v in mlm_state_dict.items() if k.startswith("bert.") and ".pooler." not in k}
        missing, unexpected = self.load_hf_state_dict(enc, strict=False)
        missing = [k for k in missing if not k.startswith(("bert.pooler.", "classifier."))]
        if missing or unexpected:
            raise ValueError(
                f"checkpoint does not match this model (missing {missing[:3]}, unexpected "
                f"{unexpected[:3]}); check model.size and model.attention"
            )

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> ModelOutput:
        enc = self.bert(input_ids, attention_mask, token_type_ids)
        logits = self.classifier(self.dropout(self.bert.pooler(enc.hidden)))
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels)
        return ModelOutput(loss, logits)


# --- counting ------------------------------------------------------------------------------------


def count_parameters(model: nn.Module) -> dict[str, int]:
    """total: unique trainable tensors (tied decoder counted once); non_embedding: minus the word,
    position and token-type embeddings; attention: the `attention.self` blocks (projections and
    coefficients), where the variants differ."""
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(
        p.numel()
        for n, p in model.named_parameters()
        if n.endswith(
            ("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight")
        )
    )
    attention = sum(p.numel() for n, p in model.named_parameters() if ".attention.self." in n)
    return {"total": total, "non_embedding": total - embedding, "attention": attention}


def flops_per_token(c: ModelConfig, seq_len: int, mlm_fraction: float = 0.15, training: bool = True) -> float:
    """Matmul FLOPs per input token (2 per multiply-add; training = forward + 2x for backward).

    The MLM head runs on the masked fraction only, as the model computes it.
    """
    h, heads = c.n_hidden, c.n_heads
    d = c.attention.qk_dim or h // heads  # query/key width per head
    spec = c.attention.spec
    projected = heads * d * (1 + spec.has_key) + h * spec.has_value  # output widths of the projections
    coef = {"none": 0, "diagonal": heads * d}.get(c.attention.resolved_scheme, 2 * heads * d * d)
    per_layer = (
        2 * h * projected  # q, (k), (v) projections
        + coef  # q S
        + 2 * seq_len * (heads * d + h)  # Q K^T and probabilities x V
        + 2 * h * h  # attention output
        + 2 * 2 * h * c.n_intermediate  # FFN
    )
    head = mlm_fraction * (2 * h * h + 2 * h * c.vocab_size)
    forward = c.n_layers * per_layer + head
    return float(3 * forward if training else forward)
