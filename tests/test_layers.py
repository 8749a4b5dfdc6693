"""Shapes and behaviours of the model's layers: front end, heads, generator, discriminators (tiny widths)."""
from __future__ import annotations

import math

import pytest
import torch

from naturall2s.discriminators import MultiPeriodDiscriminator, MultiResolutionDiscriminator
from naturall2s.encoders import CTCHead, VisualFrontEnd
from naturall2s.generator import Generator, ISTFTGenerator
from naturall2s.heads import ControlHead, F0Head, FrameUpsampler, MelHead

B, T, HOP = 2, 8, 160
F = 4 * T


def tiny_frontend(**kw) -> VisualFrontEnd:
    return VisualFrontEnd(dim=32, n_layers=1, n_heads=2, dropout=0.0, **kw)


@pytest.mark.parametrize("hw", [(32, 48), (48, 72)])
def test_frontend_shapes_and_resize(hw):
    torch.manual_seed(0)
    enc = tiny_frontend()
    out = enc(torch.rand(B, T, *hw), torch.randn(B, T, 40), torch.ones(B, T, dtype=torch.bool))
    assert out.shape == (B, T, 32)
    assert torch.isfinite(out).all()
    log_probs = CTCHead(dim=32, vocab_size=52)(out)
    assert log_probs.shape == (B, T, 52)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(B, T), atol=1e-5)


def test_frontend_padding_does_not_change_valid_outputs():
    """In eval mode a clip's features must not depend on the padding it got in a batch."""
    torch.manual_seed(0)
    enc = tiny_frontend().eval()
    roi, lips = torch.rand(1, T, 32, 48), torch.randn(1, T, 40)
    alone = enc(roi, lips, torch.ones(1, T, dtype=torch.bool))
    pad = 5
    roi_p = torch.cat([roi, torch.rand(1, pad, 32, 48)], 1)  # garbage in the padded frames
    lips_p = torch.cat([lips, torch.randn(1, pad, 40)], 1)
    mask = torch.arange(T + pad)[None] < T
    padded = enc(roi_p, lips_p, mask)
    assert torch.allclose(alone, padded[:, :T], atol=1e-5)


def test_frontend_gradients_reach_the_stem():
    enc = tiny_frontend()
    mask = torch.tensor([[True] * T, [True] * (T - 3) + [False] * 3])
    enc(torch.rand(B, T, 32, 48), torch.randn(B, T, 40), mask).sum().backward()
    g = enc.stem[0].weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_frame_upsampler_and_heads_shapes():
    x = torch.randn(B, T, 32)
    h = FrameUpsampler(dim=32, factor=4)(x)
    assert h.shape == (B, F, 32)

    out = F0Head(in_dim=32, hidden=16)(h)
    assert set(out) == {"log_f0", "voicing_logit", "loudness"}
    assert all(v.shape == (B, F) for v in out.values())
    assert out["log_f0"].min() >= math.log(60.0) - 1e-5 and out["log_f0"].max() <= math.log(400.0) + 1e-5

    ctl = ControlHead(in_dim=32, hidden=16, n_harmonics=12, n_noise_bands=33)(h)
    assert ctl["amplitude"].shape == (B, F)
    assert ctl["harmonic_distribution"].shape == (B, F, 12)
    assert ctl["noise_magnitudes"].shape == (B, F, 33)
    assert all((v > 0).all() for v in ctl.values())

    assert MelHead(in_dim=32, hidden=16, n_mels=80)(h).shape == (B, 80, F)


def test_generator_is_abstract():
    with pytest.raises(TypeError):
        Generator()


@pytest.mark.parametrize("use_prior", [False, True])
def test_istft_generator_length(use_prior):
    torch.manual_seed(0)
    gen = ISTFTGenerator(in_dim=24, dim=32, intermediate_dim=64, n_layers=2, use_prior=use_prior)
    assert isinstance(gen, Generator)
    for n_frames in (1, 7, F):
        prior = torch.randn(B, n_frames * HOP) * 0.1 if use_prior else None
        wav = gen(torch.randn(B, n_frames, 24), prior)
        assert wav.shape == (B, n_frames * HOP)
        assert torch.isfinite(wav).all()


def test_istft_generator_with_prior_starts_as_the_prior_and_passes_gradients_to_it():
    torch.manual_seed(0)
    gen = ISTFTGenerator(in_dim=24, dim=32, intermediate_dim=64, n_layers=2, use_prior=True)
    t = torch.arange(F * HOP) / 16000
    prior = (0.3 * torch.sin(2 * math.pi * 220 * t)).expand(B, -1).clone().requires_grad_(True)
    wav = gen(torch.randn(B, F, 24), prior)
    assert (wav - prior).abs().max() < 1e-2 * prior.abs().max()
    wav.square().sum().backward()
    assert prior.grad is not None and prior.grad.abs().sum() > 0
    assert gen.out.weight.grad.abs().sum() > 0


def test_mel_vocoder_configuration():
    gen = ISTFTGenerator(in_dim=80, dim=32, intermediate_dim=64, n_layers=1)
    assert gen(torch.randn(B, F, 80)).shape == (B, F * HOP)


def test_generator_rejects_prior_mismatch():
    gen = ISTFTGenerator(in_dim=8, dim=16, intermediate_dim=32, n_layers=1, use_prior=True)
    with pytest.raises(ValueError, match="use_prior"):
        gen(torch.randn(1, 4, 8), None)
    with pytest.raises(ValueError, match="samples"):
        gen(torch.randn(1, 4, 8), torch.zeros(1, 4 * HOP + 1))


@pytest.mark.parametrize("make,n_sub", [
    (lambda: MultiPeriodDiscriminator(periods=(2, 3, 5)), 3),
    (lambda: MultiResolutionDiscriminator(), 3),
])
def test_discriminator_outputs(make, n_sub):
    disc = make()
    wav = torch.randn(B, 4000, requires_grad=True)
    logits, feats = disc(wav)
    assert len(logits) == len(feats) == n_sub
    for lg, fm in zip(logits, feats):
        assert lg.ndim == 2 and lg.shape[0] == B
        assert len(fm) >= 3 and all(f.shape[0] == B for f in fm)
    sum(lg.mean() for lg in logits).backward()
    assert wav.grad is not None and wav.grad.abs().sum() > 0


def test_heads_outputs_do_not_depend_on_trailing_padding():
    """Per-frame norms only: appending padded frames leaves the earlier frames' outputs unchanged
    (up to the conv receptive field at the very end)."""
    torch.manual_seed(0)
    x = torch.randn(1, 20, 16)
    x_padded = torch.cat([x, torch.randn(1, 10, 16) * 5], 1)
    for head in (F0Head(in_dim=16, hidden=8), MelHead(in_dim=16, hidden=8, n_mels=10)):
        a, b = head(x), head(x_padded)
        a = a["log_f0"] if isinstance(a, dict) else a.transpose(1, 2)
        b = b["log_f0"] if isinstance(b, dict) else b.transpose(1, 2)
        assert torch.allclose(a[:, :12], b[:, :12], atol=1e-5)
