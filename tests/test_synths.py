"""The differentiable DSP synthesizer: frequencies land where they should, no aliasing, gradients reach every control."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from naturall2s.losses import multi_resolution_stft_loss
from naturall2s.synths import (
    HarmonicPlusNoise,
    exp_sigmoid,
    filtered_noise,
    harmonic_synth,
    linear_phase_fir,
    upsample_frames,
)

SR, HOP = 16000, 160


def spectrum(wav: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(N,) -> (freqs Hz, power) of the Hann-windowed FFT."""
    x = wav.detach().double().numpy()
    power = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    return np.fft.rfftfreq(len(x), 1 / SR), power


def band_energy(freqs, power, centre, width=30.0) -> float:
    return float(power[np.abs(freqs - centre) <= width].sum())


def constant_controls(n_frames, f0, n_harmonics, batch=1):
    f0_t = torch.full((batch, n_frames), float(f0))
    amp = torch.full((batch, n_frames), 0.5)
    dist = torch.ones(batch, n_frames, n_harmonics)
    noise = torch.zeros(batch, n_frames, 65)
    return f0_t, amp, dist, noise


def test_upsample_frames_shape_and_centres():
    x = torch.arange(4.0).view(1, 4, 1).repeat(2, 1, 3)  # (2, 4, 3) values 0..3
    y = upsample_frames(x, 4)
    assert y.shape == (2, 16, 3)
    # frame k's value sits at the centre of span [4k, 4k+4): between samples 4k+1 and 4k+2
    assert torch.allclose((y[0, 5, 0] + y[0, 6, 0]) / 2, torch.tensor(1.0))
    assert torch.all(y[0, :2, 0] == 0) and torch.all(y[0, -2:, 0] == 3)  # held at the ends
    assert torch.all(torch.diff(y[0, :, 0]) >= 0)


@pytest.mark.parametrize("factor", [1, 3, 4, 160])
def test_upsample_frames_matches_linear_interpolation(factor):
    x = torch.randn(2, 7, 5)
    expected = torch.nn.functional.interpolate(x.transpose(1, 2), scale_factor=factor, mode="linear",
                                               align_corners=False).transpose(1, 2)
    assert torch.allclose(upsample_frames(x, factor), expected, atol=1e-5)


def test_frame_rate_amplitudes_equal_upsampled_per_sample_amplitudes():
    """The matmul path for (B, F, K) amplitudes gives the same signal as explicit per-sample amplitudes."""
    torch.manual_seed(0)
    f0 = upsample_frames((100 + 300 * torch.rand(2, 12, 1)), HOP)[..., 0]  # up to 400 Hz: some above Nyquist
    amps = torch.rand(2, 12, 24)
    fast = harmonic_synth(f0, amps, sample_rate=SR)
    slow = harmonic_synth(f0, upsample_frames(amps, HOP), sample_rate=SR)
    assert fast.shape == slow.shape == (2, 12 * HOP)
    assert torch.allclose(fast, slow, atol=1e-4)


def test_exp_sigmoid_range():
    y = exp_sigmoid(torch.tensor([-100.0, 0.0, 100.0]))
    assert y[0] == pytest.approx(1e-7, abs=1e-8) and y[2] == pytest.approx(2.0, abs=1e-5)
    assert 0.3 < y[1] < 0.5


def test_constant_200hz_peaks_at_200hz():
    synth = HarmonicPlusNoise(n_harmonics=16)
    f0, amp, _, noise = constant_controls(100, 200.0, 16)
    dist = 1.0 / torch.arange(1, 17.0).expand(1, 100, 16)  # falling harmonic spectrum
    out = synth(f0, amp, dist, noise)
    assert out["signal"].shape == (1, 100 * HOP)
    freqs, power = spectrum(out["harmonic"][0])
    assert abs(freqs[np.argmax(power)] - 200.0) < 2.0
    # energy sits at the harmonics of 200 Hz, nothing in between
    harmonic_energy = sum(band_energy(freqs, power, 200.0 * k) for k in range(1, 17))
    assert harmonic_energy > 0.999 * power.sum()


