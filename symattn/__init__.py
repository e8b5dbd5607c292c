"""symattn: controlled ablations of symmetric dot-product attention in BERT-style language models."""

__version__ = "0.1.0"
