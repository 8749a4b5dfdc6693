"""Shapes and behaviours of the model's layers: front end, heads, generator, discriminators (tiny widths)."""
from __future__ import annotations

import math

import pytest
import torch

from naturall2s.discriminators import MultiPeriodDiscriminator, MultiResolutionDiscriminator
from naturall2s.encoders import CTCHead, VisualFrontEnd
from naturall2s.generator import ENVELOPE_BINS, Generator, ISTFTGenerator, excitation
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


def harmonic_prior(f0: float, n_frames: int, gain: float = 0.3) -> torch.Tensor:
    """(B, n_frames·HOP) sum of 10 harmonics of f0 with falling amplitudes (a voiced DDSP prior)."""
    t = torch.arange(n_frames * HOP) / 16000
    wav = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 11))
    return (gain * wav / 3).expand(B, -1).clone()


def test_excitation_is_the_fine_structure_of_a_spectrum():
    k = torch.arange(321, dtype=torch.float32)
    flat = torch.full((1, 321, 3), 0.2)
    assert torch.allclose(excitation(flat), torch.ones_like(flat), atol=1e-4)
    assert torch.allclose(excitation(torch.zeros(1, 321, 3)), torch.ones(1, 321, 3))  # silence: no structure
    comb = (0.01 + (k % 8 == 0).float())[None, :, None].expand(1, -1, 3) * torch.exp(-k / 100)[None, :, None]
    e = excitation(comb)
    peaks, troughs = e[0, 40:280:8, 0], e[0, 44:280:8, 0]
    assert peaks.min() > 4 and troughs.max() < 0.2  # harmonics kept, envelope (the exp fall-off) removed
    assert torch.allclose(excitation(10 * comb)[:, :200], e[:, :200], rtol=1e-2)  # independent of the level (far above the floor)
    assert ENVELOPE_BINS % 2 == 1


@pytest.mark.parametrize("mode", ["refine", "excitation"])
def test_prior_modes_differ_in_who_owns_the_envelope(mode):
    """refine: the output follows the prior's level; excitation: only its fine structure and phase enter the
    output (the prior's level reaches the generator only as an input feature, switched off here)."""
    torch.manual_seed(0)
    gen = ISTFTGenerator(in_dim=24, dim=32, intermediate_dim=64, n_layers=2, use_prior=True, prior_mode=mode)
    with torch.no_grad():
        gen.prior_proj.weight.zero_()
        gen.prior_proj.bias.zero_()
    feats, prior = torch.randn(B, F, 24), harmonic_prior(200.0, F)
    quiet, loud = gen(feats, prior), gen(feats, 10 * prior)
    ratio = float(loud.norm() / quiet.norm())
    assert ratio == pytest.approx(10.0 if mode == "refine" else 1.0, rel=0.1)
    # either way the output is voiced at the prior's harmonics: 200 Hz = bin 8 of 25 Hz bins
    mag = torch.stft(quiet[0], 640, 160, window=torch.hann_window(640), return_complex=True).abs().mean(-1)
    assert mag[8:88:8].mean() > 10 * mag[12:88:8].mean()  # its 10 harmonics


def test_excitation_mode_passes_gradients_to_the_prior():
    torch.manual_seed(0)
    gen = ISTFTGenerator(in_dim=24, dim=32, intermediate_dim=64, n_layers=2, use_prior=True, prior_mode="excitation")
    prior = harmonic_prior(180.0, F).requires_grad_(True)
    gen(torch.randn(B, F, 24), prior).square().sum().backward()
    assert prior.grad is not None and prior.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="prior_mode"):
        ISTFTGenerator(in_dim=8, dim=16, intermediate_dim=32, n_layers=1, use_prior=True, prior_mode="gate")


def test_free_phase_lets_the_added_energy_leave_the_prior_phase():
    """With free_phase the additive branch has its own phase: once the prior-scaled branch is switched off
    (and the prior's log-magnitude input projection), the output no longer depends on the prior at all; without
    free_phase the same generator still rides on the prior's phase, so two priors give two outputs."""
    torch.manual_seed(0)
    feats = torch.randn(B, F, 24)
    outputs = {}
    for free in (False, True):
        gen = ISTFTGenerator(in_dim=24, dim=32, intermediate_dim=64, n_layers=2, use_prior=True, free_phase=free)
        with torch.no_grad():
            gen.prior_proj.weight.zero_()
            gen.prior_proj.bias.zero_()
            k = gen.n_bins
            gen.out.bias[:k].fill_(-30.0)  # r: the prior-scaled branch vanishes
            gen.out.bias[k : 2 * k].fill_(-2.0)  # a: the additive branch is audible
        outputs[free] = [gen(feats, harmonic_prior(f0, F)) for f0 in (110.0, 170.0)]
        assert gen.out.out_features == (4 if free else 3) * gen.n_bins
    locked, free = outputs[False], outputs[True]
    assert locked[0].abs().max() > 1e-3 and free[0].abs().max() > 1e-3
    assert (locked[0] - locked[1]).abs().max() > 0.1 * locked[0].abs().max()  # phase follows the prior
    assert torch.allclose(free[0], free[1], atol=1e-6)  # phase of its own


def test_free_phase_starts_as_the_prior_and_needs_one():
    torch.manual_seed(0)
    gen = ISTFTGenerator(in_dim=24, dim=32, intermediate_dim=64, n_layers=2, use_prior=True, free_phase=True)
    prior = harmonic_prior(150.0, F).requires_grad_(True)
    wav = gen(torch.randn(B, F, 24), prior)
    assert (wav - prior).abs().max() < 1e-2 * prior.abs().max()
    wav.square().sum().backward()
    assert prior.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="free_phase needs use_prior"):
        ISTFTGenerator(in_dim=8, dim=16, intermediate_dim=32, n_layers=1, use_prior=False, free_phase=True)


def test_f0_head_classification_returns_the_posterior_mean_pitch():
    torch.manual_seed(0)
    head = F0Head(in_dim=32, hidden=16, n_bins=90)
    out = head(torch.randn(B, F, 32))
    assert set(out) == {"log_f0", "voicing_logit", "loudness", "f0_logits"}
    assert out["f0_logits"].shape == (B, F, 90) and out["log_f0"].shape == (B, F)
    centres = head.bin_centres
    assert centres[0] == pytest.approx(math.log(60.0)) and centres[-1] == pytest.approx(math.log(400.0))
    assert out["log_f0"].min() >= centres[0] - 1e-5 and out["log_f0"].max() <= centres[-1] + 1e-5
    with torch.no_grad():  # a confident head (one bin far above the rest) says that bin's pitch
        last = head.net.out[-1]
        last.weight.zero_()
        last.bias.zero_()
        last.bias[37] = 50.0
    assert torch.allclose(head(torch.randn(B, F, 32))["log_f0"], centres[37].expand(B, F), atol=1e-4)
    assert "bin_centres" not in head.state_dict()  # derived from f0_min / f0_max / n_bins, not stored
    with pytest.raises(ValueError, match="n_bins"):
        F0Head(in_dim=32, n_bins=1)


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
