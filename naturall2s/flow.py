"""Flow matching over the log-mel: the ``lipvoicer`` variant's generative model (after LipVoicer, Yemini et al.,
ICLR 2024, which uses DDPM; here rectified flow, so a few Euler steps suffice on a CPU).

Convention (rectified flow / conditional flow matching with a linear path): ``x_0`` is Gaussian noise, ``x_1`` the
normalised log-mel of real speech, ``x_t = t·x_1 + (1 - t)·x_0`` for ``t`` in [0, 1], and the denoiser predicts the
velocity ``v = x_1 - x_0`` (loss ``flow/mse``). Its clean estimate at ``t`` is ``x̂_1 = x_t + (1 - t)·v̂``. Sampling
integrates ``dx/dt = v̂`` from noise at ``t = 0`` to ``t = 1`` with ``steps`` Euler steps.

Classifier guidance (LipVoicer's ASR guidance): at every step the velocity gets
``guidance · (‖v̂‖ / ‖g‖) · g`` with ``g = ∇_{x_t} log p_judge(words | x̂_1(x_t))``: the gradient, through
the denoiser's clean estimate, of the log-probability that a recogniser of *clean* speech (the content judge,
:mod:`naturall2s.content`) hears the target words in it. As in LipVoicer (and Guided-TTS before it) the gradient is
normalised per clip to the norm of the model's own update, so ``guidance`` is a fraction of that update whatever the
step, the clip or the judge's confidence (LipVoicer normalises to the norm of the score ``ε̂/σ_t``; with a velocity
model the velocity is that update).

Shapes: mels ``(B, n_mels, F)`` at 100 Hz; conditions ``(B, F, cond_dim)`` (the 100 Hz features every speech head
reads); ``t`` ``(B,)``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

KERNEL = 7  # the depthwise convs' kernel (Vocos's ConvNeXt)
DILATIONS = (1, 2, 4, 8)  # cycled over the blocks: 8 blocks see 1 + 6·(1+2+4+8)·2 = 181 frames (1.8 s) of the mel
TIME_FEATURES = 64  # sinusoidal features of t before the time MLP
TIME_SCALE = 1000.0  # t in [0, 1] is embedded as t · 1000 (the usual range of diffusion step embeddings)


def time_features(t: torch.Tensor, n: int = TIME_FEATURES) -> torch.Tensor:
    """Sinusoidal features of ``t`` (B,) -> (B, n)."""
    half = n // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = TIME_SCALE * t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class FlowBlock(nn.Module):
    """A ConvNeXt block whose norm is modulated by the time embedding (adaptive LayerNorm, zero-initialised: it starts
    as the plain block). (B, C, F), (B, C) -> (B, C, F)."""

    def __init__(self, dim: int, intermediate_dim: int, *, dilation: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, KERNEL, padding=dilation * (KERNEL // 2), dilation=dilation, groups=dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.modulation = nn.Linear(dim, 2 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).transpose(1, 2)  # (B, F, C)
        scale, shift = self.modulation(temb)[:, None].chunk(2, dim=-1)
        y = self.norm(y) * (1 + scale) + shift
        y = self.pwconv2(self.act(self.pwconv1(y)))
        return x + (self.gamma * y).transpose(1, 2)


class FlowDenoiser(nn.Module):
    """The velocity model: noisy normalised log-mel ``x_t`` (B, n_mels, F), ``t`` (B,) and the projected condition
    (B, dim, F) (:meth:`condition`) -> velocity (B, n_mels, F). Dilated ConvNeXt blocks over time, each modulated by
    an embedding of ``t``; the condition is added to the input embedding."""

    def __init__(self, *, n_mels: int, cond_dim: int, dim: int, intermediate_dim: int, n_layers: int):
        super().__init__()
        self.inp = nn.Conv1d(n_mels, dim, KERNEL, padding=KERNEL // 2)
        self.cond = nn.Linear(cond_dim, dim)
        self.time = nn.Sequential(nn.Linear(TIME_FEATURES, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU())
        self.blocks = nn.ModuleList(
            FlowBlock(dim, intermediate_dim, dilation=DILATIONS[i % len(DILATIONS)], layer_scale=1.0 / n_layers)
            for i in range(n_layers)
        )
        self.out_norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, n_mels)

    def condition(self, cond: torch.Tensor) -> torch.Tensor:
        """The 100 Hz features (B, F, cond_dim) -> (B, dim, F), computed once per clip and reused at every step."""
        return self.cond(cond).transpose(1, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond_h: torch.Tensor) -> torch.Tensor:
        h = self.inp(x) + cond_h
        temb = self.time(time_features(t))
        for block in self.blocks:
            h = block(h, temb)
        return self.out(self.out_norm(h.transpose(1, 2))).transpose(1, 2)


def flow_targets(x1: torch.Tensor, *, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One flow-matching draw for clean (normalised) mels ``x1`` (B, n_mels, F): -> (``x_t``, ``t`` (B,), the target
    velocity ``x1 - x0``), ``t`` uniform in [0, 1) and ``x0`` Gaussian, from ``generator`` (None: torch's RNG)."""
    t = torch.rand(x1.shape[0], generator=generator, device=x1.device, dtype=x1.dtype)
    x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
    tt = t[:, None, None]
    return tt * x1 + (1 - tt) * x0, t, x1 - x0


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error of (B, n_mels, F) tensors over the valid frames ``mask`` (B, F)."""
    err = (pred - target) ** 2
    if mask is None:
        return err.mean()
    m = mask[:, None, :].to(err.dtype)
    return (err * m).sum() / (m.sum() * pred.shape[1]).clamp(min=1)


def _clip_norms(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B, 1, 1): each item's L2 norm."""
    return x.flatten(1).norm(dim=1).clamp(min=1e-12)[:, None, None]


