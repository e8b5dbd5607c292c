"""What a model is, without torch: the size presets, the attention block and the model's config.
`symattn.model.bert` builds the modules from these; configs and specs validate without importing it."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from symattn.model.variants import COEFFICIENT_INITS, COEFFICIENT_SCHEMES, Variant, variant, variant_label
from symattn.tokens import NUM_SPECIAL_TOKENS, PAD_TOKEN_ID, SPECIAL_TOKENS

# layers / hidden / heads; the FFN is 4x hidden unless set.
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),  # the paper's small
    "medium": (8, 512, 8),
    "base": (12, 768, 12),  # the paper's base
}


# Earlier names of attention settings, still read (configs, MLflow params and sweep axes): earlier -> now.
EARLIER_NAMES = {"kind": "variant"}


def same_setting(earlier: str, name: str) -> str:
    """The refusal of a setting given under both its names."""
    return f"{earlier} and {name} are the same setting ({earlier} is the earlier name of {name}); keep {name}"


class AttentionConfig(BaseModel):
    """Which attention every layer uses. `scheme` and `init` apply to variants with coefficients."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    variant: str = "vanilla"  # a name in the registry, symattn.model.variants.VARIANTS
    scheme: Optional[str] = None
    init: Optional[str] = None
    # Controls. The query (and key) width per head, default hidden / heads: vanilla at half the
    # width has symmetric's parameter count exactly (`symattn params --match`). Logits are scaled
    # by 1/sqrt(qk_dim); values keep hidden / heads.
    qk_dim: Optional[int] = Field(None, gt=0)
    # A fixed gain on the initial query and key weights (std init_std * qk_gain, not learned): the
    # initial logits scale by qk_gain^2, so a variant can start at another variant's logit scale.
    # `shared` makes V from the same projection: its gain starts the Q and K role scalings instead.
    qk_gain: Optional[float] = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _earlier_name(cls, data: Any) -> Any:
        # Configs and MLflow params recorded before the field was named `variant` call it `kind`.
        if not isinstance(data, dict):
            return data
        for earlier, name in EARLIER_NAMES.items():
            if earlier in data and name in data:
                raise ValueError(same_setting(earlier, name))
            if earlier in data:
                data = {(name if k == earlier else k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _check(self) -> "AttentionConfig":
        if self.qk_dim is not None and not self.spec.has_value:
            raise ValueError(
                f"attention {self.variant!r} derives queries, keys and values from one projection, "
                "so model.attention.qk_dim does not apply; remove it"
            )
        if not self.spec.has_coefficients:
            for field in ("scheme", "init"):
                if getattr(self, field) not in (None, "none"):
                    raise ValueError(
                        f"attention {self.variant!r} has no coefficients, so {field}="
                        f"{getattr(self, field)!r} does not apply; remove it or use pairwise"
                    )
            return self
        if self.scheme is not None and self.scheme not in COEFFICIENT_SCHEMES:
            raise ValueError(
                f"unknown coefficient scheme {self.scheme!r}; choose one of {', '.join(COEFFICIENT_SCHEMES)}"
            )
        if self.init is not None and self.init not in COEFFICIENT_INITS:
            raise ValueError(
                f"unknown coefficient init {self.init!r}; choose one of {', '.join(COEFFICIENT_INITS)}"
            )
        return self

    @property
    def spec(self) -> Variant:
        """The variant's registry entry: what it has (a key projection, coefficients)."""
        return variant(self.variant)

    @property
    def resolved_scheme(self) -> str:
        """The coefficient scheme in force ('none' for variants without coefficients)."""
        return (self.scheme or COEFFICIENT_SCHEMES[0]) if self.spec.has_coefficients else "none"

    @property
    def resolved_init(self) -> str:
        return (self.init or COEFFICIENT_INITS[0]) if self.spec.has_coefficients else "none"

    @property
    def label(self) -> str:
        """Short name for tables and plots (`symattn.model.variants.variant_label`)."""
        return variant_label(
            self.variant, self.resolved_scheme, self.resolved_init, self.qk_dim, self.qk_gain
        )

    def identity(self) -> dict:
        """The block as a run's hash covers it: the variant under its earlier name `kind`, and the
        controls only where set, so runs recorded before they existed keep their hashes."""
        d = self.model_dump(mode="json")
        d = {"kind": d.pop("variant"), **d}
        for control in ("qk_dim", "qk_gain"):
            if d[control] is None:
                d.pop(control)
        return d


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    size: str = "tiny"
    attention: AttentionConfig = Field(default_factory=AttentionConfig)
    vocab_size: int = Field(30522, gt=0)
    max_positions: int = Field(512, gt=0)
    type_vocab_size: int = Field(2, gt=0)
    # Explicit overrides of the size preset (e.g. a parameter-matched control).
    layers: Optional[int] = Field(None, gt=0)
    hidden: Optional[int] = Field(None, gt=0)
    heads: Optional[int] = Field(None, gt=0)
    intermediate: Optional[int] = Field(None, gt=0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    attention_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    layer_norm_eps: float = Field(1e-12, gt=0.0)
    init_std: float = Field(0.02, gt=0.0)
    pad_token_id: int = Field(PAD_TOKEN_ID, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if self.size not in SIZES:
            raise ValueError(f"unknown model size {self.size!r}; choose one of {', '.join(SIZES)}")
        if self.n_hidden % self.n_heads:
            raise ValueError(
                f"{self.n_heads} heads do not divide hidden size {self.n_hidden}; "
                "pick a head count that divides it"
            )
        if self.vocab_size < NUM_SPECIAL_TOKENS:
            raise ValueError(
                f"vocab_size {self.vocab_size} is smaller than the {NUM_SPECIAL_TOKENS} special tokens "
                f"({' '.join(SPECIAL_TOKENS)}); use the tokenizer's vocabulary size"
            )
        if self.pad_token_id >= self.vocab_size:
            raise ValueError(
                f"pad_token_id {self.pad_token_id} is outside the vocabulary ({self.vocab_size})"
            )
        return self

    @property
    def n_layers(self) -> int:
        return self.layers or SIZES[self.size][0]

    @property
    def n_hidden(self) -> int:
        return self.hidden or SIZES[self.size][1]

    @property
    def n_heads(self) -> int:
        return self.heads or SIZES[self.size][2]

    @property
    def n_intermediate(self) -> int:
        return self.intermediate or 4 * self.n_hidden
