"""The token conventions that the data, the model and the losses share (no torch, no tokenizers).

BERT's special tokens, in id order: a vocabulary the suite trains begins with them, so there
[PAD] = 0 (the model's padding id), [UNK] = 1, [CLS] = 2, [SEP] = 3, [MASK] = 4. A vocabulary that
places them elsewhere (bert-base-uncased's vocab.txt) is read by name, through
`symattn.data.tokenizer.SpecialIds`, which insists on [PAD] = 0 only.
"""

from __future__ import annotations

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, UNK, CLS, SEP, MASK = SPECIAL_TOKENS
NUM_SPECIAL_TOKENS = len(SPECIAL_TOKENS)
PAD_TOKEN_ID = SPECIAL_TOKENS.index(PAD)  # in every vocabulary: the model pads with it
MASK_TOKEN_ID = SPECIAL_TOKENS.index(MASK)  # in a vocabulary the suite trains, and in synthetic batches

IGNORE_INDEX = -100  # the label of positions a loss skips (PyTorch's and HF's default)