def sample(denoiser: FlowDenoiser, cond_h: torch.Tensor, noise: torch.Tensor, *, steps: int,
           guidance: float = 0.0, log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None,
           mask: torch.Tensor | None = None) -> torch.Tensor:
    """Euler integration of the flow from ``noise`` (B, n_mels, F) at t = 0 to a normalised mel at t = 1 in
    ``steps`` equal steps. With ``guidance > 0``, ``log_prob(x̂_1) -> (B,)`` (differentiable) guides every step (see
    the module doc); ``mask`` (B, F) valid frames keeps padding out of the guidance. Deterministic given ``noise``.
    Works inside ``torch.inference_mode()`` (the guidance gradient is taken in a normal autograd context)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    guided = guidance > 0 and log_prob is not None
    x = noise
    dt = 1.0 / steps
    for i in range(steps):
        t = torch.full((x.shape[0],), i * dt, device=x.device, dtype=x.dtype)
        if not guided:
            v = denoiser(x, t, cond_h)
        else:
            with torch.inference_mode(False), torch.enable_grad():
                xg = x.detach().clone().requires_grad_(True)  # a normal tensor even under inference mode
                v = denoiser(xg, t.clone(), cond_h.clone())
                x1_hat = xg + (1 - i * dt) * v
                (g,) = torch.autograd.grad(log_prob(x1_hat).sum(), xg)
            v = v.detach()
            if mask is not None:
                g = g * mask[:, None, :].to(g.dtype)
            v = v + guidance * (_clip_norms(v) / _clip_norms(g)) * g
        x = x + dt * v
    return x


def word_log_prob(judge: nn.Module, log_mel: torch.Tensor, words: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """log p_judge(words | mel): the content judge's frame log-probabilities of the target words, summed over the
    (valid) video frames. log_mel (B, n_mels, 4T), words (B, T) long, mask (B, T) bool -> (B,)."""
    logp = torch.log_softmax(judge(log_mel).float(), dim=-1)  # (B, T', V)
    n = min(logp.shape[1], words.shape[1])
    picked = logp[:, :n].gather(-1, words[:, :n, None])[..., 0]
    if mask is not None:
        picked = picked * mask[:, :n].to(picked.dtype)
    return picked.sum(dim=1)
