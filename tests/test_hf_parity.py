"""Parity with a real peer: HF `BertForMaskedLM`, randomly initialised from a `BertConfig`."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from symattn.model.bert import BertForMaskedLM, ModelConfig  # noqa: E402


def hf_pair(vocab=700, positions=64):
    hf_cfg = transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=512,
        max_position_embeddings=positions,
        type_vocab_size=2,
    )
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(hf_cfg).eval()
    ours = BertForMaskedLM(ModelConfig(size="tiny", vocab_size=vocab, max_positions=positions)).eval()
    return hf, ours


def test_hf_weights_give_the_same_mlm_logits():
    hf, ours = hf_pair()
    missing, unexpected = ours.load_hf_state_dict(hf.state_dict())
    assert not missing and not unexpected
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 700, (3, 20), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 12:] = 0
    types = torch.zeros_like(ids)
    types[:, 10:] = 1
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got = ours(ids, mask, types).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_our_state_dict_loads_into_hf_with_no_missing_keys():
    hf, ours = hf_pair()
    result = hf.load_state_dict(ours.state_dict(), strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    ids = torch.randint(5, 700, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids).logits, ours(ids).logits, atol=1e-5, rtol=1e-5)
