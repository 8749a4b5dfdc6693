"""Small Conv1d heads at the audio frame rate (100 Hz): video-rate features -> speech controls.

All heads take and return time-major tensors ``(B, F, D)`` (MelHead returns ``(B, n_mels, F)`` like
:func:`naturall2s.audio.log_mel`).
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
    """

    def __init__(self, *, in_dim: int, hidden: int = 256, f0_min: float = F0_MIN, f0_max: float = F0_MAX,
                 kernel_size: int = KERNEL_SIZE):
        super().__init__()
        self.log_f0_min, self.log_f0_max = math.log(f0_min), math.log(f0_max)
        self.net = ConvStack(in_dim, hidden, 3, kernel_size=kernel_size)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raw = self.net(x)
        log_f0 = self.log_f0_min + (self.log_f0_max - self.log_f0_min) * torch.sigmoid(raw[..., 0])
        return {
            "log_f0": log_f0,
            "voicing_logit": raw[..., 1],
            "loudness": LOUDNESS_OFFSET_DB + LOUDNESS_SCALE_DB * raw[..., 2],
        }


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
