"""Differentiable DSP: a harmonic oscillator bank plus filtered noise (magenta/ddsp style).

Pure functions on tensors, plus one :class:`HarmonicPlusNoise` module that turns frame-rate *controls*
(F0, overall amplitude, harmonic distribution, noise filter magnitudes at ``sample_rate / hop_length`` Hz)
into a *signal* at the sample rate. Everything is differentiable in every control, F0 included, so a
waveform loss on the output trains the network that predicts the controls.

Frame convention (DESIGN.md): audio frame ``k`` stands for samples ``[hop·k, hop·(k+1))``; when controls
are interpolated to the sample rate, frame ``k``'s value sits at the centre of that span.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from naturall2s.audio import HOP_LENGTH, SAMPLE_RATE

N_HARMONICS = 64
N_NOISE_BANDS = 65  # filter magnitudes from 0 Hz to Nyquist; the FIR has 2·(n_bands - 1) taps
EPS = 1e-7


def exp_sigmoid(x: torch.Tensor, exponent: float = 10.0, max_value: float = 2.0, threshold: float = 1e-7) -> torch.Tensor:
    """ddsp's scaled sigmoid for positive synth controls: ``max_value · sigmoid(x)^ln(exponent) + threshold``.

    Any shape in, same shape out, values in (threshold, max_value + threshold). exp_sigmoid(0) ≈ 0.4.
    """
    return max_value * torch.sigmoid(x) ** math.log(exponent) + threshold


def _block_weights(factor: int, *, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear-interpolation weights inside one block of ``factor`` samples (align_corners=False).

    Sample ``j`` of block ``k`` sits at frame position ``k + (j + 0.5)/factor - 0.5``: the first half of the block
    (``first[j]`` True) lies between frames k-1 and k, the rest between k and k+1; ``w[j]`` is the weight of the
    later frame of that pair. -> (w (factor,), first (factor,) bool).
    """
    j = torch.arange(factor, device=device, dtype=dtype)
    first = j < factor // 2
    w = (j + 0.5) / factor + torch.where(first, 0.5, -0.5)
    return w, first


def _neighbours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frames k-1, k, k+1 of x (B, F, C), edges held. -> three (B, F, C) tensors."""
    padded = torch.cat([x[:, :1], x, x[:, -1:]], dim=1)
    return padded[:, :-2], padded[:, 1:-1], padded[:, 2:]


def upsample_frames(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Linear interpolation of frame-rate controls to a ``factor`` times higher rate.

    x (B, F, C) -> (B, F·factor, C), contiguous. Frame ``k``'s value sits at the centre of output span
    ``[k·factor, (k+1)·factor)`` (same values as ``F.interpolate(..., mode="linear", align_corners=False)``);
    values before the first / after the last centre are held constant. Computed per block of ``factor``
    samples, which keeps the channel axis last and contiguous (faster than interpolate + transposes).
    """
    if factor == 1:
        return x
    w, first = _block_weights(factor, device=x.device, dtype=x.dtype)
    half = int(first.sum())
    prev, cur, nxt = (t[:, :, None] for t in _neighbours(x))  # (B, F, 1, C)
    a = prev + (cur - prev) * w[:half, None]  # (B, F, half, C)
    b = cur + (nxt - cur) * w[half:, None]  # (B, F, factor - half, C)
    return torch.cat([a, b], dim=2).reshape(x.shape[0], -1, x.shape[-1])


