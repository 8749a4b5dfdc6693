"""Small Conv1d heads at the audio frame rate (100 Hz): video-rate features -> speech controls.

All heads take and return time-major tensors ``(B, F, D)`` (MelHead returns ``(B, n_mels, F)`` like
:func:`naturall2s.audio.log_mel`; UnitHead logits ``(B, F, n_units)``).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from naturall2s.audio import F0_MAX, F0_MIN, N_MELS
from naturall2s.synths import N_HARMONICS, N_NOISE_BANDS, exp_sigmoid, upsample_frames

KERNEL_SIZE = 3  # 30 ms per conv at 100 Hz (the transformer already gives long context); 5 costs 5/3 as much
N_BLOCKS = 2  # residual conv blocks per head
LOUDNESS_OFFSET_DB = -50.0  # loudness = offset + scale · raw output (dB, see audio.loudness)
LOUDNESS_SCALE_DB = 20.0
NOISE_INIT_BIAS = -5.0  # ddsp: noise magnitudes start quiet (exp_sigmoid(-5) ≈ 2e-5)
MEL_INIT_BIAS = -5.0  # natural-log mel of quiet speech; speeds up the first steps


class ConvBlock(nn.Module):
    """Pre-norm residual Conv1d block: x + Conv(GELU(LayerNorm(x))). (B, C, F) -> (B, C, F).

    The norm is per frame (over channels), so a frame's output never depends on the clip's length or padding.
    """

    def __init__(self, channels: int, kernel_size: int = KERNEL_SIZE):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.act(self.norm(x.transpose(1, 2)).transpose(1, 2)))


class ConvStack(nn.Module):
    """in_dim -> hidden (1x1) -> ``n_blocks`` residual conv blocks -> out_dim (1x1). (B, F, in_dim) -> (B, F, out_dim)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, *, n_blocks: int = N_BLOCKS,
                 kernel_size: int = KERNEL_SIZE):
        super().__init__()
        self.inp = nn.Conv1d(in_dim, hidden, 1)
        self.blocks = nn.Sequential(*[ConvBlock(hidden, kernel_size) for _ in range(n_blocks)])
        self.out = nn.Sequential(nn.GELU(), nn.Conv1d(hidden, out_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.inp(x.transpose(1, 2)))).transpose(1, 2)


class FrameUpsampler(nn.Module):
    """Video-rate features to the audio frame rate: linear interpolation ×factor, then a residual conv.

    (B, T, dim) -> (B, factor·T, dim).
    """

    def __init__(self, *, dim: int, factor: int = 4, kernel_size: int = KERNEL_SIZE):
        super().__init__()
        self.factor = factor
        self.block = ConvBlock(dim, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = upsample_frames(x, self.factor)
        return self.block(up.transpose(1, 2)).transpose(1, 2)


class F0Head(nn.Module):
    """F0, voicing and loudness per audio frame.

    (B, F, in_dim) -> dict(log_f0 (B,F) natural log of Hz, bounded to [log f0_min, log f0_max];
    voicing_logit (B,F) (sigmoid = probability of voicing); loudness (B,F) dB as in audio.loudness).

    ``n_bins=0``: log F0 is one bounded regression output. ``n_bins>0`` (CREPE-style pitch classification):
    logits over ``n_bins`` log-spaced pitches from f0_min to f0_max, returned as ``f0_logits`` (B,F,n_bins);
    ``log_f0`` is the posterior mean of the bin centres (``bin_centres``, natural log of Hz), so it stays
    differentiable for the synthesizer. Train it with :func:`naturall2s.losses.f0_losses`' ``f0/ce``.
    """

    def __init__(self, *, in_dim: int, hidden: int = 256, f0_min: float = F0_MIN, f0_max: float = F0_MAX,
                 kernel_size: int = KERNEL_SIZE, n_bins: int = 0):
        super().__init__()
        if n_bins == 1 or n_bins < 0:
            raise ValueError(f"n_bins must be 0 (regression) or at least 2, got {n_bins}")
        self.log_f0_min, self.log_f0_max = math.log(f0_min), math.log(f0_max)
        self.n_bins = n_bins
        self.net = ConvStack(in_dim, hidden, max(n_bins, 1) + 2, kernel_size=kernel_size)
        # (n_bins,) natural log of Hz; empty for the regression head
        self.register_buffer("bin_centres", torch.linspace(self.log_f0_min, self.log_f0_max, n_bins), persistent=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raw = self.net(x)  # (B, F, pitch channels (1 or n_bins) + voicing + loudness)
        pitch = raw[..., :-2]
        out = {"voicing_logit": raw[..., -2], "loudness": LOUDNESS_OFFSET_DB + LOUDNESS_SCALE_DB * raw[..., -1]}
        if self.n_bins:
            out["f0_logits"] = pitch
            out["log_f0"] = torch.softmax(pitch.float(), dim=-1) @ self.bin_centres.float()
        else:
            out["log_f0"] = self.log_f0_min + (self.log_f0_max - self.log_f0_min) * torch.sigmoid(pitch[..., 0])
        return out


class ControlHead(nn.Module):
    """Harmonic-plus-noise synthesizer controls per audio frame (ddsp's exp_sigmoid scalings).

    (B, F, in_dim) -> dict(amplitude (B,F) > 0, harmonic_distribution (B,F,n_harmonics) > 0 (unnormalised;
    the synth normalises), noise_magnitudes (B,F,n_noise_bands) > 0 linear filter gains).
    """

    def __init__(self, *, in_dim: int, hidden: int = 256, n_harmonics: int = N_HARMONICS,
                 n_noise_bands: int = N_NOISE_BANDS, kernel_size: int = KERNEL_SIZE):
        super().__init__()
        self.n_harmonics, self.n_noise_bands = n_harmonics, n_noise_bands
        self.net = ConvStack(in_dim, hidden, 1 + n_harmonics + n_noise_bands, kernel_size=kernel_size)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raw = self.net(x)
        amp, dist, noise = raw.split([1, self.n_harmonics, self.n_noise_bands], dim=-1)
        return {
            "amplitude": exp_sigmoid(amp[..., 0]),
            "harmonic_distribution": exp_sigmoid(dist),
            "noise_magnitudes": exp_sigmoid(noise + NOISE_INIT_BIAS),
        }


class MelHead(nn.Module):
    """Log-mel spectrogram per audio frame. (B, F, in_dim) -> (B, n_mels, F) natural-log mel magnitude."""

    def __init__(self, *, in_dim: int, hidden: int = 256, n_mels: int = N_MELS, kernel_size: int = KERNEL_SIZE):
        super().__init__()
        self.net = ConvStack(in_dim, hidden, n_mels, kernel_size=kernel_size)
        nn.init.constant_(self.net.out[-1].bias, MEL_INIT_BIAS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).transpose(1, 2)


class UnitHead(nn.Module):
    """Discrete speech units per audio frame (the ``units`` variant). (B, F, in_dim) -> logits (B, F, n_units),
    trained with the cross-entropy against the units of the real speech (:func:`naturall2s.losses.unit_ce_loss`)."""

    def __init__(self, *, in_dim: int, hidden: int = 256, n_units: int, kernel_size: int = KERNEL_SIZE):
        super().__init__()
        self.net = ConvStack(in_dim, hidden, n_units, kernel_size=kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
