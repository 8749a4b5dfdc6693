"""The ``ltbs`` variant's speech path, after Kim et al., "Let There Be Sound: Reconstructing High Quality Speech from
Silent Videos" (AAAI 2024), at CPU scale: a FastSpeech2-style variance adaptor, a mel decoder and a flow-based
post-net between the shared lip reader and the cascade's vocoder.

```
features @100 Hz (front end + embedded word posteriors, upsampled: the model's shared path)
   + word posteriors @100 Hz ─word_embed (zero-init)─▶ (+)                      [linguistic conditioning]
   ─pitch predictor─▶ log-F0, voicing ─bucketize─▶ pitch embedding (+)            [real pitch while training]
   ─energy predictor─▶ loudness (dB) ─bucketize─▶ energy embedding (+)            [real loudness while training]
   ─MelDecoder (ConvNeXt blocks)─▶ decoder mel (B, n_mels, F), hidden (B, dim, F)
   ─PostNetFlow⁻¹(z; decoder mel, hidden), z = temperature·N(0, I)─▶ residual ─(+ decoder mel)─▶ mel
   ─the cascade's vocoder (LipToSpeech.vocoder)─▶ waveform
```

Training (``train --variant ltbs --stage synth``, :mod:`naturall2s.ltbs_training`): the predictors regress the cached
(pyworld) log-F0 / voicing and the A-weighted loudness; their embeddings take the *real* values (teacher forcing,
as FastSpeech2's variance adaptor), the predicted ones at inference; the decoder's log-mel L1 against the real mel;
the post-net is a conditional normalising flow over mel frames (Glow steps: act-norm, invertible 1x1 convolution
over the mel bins, affine coupling whose scale and shift come from a conv net over time conditioned on the decoder's
output), trained by the maximum likelihood of the residual ``real mel - decoder mel`` (the condition detached: the
decoder learns from its L1 only, so switching the post-net off gives exactly the decoder's mel, the ablation). At
inference the residual is the flow's inverse of ``z = temperature · ε`` (``temperature`` 0: z = 0).

Pure functions (shapes in their docstrings): :func:`pitch_index`, :func:`energy_index`, :func:`postnet_nll`,
:func:`check_temperature`. Modules: :class:`VarianceAdaptor`, :class:`MelDecoder`, :class:`ActNorm`,
:class:`InvConv1x1`, :class:`AffineCoupling`, :class:`PostNetFlow` (``forward`` x -> (z, logdet), ``inverse`` z -> x)
and :class:`AcousticModel` (all of it; ``LipToSpeech.acoustic``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn

from naturall2s.audio import F0_MAX, F0_MIN
from naturall2s.generator import ConvNeXtBlock
from naturall2s.heads import LOUDNESS_OFFSET_DB, LOUDNESS_SCALE_DB, MEL_INIT_BIAS, ConvBlock, ConvStack
from naturall2s.synths import upsample_frames

ENERGY_RANGE_DB = (-90.0, 0.0)  # loudness (audio.loudness, dBFS) bucketized over this range; GRID s1: -87 .. -11
LOG_SCALE_MAX = 3.0  # the coupling's log-scale is soft-clipped to ±this (tanh): exp(3) ≈ 20x per step at most
LOSS_KEYS = ("decoder/l1", "pitch/l1", "pitch/vuv", "energy/l1", "flow/nll")  # its losses (losses.DEFAULT_LAMBDAS)


@dataclass
class LTBSConfig:
    """The ``ltbs`` part of :class:`naturall2s.model.ModelConfig` (its ``ltbs`` dict). Widths follow the model's:
    the decoder is ``gen_dim`` wide (ConvNeXt MLP ``gen_intermediate_dim``), the predictors ``head_hidden``;
    ``postnet_hidden`` 0 means ``head_hidden // 2``."""

    decoder_layers: int = 4  # ConvNeXt blocks of the mel decoder
    variance_kernel: int = 3  # conv kernel of the pitch and energy predictors (FastSpeech2's 3; odd)
    pitch_bins: int = 128  # log-F0 buckets of the pitch embedding (F0_MIN..F0_MAX: 26 cents each) + one for unvoiced
    energy_bins: int = 64  # loudness buckets of the energy embedding (ENERGY_RANGE_DB: 1.4 dB each)
    postnet_steps: int = 4  # flow steps (act-norm, 1x1 conv, affine coupling)
    postnet_layers: int = 2  # residual conv blocks of each coupling's network
    postnet_hidden: int = 0  # width of the coupling networks (0: head_hidden // 2)
    postnet_kernel: int = 5  # their conv kernel (frames at 100 Hz)
    # z = temperature · N(0, I) at inference (0: z = 0, deterministic); the default of synthesize, chosen on val
    # (scripts/postnet_ablation.py) and stored with the model at composition (--arch '{"ltbs": {...}}')
    postnet_temperature: float = 0.0

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "postnet_temperature":
                self.postnet_temperature = check_temperature(v, what="ltbs.postnet_temperature")
            elif isinstance(v, bool) or not isinstance(v, int) or v < (0 if f.name == "postnet_hidden" else 1):
                raise ValueError(f"ltbs.{f.name} must be a whole number of at least "
                                 f"{0 if f.name == 'postnet_hidden' else 1}, got {v!r}")
        for name in ("variance_kernel", "postnet_kernel"):
            if getattr(self, name) % 2 == 0:
                raise ValueError(f"ltbs.{name} must be odd (centred convs), got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: dict) -> "LTBSConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ltbs config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def config_dict(variant: str, given: dict, *, n_mels: int, retrieval_prior: bool) -> dict:
    """``ModelConfig.ltbs`` checked and completed with the defaults (ValueError): the ltbs variant's whole
    :class:`LTBSConfig` as a dict; any other variant's must be empty."""
    if variant != "ltbs":
        if given:
            raise ValueError(f"the ltbs config belongs to the ltbs variant, not {variant}")
        return {}
    if n_mels % 2:
        raise ValueError(f"the ltbs post-net's coupling splits the mel bins in halves: n_mels must be even, "
                         f"got {n_mels}")
    if retrieval_prior:
        raise ValueError("the ltbs variant does not read a retrieval prior (retrieval_prior must be false)")
    return asdict(LTBSConfig.from_dict(dict(given)))


def check_temperature(t, *, what: str = "temperature") -> float:
    """``t`` as a float when it is a finite number ≥ 0, else ValueError naming ``what``."""
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        raise ValueError(f"{what} must be a finite number of at least 0, got {t!r}")
    return float(t)


# ------------------------------------------------------------------------------------------ pure functions
def pitch_index(log_f0: torch.Tensor, voiced: torch.Tensor, n_bins: int, *, f0_min: float = F0_MIN,
                f0_max: float = F0_MAX) -> torch.Tensor:
    """FastSpeech2's pitch quantisation: (B, F) natural-log Hz and (B, F) bool voicing -> (B, F) long in
    [0, n_bins]: 0 where unvoiced, else 1 + the log-spaced bucket of ``[log f0_min, log f0_max]`` (values outside
    land in the first or last bucket)."""
    lo, hi = math.log(f0_min), math.log(f0_max)
    bucket = ((log_f0.float() - lo) / (hi - lo) * n_bins).floor().clamp(0, n_bins - 1).long()
    return torch.where(voiced.bool(), bucket + 1, torch.zeros_like(bucket))


def energy_index(loudness_db: torch.Tensor, n_bins: int, *, db_range: tuple[float, float] = ENERGY_RANGE_DB
                 ) -> torch.Tensor:
    """Loudness quantisation: (B, F) dB -> (B, F) long in [0, n_bins): the linear bucket of ``db_range``
    (values outside land in the first or last bucket)."""
    lo, hi = db_range
    return ((loudness_db.float() - lo) / (hi - lo) * n_bins).floor().clamp(0, n_bins - 1).long()


def postnet_nll(z: torch.Tensor, logdet: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Negative log-likelihood of the flow's input, in nats per mel value: z (B, C, F) the flow's output, logdet (B,)
    its log-determinant over the valid frames, mask (B, F) valid frames (None: all) -> scalar
    ``(Σ ½z² + ½·log 2π per value − Σ logdet) / (C · valid frames)`` under a standard normal base."""
    c = z.shape[1]
    m = torch.ones(z.shape[0], z.shape[2], dtype=z.dtype, device=z.device) if mask is None else mask.to(z.dtype)
    n_values = c * m.sum()
    sq = (z.pow(2) * m[:, None]).sum()
    return (0.5 * sq + 0.5 * math.log(2 * math.pi) * n_values - logdet.sum()) / n_values.clamp(min=1)


def _frame_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, 1, F) float mask for (B, C, F) tensors (all ones when ``mask`` is None)."""
    if mask is None:
        return torch.ones(x.shape[0], 1, x.shape[2], dtype=x.dtype, device=x.device)
    return mask[:, None, : x.shape[2]].to(x.dtype)


# --------------------------------------------------------------------------------------------- modules
class VarianceAdaptor(nn.Module):
    """FastSpeech2's pitch and energy predictors with their embeddings. (B, F, dim) -> (B, F, dim) + predictions.

    The pitch predictor reads the features; the energy predictor reads them plus the pitch embedding; each
    embedding (of the bucketized real value given ``teacher``, else of the prediction) is added to the features.
    """

    def __init__(self, *, dim: int, hidden: int, kernel_size: int, pitch_bins: int, energy_bins: int):
        super().__init__()
        self.pitch_bins, self.energy_bins = pitch_bins, energy_bins
        self.log_f0_min, self.log_f0_max = math.log(F0_MIN), math.log(F0_MAX)
        self.pitch = ConvStack(dim, hidden, 2, kernel_size=kernel_size)  # log-F0 (bounded), voicing logit
        self.energy = ConvStack(dim, hidden, 1, kernel_size=kernel_size)  # loudness (dB)
        self.pitch_embed = nn.Embedding(pitch_bins + 1, dim)
        self.energy_embed = nn.Embedding(energy_bins, dim)

    def forward(self, x: torch.Tensor, teacher: dict | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x (B, F, dim); ``teacher``: the real ``f0`` (B, F) Hz (0 unvoiced), ``voiced`` (B, F) bool and
        ``loudness`` (B, F) dB to embed instead of the predictions -> (x + embeddings, {``log_f0``, ``voicing_logit``,
        ``loudness``: the predictions (B, F)})."""
        raw = self.pitch(x)
        pred = {"log_f0": self.log_f0_min + (self.log_f0_max - self.log_f0_min) * torch.sigmoid(raw[..., 0]),
                "voicing_logit": raw[..., 1]}
        if teacher is not None:
            f = x.shape[1]
            p_idx = pitch_index(torch.log(teacher["f0"][:, :f].float().clamp(min=F0_MIN)), teacher["voiced"][:, :f],
                                self.pitch_bins)
        else:
            p_idx = pitch_index(pred["log_f0"], pred["voicing_logit"] > 0, self.pitch_bins)
        x = x + self.pitch_embed(p_idx)
        pred["loudness"] = LOUDNESS_OFFSET_DB + LOUDNESS_SCALE_DB * self.energy(x)[..., 0]
        loud = teacher["loudness"][:, : x.shape[1]] if teacher is not None else pred["loudness"]
        return x + self.energy_embed(energy_index(loud, self.energy_bins)), pred


class MelDecoder(nn.Module):
    """ConvNeXt blocks at 100 Hz: (B, F, in_dim) -> (mel (B, n_mels, F) natural-log, hidden (B, dim, F))."""

    def __init__(self, *, in_dim: int, dim: int, intermediate_dim: int, n_layers: int, n_mels: int):
        super().__init__()
        self.inp = nn.Conv1d(in_dim, dim, 1)
        self.blocks = nn.ModuleList(ConvNeXtBlock(dim, intermediate_dim, 1.0 / n_layers) for _ in range(n_layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, n_mels)
        nn.init.constant_(self.out.bias, MEL_INIT_BIAS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.inp(x.transpose(1, 2))
        for block in self.blocks:
            h = block(h)
        return self.out(self.norm(h.transpose(1, 2))).transpose(1, 2), h


class ActNorm(nn.Module):
    """Per-channel affine map ``y = x·exp(log_scale) + bias`` (identity at initialisation; Glow's act-norm without
    the data-dependent initialisation, so a resumed or composed model needs no first batch). (B, C, F) -> (B, C, F)."""

    def __init__(self, channels: int):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, F), m (B, 1, F) float mask -> (y, logdet (B,) = valid frames · Σ log_scale)."""
        y = (x * torch.exp(self.log_scale)[:, None] + self.bias[:, None]) * m
        return y, m.sum((1, 2)) * self.log_scale.sum()

    def inverse(self, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return (y - self.bias[:, None]) * torch.exp(-self.log_scale)[:, None] * m


class InvConv1x1(nn.Module):
    """Glow's invertible 1x1 convolution: the same C x C matrix mixes the channels of every frame (a random rotation
    at initialisation). (B, C, F) -> (B, C, F)."""

    def __init__(self, channels: int):
        super().__init__()
        w = torch.linalg.qr(torch.randn(channels, channels))[0]
        self.weight = nn.Parameter(w)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, F), m (B, 1, F) -> (W x, logdet (B,) = valid frames · log|det W|)."""
        return torch.einsum("ij,bjf->bif", self.weight, x), m.sum((1, 2)) * torch.linalg.slogdet(self.weight)[1]

    def inverse(self, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """W⁻¹ y, solved in float64 (sampling only: the round trip stays exact to float32 rounding)."""
        x = torch.linalg.solve(self.weight.double(), y.double().transpose(0, 1).reshape(y.shape[1], -1))
        return x.reshape(y.shape[1], y.shape[0], y.shape[2]).transpose(0, 1).to(y.dtype)


class MaskedConvBlock(ConvBlock):
    """:class:`naturall2s.heads.ConvBlock` that keeps padded frames at 0 and out of the conv: x (B, C, F), m (B, 1, F)
    -> ``(x + Conv(m·GELU(LayerNorm(x))))·m``, so a clip's frames do not depend on how much padding follows them."""

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return (x + self.conv(self.act(self.norm(x.transpose(1, 2)).transpose(1, 2)) * m)) * m


class AffineCoupling(nn.Module):
    """Affine coupling: the first half of the channels passes unchanged and, with the condition, gives the scale
    and shift of the second: ``y_b = x_b·exp(s) + t``, ``(s, t) = NN(x_a, cond)``, ``s`` soft-clipped to
    ±:data:`LOG_SCALE_MAX`. NN: a 1x1 projection of x_a plus one of the condition, ``n_layers`` residual conv blocks
    over time (:class:`MaskedConvBlock`: padding never reaches a valid frame), a zero-initialised 1x1 output (the
    coupling starts as the identity). (B, C, F) -> (B, C, F)."""

    def __init__(self, channels: int, cond_dim: int, hidden: int, n_layers: int, kernel_size: int):
        super().__init__()
        self.half = channels // 2
        self.inp = nn.Conv1d(self.half, hidden, 1)
        self.cond = nn.Conv1d(cond_dim, hidden, 1)
        self.blocks = nn.ModuleList(MaskedConvBlock(hidden, kernel_size) for _ in range(n_layers))
        self.out = nn.Conv1d(hidden, 2 * (channels - self.half), 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _scale_shift(self, xa: torch.Tensor, cond: torch.Tensor, m: torch.Tensor):
        h = (self.inp(xa) + self.cond(cond)) * m
        for block in self.blocks:
            h = block(h, m)
        raw_s, t = self.out(h).chunk(2, dim=1)
        return LOG_SCALE_MAX * torch.tanh(raw_s / LOG_SCALE_MAX) * m, t * m

    def forward(self, x: torch.Tensor, cond: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, F), cond (B, cond_dim, F), m (B, 1, F) -> (y, logdet (B,) = Σ s over valid frames)."""
        xa, xb = x[:, : self.half], x[:, self.half :]
        s, t = self._scale_shift(xa, cond, m)
        return torch.cat([xa, (xb * torch.exp(s) + t) * m], dim=1), s.sum((1, 2))

    def inverse(self, y: torch.Tensor, cond: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        ya, yb = y[:, : self.half], y[:, self.half :]
        s, t = self._scale_shift(ya, cond, m)
        return torch.cat([ya, (yb - t) * torch.exp(-s) * m], dim=1)


class PostNetFlow(nn.Module):
    """The flow-based post-net: ``n_steps`` Glow steps (act-norm, 1x1 conv, affine coupling) over the mel bins of
    every frame, conditioned on the decoder's output (its mel and hidden state, projected once to ``hidden``).

    ``forward(x, cond, mask)``: x (B, n_mels, F) -> (z (B, n_mels, F), logdet (B,)), the density direction (training:
    :func:`postnet_nll` of z); ``inverse(z, cond, mask)`` -> x, the sampling direction. cond (B, cond_dim, F),
    mask (B, F) valid frames or None; padded frames stay 0 and count in no log-determinant.
    """

    def __init__(self, *, channels: int, cond_dim: int, hidden: int, n_steps: int, n_layers: int, kernel_size: int):
        super().__init__()
        self.cond_proj = nn.Conv1d(cond_dim, hidden, 1)
        self.norms = nn.ModuleList(ActNorm(channels) for _ in range(n_steps))
        self.mixes = nn.ModuleList(InvConv1x1(channels) for _ in range(n_steps))
        self.couplings = nn.ModuleList(AffineCoupling(channels, hidden, hidden, n_layers, kernel_size)
                                       for _ in range(n_steps))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        m = _frame_mask(x, mask)
        c = self.cond_proj(cond)
        z, logdet = x * m, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for norm, mix, coupling in zip(self.norms, self.mixes, self.couplings):
            for step in (lambda v: norm(v, m), lambda v: mix(v, m), lambda v: coupling(v, c, m)):
                z, ld = step(z)
                logdet = logdet + ld
        return z, logdet

    def inverse(self, z: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        m = _frame_mask(z, mask)
        c = self.cond_proj(cond)
        x = z * m
        for norm, mix, coupling in zip(reversed(self.norms), reversed(self.mixes), reversed(self.couplings)):
            x = norm.inverse(mix.inverse(coupling.inverse(x, c, m), m), m)
        return x


class AcousticModel(nn.Module):
    """The ltbs speech path from the 100 Hz features to the mel (``LipToSpeech.acoustic``; see the module doc)."""

    def __init__(self, config):
        super().__init__()
        c, lt = config, LTBSConfig.from_dict(config.ltbs)
        self.config = lt
        self.word_embed = nn.Linear(c.vocab_size, c.dim, bias=False)  # its own linguistic conditioning (zero-init)
        nn.init.zeros_(self.word_embed.weight)
        self.variance = VarianceAdaptor(dim=c.dim, hidden=c.head_hidden, kernel_size=lt.variance_kernel,
                                        pitch_bins=lt.pitch_bins, energy_bins=lt.energy_bins)
        self.decoder = MelDecoder(in_dim=c.dim, dim=c.gen_dim, intermediate_dim=c.gen_intermediate_dim,
                                  n_layers=lt.decoder_layers, n_mels=c.n_mels)
        self.postnet = PostNetFlow(channels=c.n_mels, cond_dim=c.n_mels + c.gen_dim,
                                   hidden=lt.postnet_hidden or max(1, c.head_hidden // 2), n_steps=lt.postnet_steps,
                                   n_layers=lt.postnet_layers, kernel_size=lt.postnet_kernel)

    def forward(self, h: torch.Tensor, word_probs: torch.Tensor | None = None, *, teacher: dict | None = None,
                postnet: bool = True, temperature: float | None = None,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """h (B, F, dim) the shared 100 Hz features; ``word_probs`` (B, F/4, V) the word head's posteriors at the
        video rate (None: no word head).

        Without ``teacher`` (inference): the predicted pitch and energy drive the decoder; ``mel`` (B, n_mels, F) is
        the post-net's refinement of the decoder's mel with ``z = temperature·ε`` (``temperature`` None: the config's;
        ε from ``generator``), or the decoder's mel itself with ``postnet=False``. Returns ``mel``,
        ``decoder_mel``, ``log_f0``, ``voicing_logit``, ``loudness`` (B, F).

        With ``teacher`` (training): the real ``f0``, ``voiced``, ``loudness`` (B, F) drive the decoder, and its
        real ``mel`` (B, n_mels, F) (``mask`` (B, F) its valid frames, optional) gives the post-net's density terms:
        returns the predictions, ``decoder_mel``, ``postnet_z`` (B, n_mels, F) and ``postnet_logdet`` (B,) of the
        residual (the decoder's output detached in the condition); no ``mel``.
        """
        if word_probs is not None:
            factor = h.shape[1] // word_probs.shape[1]
            h = h + self.word_embed(upsample_frames(word_probs.to(h.dtype), factor))
        x, out = self.variance(h, teacher)
        dec_mel, hidden = self.decoder(x)
        out["decoder_mel"] = dec_mel
        if teacher is not None:
            mask = teacher.get("mask")
            cond = torch.cat([dec_mel, hidden], dim=1).detach()
            residual = teacher["mel"][..., : dec_mel.shape[-1]].to(dec_mel.dtype) - dec_mel.detach()
            out["postnet_z"], out["postnet_logdet"] = self.postnet(residual, cond, mask)
            return out
        if not postnet:
            out["mel"] = dec_mel
            return out
        t = self.config.postnet_temperature if temperature is None else check_temperature(temperature)
        z = torch.zeros_like(dec_mel)
        if t > 0:
            z = t * torch.randn(dec_mel.shape, generator=generator, device=dec_mel.device, dtype=dec_mel.dtype)
        out["mel"] = dec_mel + self.postnet.inverse(z, torch.cat([dec_mel, hidden], dim=1))
        return out