def remove_above_nyquist(amplitudes: torch.Tensor, f0: torch.Tensor, *, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Zero harmonic ``k`` (1-based) wherever ``k·f0 ≥ sample_rate / 2``.

    amplitudes (B, L, K), f0 (B, L) Hz -> (B, L, K) (L frames or samples). The mask carries no gradient.
    """
    k = torch.arange(1, amplitudes.shape[-1] + 1, device=f0.device, dtype=f0.dtype)
    below = (f0.detach()[..., None] * k) < (sample_rate / 2)
    return amplitudes * below.to(amplitudes.dtype)


def harmonic_synth(f0: torch.Tensor, amplitudes: torch.Tensor, *, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Additive synthesis of harmonics of a time-varying fundamental.

    f0 (B, N) Hz per sample; amplitudes (B, N, K) per sample and harmonic, or (B, F, K) per frame with
    N = F·factor (then linearly interpolated as :func:`upsample_frames` does, without materialising the
    (B, N, K) amplitudes: a batched matmul per block, several times cheaper on CPU) -> (B, N):
    ``y[n] = Σ_k a_k[n] · sin(2π·k·φ[n])`` with ``φ[n] = Σ_{m≤n} f0[m] / sample_rate`` (cycles).

    The running phase is accumulated in float64 and wrapped to [0, 1) cycles before going back to the
    amplitudes' dtype (at least float32), so precision does not degrade over long clips; gradients flow to ``f0`` through it.
    Harmonics at or above Nyquist are zeroed per sample (no aliasing).
    """
    b, n = f0.shape
    n_amp, n_harm = amplitudes.shape[1], amplitudes.shape[2]
    if n % n_amp:
        raise ValueError(f"amplitudes have {n_amp} steps, which does not divide the {n} samples of f0")
    dtype = torch.promote_types(amplitudes.dtype, torch.float32)  # never half precision for phases
    amplitudes = amplitudes.to(dtype)
    cycles = torch.cumsum(f0.double() / sample_rate, dim=-1)
    cycles = (cycles - torch.floor(cycles.detach())).to(dtype)  # wrap; d/dx = 1
    k = torch.arange(1, n_harm + 1, device=f0.device, dtype=dtype)
    sines = torch.sin(cycles[..., None] * (2 * math.pi * k))  # (B, N, K)
    above = k >= (sample_rate / 2) / f0.detach()[..., None].to(dtype)  # k·f0 ≥ Nyquist
    sines = sines.masked_fill(above, 0.0)
    if n_amp == n:
        return torch.linalg.vecdot(amplitudes, sines)
    factor = n // n_amp
    prev, cur, nxt = _neighbours(amplitudes)
    pairs = torch.stack([prev, cur - prev, cur, nxt - cur], dim=-1)  # (B, F, K, 4)
    y = torch.matmul(sines.view(b * n_amp, factor, n_harm), pairs.view(b * n_amp, n_harm, 4))  # (B·F, factor, 4)
    w, first = _block_weights(factor, device=f0.device, dtype=dtype)
    out = torch.where(first[:, None], y[..., 0:1] + w[:, None] * y[..., 1:2], y[..., 2:3] + w[:, None] * y[..., 3:4])
    return out.reshape(b, n)


def linear_phase_fir(magnitudes: torch.Tensor) -> torch.Tensor:
    """Frequency-sampled, Hann-windowed, linear-phase FIR filters (ddsp's frequency_impulse_response).

    magnitudes (..., n_bands) linear gains from 0 Hz to Nyquist -> impulse responses (..., 2·(n_bands - 1))
    whose centre tap is at index ``n_bands - 1`` (group delay of ``n_bands - 1`` samples).
    """
    ir_size = 2 * (magnitudes.shape[-1] - 1)
    ir = torch.fft.irfft(magnitudes, n=ir_size)  # real gains = zero phase: symmetric, centred at tap 0
    ir = torch.roll(ir, shifts=ir_size // 2, dims=-1)  # causal, centred at ir_size // 2
    window = torch.hann_window(ir_size, periodic=True, device=ir.device, dtype=ir.dtype)  # symmetric about the centre tap
    return ir * window


def overlap_add(frames: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Sum frames placed ``hop_length`` apart. frames (B, F, L) -> (B, (F - 1)·hop_length + L)."""
    b, n_frames, length = frames.shape
    total = (n_frames - 1) * hop_length + length
    out = F.fold(frames.transpose(1, 2), output_size=(1, total), kernel_size=(1, length), stride=(1, hop_length))
    return out.reshape(b, total)


def filtered_noise(magnitudes: torch.Tensor, *, hop_length: int = HOP_LENGTH,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform white noise in [-1, 1] shaped by a per-frame time-varying filter (ddsp's FilteredNoise).

    magnitudes (B, F, n_bands) ≥ 0, linear gains on ``n_bands`` frequencies evenly spaced from 0 Hz to
    Nyquist -> (B, F·hop_length).

    Each frame's magnitudes become a linear-phase FIR of ``2·(n_bands-1)`` taps (:func:`linear_phase_fir`);
    frame ``k``'s ``hop_length`` noise samples are convolved with it by FFT (zero-padded, so linear
    convolution, no circular wrap), the frames are overlap-added, and the FIR's group delay is removed so
    frame ``k``'s noise occupies samples ``[hop·k, hop·(k+1))`` plus the filter's tails.
    ``generator`` seeds the noise (a torch.Generator on the magnitudes' device) for reproducible output.
    """
    b, n_frames, n_bands = magnitudes.shape
    ir = linear_phase_fir(magnitudes)  # (B, F, ir_size)
    ir_size = ir.shape[-1]
    noise = torch.rand(b, n_frames, hop_length, generator=generator, device=magnitudes.device,
                       dtype=magnitudes.dtype) * 2 - 1
    conv_len = hop_length + ir_size - 1
    n_fft = 1 << (conv_len - 1).bit_length()
    y = torch.fft.irfft(torch.fft.rfft(noise, n=n_fft) * torch.fft.rfft(ir, n=n_fft), n=n_fft)[..., :conv_len]
    out = overlap_add(y, hop_length)  # (B, (F-1)·hop + conv_len)
    delay = ir_size // 2
    return out[:, delay : delay + n_frames * hop_length]


class HarmonicPlusNoise(nn.Module):
    """Harmonic-plus-noise synthesizer: frame-rate controls -> waveform (no trainable parameters).

    forward(f0 (B,F) Hz, amplitude (B,F) ≥ 0, harmonic_distribution (B,F,K) ≥ 0,
    noise_magnitudes (B,F,n_noise_bands) ≥ 0) -> dict(harmonic, noise, signal), each (B, N), N = F·hop_length.

    The harmonic distribution is zeroed above Nyquist and normalised to sum to 1 per frame, so
    ``amplitude`` is the frame's total harmonic amplitude. Unvoiced frames are the caller's job: pass
    amplitude ≈ 0 there (F0 still has to be a positive, finite number).
    """

    def __init__(self, *, sample_rate: int = SAMPLE_RATE, hop_length: int = HOP_LENGTH,
                 n_harmonics: int = N_HARMONICS, n_noise_bands: int = N_NOISE_BANDS):
        super().__init__()
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.n_harmonics = n_harmonics
        self.n_noise_bands = n_noise_bands

    def forward(self, f0: torch.Tensor, amplitude: torch.Tensor, harmonic_distribution: torch.Tensor,
                noise_magnitudes: torch.Tensor, *, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        if harmonic_distribution.shape[-1] != self.n_harmonics or noise_magnitudes.shape[-1] != self.n_noise_bands:
            raise ValueError(
                f"expected {self.n_harmonics} harmonics and {self.n_noise_bands} noise bands, got "
                f"{tuple(harmonic_distribution.shape)} and {tuple(noise_magnitudes.shape)}"
            )
        dist = remove_above_nyquist(harmonic_distribution, f0, sample_rate=self.sample_rate)
        dist = dist / (dist.sum(-1, keepdim=True) + EPS)
        amplitudes = amplitude[..., None] * dist  # (B, F, K)
        f0_up = upsample_frames(f0[..., None], self.hop_length)[..., 0]  # (B, N)
        harmonic = harmonic_synth(f0_up, amplitudes, sample_rate=self.sample_rate)  # interpolates amplitudes
        noise = filtered_noise(noise_magnitudes, hop_length=self.hop_length, generator=generator)
        return {"harmonic": harmonic, "noise": noise, "signal": harmonic + noise}

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, hop_length={self.hop_length}, "
                f"n_harmonics={self.n_harmonics}, n_noise_bands={self.n_noise_bands}")
