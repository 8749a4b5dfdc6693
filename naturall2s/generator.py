"""Waveform generators: frame-rate features (and optionally a coarse prior waveform) -> waveform.

:class:`Generator` is the one interface (DDSP-refining, plain and multi-input (mel + units) vocoders swap behind it);
:class:`ISTFTGenerator` is a Vocos-style generator: ConvNeXt blocks at the frame rate predict a complex STFT
that ``torch.istft`` turns into exactly ``F · hop_length`` samples. Cheap on CPU: nothing runs per sample.

Frames: feature frame ``k`` is the centred STFT frame at sample ``hop·k`` (DESIGN.md: a signal of ``F·hop``
samples has ``F`` frames, the centred STFT's extra last frame dropped). The least-squares iSTFT reconstructs
all ``F·hop`` samples from those ``F`` frames (the window envelope is positive everywhere in that span).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn as nn
import torch.nn.functional as F

from naturall2s.audio import HOP_LENGTH, N_FFT

CONVNEXT_KERNEL = 7
LOG_MAG_MAX = 7.0  # clamp on predicted log-magnitudes (exp(7) ≈ 1100, above any full-scale bin at n_fft 640)
ABS_LOG_MAG_INIT = -8.0  # with a prior, the absolute magnitude branch starts near silence (output ≈ prior)
PRIOR_LOG_FLOOR = 1e-5  # floor of |STFT(prior)| before the log (input features)
PRIOR_MODES = ("refine", "excitation")
# excitation mode: the prior's spectral envelope is |P| averaged over this many frequency bins (17 × 25 Hz = 425 Hz
# at 16 kHz / n_fft 640: wider than the harmonic spacing of any speaking F0), so |P| / envelope keeps its harmonics
ENVELOPE_BINS = 17


class Generator(nn.Module, ABC):
    """features (B, F, D) at sample_rate / hop_length Hz, prior (B, F·hop_length) | None, units (B, F) long |
    (B, F, n_units) weights | None -> waveform (B, F·hop_length)."""

    hop_length: int

    @abstractmethod
    def forward(self, features: torch.Tensor, prior: torch.Tensor | None = None,
                units: torch.Tensor | None = None) -> torch.Tensor:
        ...


class ConvNeXtBlock(nn.Module):
    """Vocos ConvNeXt block: depthwise conv -> LayerNorm -> MLP (GELU) -> layer scale, residual. (B, C, F) -> (B, C, F)."""

    def __init__(self, dim: int, intermediate_dim: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, CONVNEXT_KERNEL, padding=CONVNEXT_KERNEL // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).transpose(1, 2)  # (B, F, C)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class ISTFTGenerator(Generator):
    """Vocos-style generator; with ``use_prior`` it refines a coarse (DDSP) waveform's spectrum.

    features (B, F, in_dim), prior (B, F·hop_length) -> (B, F·hop_length).

    Without a prior: |S| = exp(a), ∠S = φ (a, φ predicted per bin), as in Vocos.
    With a prior P = STFT(prior) (same n_fft / hop / hann window, frame-aligned with the features):
    log|P| enters as extra input channels (1x1 projection added to the embedding), and
    ``|S| = |P|·exp(r) + exp(a)`` with ``∠S = ∠P + φ``: ``r`` rescales what the prior already has (residual in
    the log domain), ``a`` adds energy where the prior has none (noise, missed voicing), ``φ`` is a phase
    residual on the prior's phase. The ``r`` and ``φ`` outputs start at exactly 0 and ``a`` near silence, so
    at initialisation the output is the prior itself (up to iSTFT round-off). The prior's phase is used
    detached (its gradient ~1/|P| explodes in silent bins); gradients reach the prior through |P|.

    ``prior_mode="excitation"`` (source-filter): the prior supplies only its excitation, i.e. its phase and its
    fine structure ``E = |P| / env(|P|)`` (harmonics at the predicted F0, noise texture; ``env`` averages |P| over
    :data:`ENVELOPE_BINS` bins, so ``E ≈ 1`` where the prior is flat or silent), and the generator owns the
    envelope: ``|S| = exp(m)·E + exp(a)``. The refine mode's ``|P|·exp(r)`` equals ``exp(r + log env)·E``: the two
    differ only in whether the prior's envelope is the starting point the output must move away from.

    ``free_phase=True`` gives the additive branch its own phase: ``S = polar(source·exp(r), ∠P + φ) +
    polar(exp(a), ψ)``. Without it the energy the generator adds also rides on the prior's phase, so where the
    predicted F0 is wrong its harmonics are locked to the prior's oscillators; with it the generator can draw
    harmonics of its own, as the prior-free generator does, and the prior stays a starting point, not a cage.

    ``n_units > 0`` makes it a multi-input vocoder (the ``units`` variant, after Choi, Kim & Ro 2023): beside the
    features (a log-mel) it reads discrete speech units, one per frame, ``units`` (B, F) long (or (B, F, n_units)
    weights over them, e.g. posteriors); their embeddings (``unit_dim``) pass a 7-tap conv that is added to the
    features' embedding. That conv starts at zero, so a vocoder built with units starts as the same vocoder
    without them (e.g. the cascade's, whose tensors all keep their names and shapes).
    """

    def __init__(self, *, in_dim: int, dim: int = 256, intermediate_dim: int = 512, n_layers: int = 6,
                 n_fft: int = N_FFT, hop_length: int = HOP_LENGTH, use_prior: bool = False,
                 prior_mode: str = "refine", free_phase: bool = False, n_units: int = 0, unit_dim: int = 64):
        super().__init__()
        if prior_mode not in PRIOR_MODES:
            raise ValueError(f"unknown prior_mode {prior_mode!r}; choose one of {', '.join(PRIOR_MODES)}")
        if free_phase and not use_prior:
            raise ValueError("free_phase needs use_prior: without a prior every bin already has a free phase")
        if n_units < 0 or n_units == 1:
            raise ValueError(f"n_units must be 0 (no unit input) or at least 2, got {n_units}")
        self.n_fft, self.hop_length, self.use_prior, self.prior_mode = n_fft, hop_length, use_prior, prior_mode
        self.free_phase = free_phase
        self.n_units = n_units
        self.n_bins = n_fft // 2 + 1
        self.embed = nn.Conv1d(in_dim, dim, CONVNEXT_KERNEL, padding=CONVNEXT_KERNEL // 2)
        if n_units:
            self.unit_embed = nn.Embedding(n_units, unit_dim)
            self.unit_proj = nn.Conv1d(unit_dim, dim, CONVNEXT_KERNEL, padding=CONVNEXT_KERNEL // 2)
            nn.init.zeros_(self.unit_proj.weight)  # starts as the vocoder without units
            nn.init.zeros_(self.unit_proj.bias)
        self.prior_proj = nn.Conv1d(self.n_bins, dim, 1) if use_prior else None
        self.norm = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(ConvNeXtBlock(dim, intermediate_dim, 1.0 / n_layers) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(dim)
        n_out = (4 if free_phase else 3) if use_prior else 2  # (r or m,) a, φ (, ψ) per bin
        self.out = nn.Linear(dim, n_out * self.n_bins)
        if use_prior:
            with torch.no_grad():
                if prior_mode == "refine":
                    self.out.weight[: self.n_bins].zero_()  # r
                    self.out.bias[: self.n_bins].zero_()
                self.out.weight[2 * self.n_bins : 3 * self.n_bins].zero_()  # φ (ψ keeps the default init)
                self.out.bias[self.n_bins :].zero_()
                self.out.bias[self.n_bins : 2 * self.n_bins].fill_(ABS_LOG_MAG_INIT)  # a
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def stft(self, wav: torch.Tensor, n_frames: int) -> torch.Tensor:
        """Centred complex STFT of wav (B, N), first ``n_frames`` frames. -> (B, n_fft // 2 + 1, n_frames)."""
        spec = torch.stft(wav, self.n_fft, hop_length=self.hop_length, window=self.window, center=True,
                          pad_mode="constant", return_complex=True)
        return spec[..., :n_frames]

    def istft(self, spec: torch.Tensor, n_frames: int) -> torch.Tensor:
        """(B, n_fft // 2 + 1, F) complex -> (B, F·hop_length) waveform (inverse of :meth:`stft`)."""
        return torch.istft(spec, self.n_fft, hop_length=self.hop_length, window=self.window, center=True,
                           length=n_frames * self.hop_length)

    def forward(self, features: torch.Tensor, prior: torch.Tensor | None = None,
                units: torch.Tensor | None = None) -> torch.Tensor:
        n_frames = features.shape[1]
        if self.use_prior != (prior is not None):
            raise ValueError(f"this generator was built with use_prior={self.use_prior} but got "
                             f"prior={'a tensor' if prior is not None else 'None'}")
        if bool(self.n_units) != (units is not None):
            raise ValueError(f"this generator was built with n_units={self.n_units} but got "
                             f"units={'a tensor' if units is not None else 'None'}")
        x = self.embed(features.transpose(1, 2))  # (B, dim, F)
        if units is not None:
            if units.shape[1] != n_frames:
                raise ValueError(f"units have {units.shape[1]} frames, the features {n_frames}")
            emb = (self.unit_embed(units) if not units.is_floating_point()
                   else units.to(self.unit_embed.weight.dtype) @ self.unit_embed.weight)  # (B, F, unit_dim)
            x = x + self.unit_proj(emb.transpose(1, 2))
        if prior is not None:
            if prior.shape[-1] != n_frames * self.hop_length:
                raise ValueError(f"prior has {prior.shape[-1]} samples, expected {n_frames} frames × {self.hop_length}")
            p_spec = self.stft(prior, n_frames)
            p_mag = p_spec.abs()
            x = x + self.prior_proj(torch.log(p_mag.clamp(min=PRIOR_LOG_FLOOR)))
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        out = self.out(self.final_norm(x.transpose(1, 2))).transpose(1, 2)  # (B, n_out·bins, F)
        if prior is None:
            log_mag, phase = out.chunk(2, dim=1)
            spec = torch.polar(torch.exp(log_mag.clamp(max=LOG_MAG_MAX)), phase)
        else:
            r, a, phase, *free = out.chunk(4 if self.free_phase else 3, dim=1)
            source = p_mag if self.prior_mode == "refine" else excitation(p_mag)
            p_unit = p_spec.detach() / p_mag.detach().clamp(min=1e-12)
            p_unit = torch.where(p_mag.detach() > 1e-12, p_unit, torch.ones_like(p_unit))
            kept, added = source * torch.exp(r.clamp(max=LOG_MAG_MAX)), torch.exp(a.clamp(max=LOG_MAG_MAX))
            if self.free_phase:
                spec = torch.polar(kept, phase) * p_unit + torch.polar(added, free[0])
            else:
                spec = torch.polar(kept + added, phase) * p_unit
        return self.istft(spec, n_frames)


def excitation(mag: torch.Tensor, *, n_bins: int = ENVELOPE_BINS, floor: float = PRIOR_LOG_FLOOR) -> torch.Tensor:
    """Fine structure of a magnitude spectrogram: ``(|P| + floor) / (env + floor)``, env = |P| averaged over
    ``n_bins`` neighbouring frequency bins (edges: the mean of the bins that exist). (B, K, F) -> (B, K, F), ≈ 1
    where the spectrum is flat or silent, peaks at harmonics."""
    b, k, f = mag.shape
    flat = mag.transpose(1, 2).reshape(b * f, 1, k)
    env = F.avg_pool1d(flat, n_bins, stride=1, padding=n_bins // 2, count_include_pad=False)
    env = env.reshape(b, f, k).transpose(1, 2)
    return (mag + floor) / (env + floor)
