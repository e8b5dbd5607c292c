"""The model: the attention variants (`variants`, the registry; `attention`, their computation,
the only code in which matched runs differ), the size presets and model configs (`config`), the
post-LayerNorm BERT with HF parameter names (`bert`), attention diagnostics and parameter counts."""
