"""Speed settings: they take effect in every thread, and never change results beyond float noise."""

import platform

import pytest
import torch

from symattn.run.speed import (
    apply_speed_settings,
    denormals_flushed,
    matmul_peak,
    peak_step_memory,
    set_flush_denormal,
    spread,
)


def test_flush_denormal_reaches_every_thread(restore_speed_settings):
    """torch.set_flush_denormal alone sets the flag in the calling thread only; ours in all of them."""
    torch.set_num_threads(2)
    (torch.ones(1 << 18) * 2).sum()  # the OpenMP pool exists before the flag is set
    assert set_flush_denormal(True)
    assert denormals_flushed()
    x = torch.full((1 << 18,), 1e-39)
    assert ((x * 0.5) == 0).all()
    assert set_flush_denormal(False)
    assert not denormals_flushed()


def test_flushing_denormals_does_not_change_normal_results(restore_speed_settings):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 64, generator=g), torch.randn(64, 64, generator=g)
    expected = (a @ b).softmax(-1)
    set_flush_denormal(True)
    assert torch.equal((a @ b).softmax(-1), expected)


def test_apply_speed_settings_reports_what_is_in_force(restore_speed_settings):
    state = apply_speed_settings(threads=1)
    assert state["threads"] == 1 == torch.get_num_threads()
    assert state["flush_denormal"] is True
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert state["retain_memory"] is True
    state = apply_speed_settings(flush_denormal=False, retain_memory=False)
    assert state["flush_denormal"] is False and state["retain_memory"] is False
    assert not denormals_flushed()
    with pytest.raises(ValueError, match="threads must be at least 1"):
        apply_speed_settings(threads=0)


def test_model_output_is_unchanged_by_the_speed_settings(restore_speed_settings):
    from symattn.model.attention import AttentionConfig
    from symattn.model.bert import BertForMaskedLM, ModelConfig

    m = BertForMaskedLM(
        ModelConfig(
            size="tiny", vocab_size=300, max_positions=16, attention=AttentionConfig(variant="pairwise")
        )
    ).eval()
    ids = torch.randint(5, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = m(ids).logits
        apply_speed_settings(threads=1)
        after = m(ids).logits
    torch.testing.assert_close(after, before, atol=1e-6, rtol=1e-6)


def test_matmul_peak_and_spread():
    assert matmul_peak(torch.float32, n=128, seconds=0.01) > 1e6
    med, half_range = spread([1.0, 2.0, 3.0, 4.0, 100.0])
    assert med == 3.0 and half_range > 0
    assert spread([2.0]) == (2.0, 0.0)


def test_peak_step_memory_sees_the_allocations_of_a_step():
    keep = []

    def step():
        big = torch.ones(1 << 20)  # 4 MiB, freed at the end
        keep.append(big.sum())

    assert peak_step_memory(step) >= 4 << 20