def test_no_aliasing_above_nyquist():
    """f0 = 3 kHz, 10 harmonics at 16 kHz: only 3 and 6 kHz may sound (9 kHz would alias to 7, 12 to 4, 15 to 1)."""
    synth = HarmonicPlusNoise(n_harmonics=10)
    f0, amp, dist, noise = constant_controls(100, 3000.0, 10)
    out = synth(f0, amp, dist, noise)["harmonic"][0]
    freqs, power = spectrum(out)
    total = power.sum()
    assert band_energy(freqs, power, 3000) + band_energy(freqs, power, 6000) > 0.9999 * total
    for alias in (7000, 4000, 1000):
        assert band_energy(freqs, power, alias) < 1e-6 * total
    # the distribution is renormalised over the 2 surviving harmonics: each carries half the amplitude
    assert torch.sqrt(out.square().mean()).item() == pytest.approx(0.25, rel=0.02)  # two sines of amplitude 0.25


def test_phase_stays_accurate_over_a_minute():
    n = 60 * SR
    f0 = torch.full((1, n), 440.0)
    y = harmonic_synth(f0, torch.ones(1, n, 1), sample_rate=SR)[0]
    t = torch.arange(n - 1000, n, dtype=torch.float64)
    expected = torch.sin(2 * math.pi * 440.0 * (t + 1) / SR)
    assert torch.allclose(y[-1000:].double(), expected, atol=1e-3)


def test_gradients_reach_f0_and_every_control():
    torch.manual_seed(0)
    synth = HarmonicPlusNoise(n_harmonics=8, n_noise_bands=33)
    n_frames = 40
    f0 = torch.full((2, n_frames), 150.0, requires_grad=True)
    amp = torch.full((2, n_frames), 0.3, requires_grad=True)
    dist = torch.rand(2, n_frames, 8, requires_grad=True)
    noise = torch.full((2, n_frames, 33), 0.05, requires_grad=True)
    target = HarmonicPlusNoise(n_harmonics=8, n_noise_bands=33)(
        torch.full((2, n_frames), 180.0), torch.full((2, n_frames), 0.2), torch.rand(2, n_frames, 8),
        torch.full((2, n_frames, 33), 0.01), generator=torch.Generator().manual_seed(1))["signal"]
    out = synth(f0, amp, dist, noise, generator=torch.Generator().manual_seed(2))
    loss = sum(multi_resolution_stft_loss(out["signal"], target).values())
    loss.backward()
    for name, t in (("f0", f0), ("amplitude", amp), ("distribution", dist), ("noise", noise)):
        assert t.grad is not None, name
        assert torch.isfinite(t.grad).all(), name
        assert t.grad.abs().sum() > 0, name


def test_linear_phase_fir_is_symmetric_and_centred():
    ir = linear_phase_fir(torch.rand(3, 33))
    assert ir.shape == (3, 64)
    centre = 32
    assert torch.allclose(ir[:, centre - 5 : centre], ir[:, centre + 1 : centre + 6].flip(-1), atol=1e-6)


def test_flat_filter_passes_noise_through_in_place():
    """All-pass magnitudes: the output is the generator's noise itself, frame k at samples [hop·k, hop·(k+1))."""
    n_frames = 20
    mags = torch.ones(2, n_frames, 65)
    out = filtered_noise(mags, hop_length=HOP, generator=torch.Generator().manual_seed(3))
    noise = torch.rand(2, n_frames, HOP, generator=torch.Generator().manual_seed(3)) * 2 - 1
    assert out.shape == (2, n_frames * HOP)
    assert torch.allclose(out, noise.reshape(2, -1), atol=1e-5)


def test_filtered_noise_lowpass_keeps_energy_below_cutoff():
    n_bands = 65  # 125 Hz apart, 0..8 kHz
    freqs = torch.linspace(0, SR / 2, n_bands)
    mags = (freqs < 2000).float().expand(1, 200, n_bands)
    out = filtered_noise(mags, hop_length=HOP, generator=torch.Generator().manual_seed(0))[0]
    f, power = spectrum(out)
    assert power[f < 2500].sum() > 0.97 * power.sum()
    assert power[f > 4000].sum() < 1e-3 * power.sum()


def test_silent_controls_give_silence():
    synth = HarmonicPlusNoise(n_harmonics=8)
    f0, _, dist, _ = constant_controls(10, 120.0, 8)
    out = synth(f0, torch.zeros(1, 10), dist, torch.zeros(1, 10, 65))
    assert out["signal"].abs().max() == 0


def test_wrong_control_sizes_raise():
    synth = HarmonicPlusNoise(n_harmonics=8)
    f0, amp, dist, noise = constant_controls(10, 120.0, 16)
    with pytest.raises(ValueError, match="harmonics"):
        synth(f0, amp, dist, noise)
