"""GAN discriminators on waveforms (HiFi-GAN's multi-period, UnivNet/Vocos's multi-resolution), narrow for CPU.

Both: forward(wav (B, N)) -> (logits: list of (B, L_i) per sub-discriminator,
features: list (per sub-discriminator) of lists of feature maps (B, C, ...)).
All convolutions are weight-normalised.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

LRELU_SLOPE = 0.1
MPD_CHANNELS = (16, 32, 64, 128)  # HiFi-GAN uses (32, 128, 512, 1024)
MRD_CHANNELS = 16  # Vocos uses 32


def _run_stack(x: torch.Tensor, convs: nn.ModuleList, post: nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Leaky-ReLU conv stack + output conv → (logits (B, L), every layer's feature map)."""
    feats = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        feats.append(x)
    x = post(x)
    feats.append(x)
    return x.flatten(1), feats


class PeriodDiscriminator(nn.Module):
    """Waveform folded into (N/period, period) columns, 2D convs along time. (B, N) -> ((B, L), [maps])."""

    def __init__(self, period: int, channels: tuple[int, ...] = MPD_CHANNELS, kernel_size: int = 5, stride: int = 3):
        super().__init__()
        self.period = period
        chans = (1, *channels)
        pad = (kernel_size // 2, 0)
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(a, b, (kernel_size, 1), (stride, 1), padding=pad)) for a, b in zip(chans[:-1], chans[1:])
        )
        self.convs.append(weight_norm(nn.Conv2d(chans[-1], chans[-1], (kernel_size, 1), 1, padding=pad)))
        self.post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, n = wav.shape
        if n % self.period:
            wav = F.pad(wav, (0, self.period - n % self.period), mode="reflect")
        x = wav.view(b, 1, -1, self.period)
        return _run_stack(x, self.convs, self.post)


class MultiPeriodDiscriminator(nn.Module):
    """One :class:`PeriodDiscriminator` per period. forward(wav (B,N)) -> (logits list, features list of lists)."""

    def __init__(self, *, periods: tuple[int, ...] = (2, 3, 5, 7, 11), channels: tuple[int, ...] = MPD_CHANNELS):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, tuple(channels)) for p in periods)

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        outs = [d(wav) for d in self.discriminators]
        return [o[0] for o in outs], [o[1] for o in outs]


class ResolutionDiscriminator(nn.Module):
    """2D convs over one STFT magnitude (frequency × time). (B, N) -> ((B, L), [maps]).

    Narrower than UnivNet's and strided along time as well as frequency in the middle layers: on this project's CPU
    that makes it 3.7x cheaper per step than the frequency-only striding (and 2.5x cheaper than the multi-period
    discriminator; ``benchmarks/bench_layers.py --only disc-mpd,disc-mrd``)."""

    def __init__(self, n_fft: int, hop_length: int, win_length: int, channels: int = MRD_CHANNELS):
        super().__init__()
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        self.convs = nn.ModuleList([
            weight_norm(nn.Conv2d(1, channels, (7, 5), padding=(3, 2))),
            weight_norm(nn.Conv2d(channels, channels, (5, 3), stride=(2, 2), padding=(2, 1))),
            weight_norm(nn.Conv2d(channels, channels, (5, 3), stride=(2, 2), padding=(2, 1))),
            weight_norm(nn.Conv2d(channels, channels, (3, 3), stride=(2, 2), padding=(1, 1))),
            weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))),
        ])
        self.post = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, 1, n_fft // 2 + 1, frames) STFT magnitude (frequency first, as UnivNet)."""
        spec = torch.stft(wav, self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                          window=self.window, center=True, return_complex=True)
        return spec.abs()[:, None]

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.spectrogram(wav)
        return _run_stack(x, self.convs, self.post)


class MultiResolutionDiscriminator(nn.Module):
    """One :class:`ResolutionDiscriminator` per (n_fft, hop_length, win_length).

    forward(wav (B,N)) -> (logits list, features list of lists).
    """

    def __init__(self, *, resolutions: tuple[tuple[int, int, int], ...] = ((512, 128, 512), (1024, 256, 1024), (256, 64, 256)),
                 channels: int = MRD_CHANNELS):
        super().__init__()
        self.discriminators = nn.ModuleList(ResolutionDiscriminator(*r, channels=channels) for r in resolutions)

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        outs = [d(wav) for d in self.discriminators]
        return [o[0] for o in outs], [o[1] for o in outs]
