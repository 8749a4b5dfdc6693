"""The assembled lip-to-speech model and its variants (one code path, chosen by ``ModelConfig.variant``).

| variant             | path after the visual front end                                            |
|---------------------|-----------------------------------------------------------------------------|
| ``mel-gl``          | MelHead → Griffin-Lim (Lip2Wav-style)                                       |
| ``mel-vocoder``     | MelHead → ISTFTGenerator trained on real mels (the cascade)                 |
| ``naturall2s-noddsp``| F0Head + ISTFTGenerator(prior=None)                                        |
| ``naturall2s``      | F0Head + ControlHead → HarmonicPlusNoise (DDSP prior) → ISTFTGenerator(prior)|
| ``units``           | MelHead + UnitHead → ISTFTGenerator(mel + unit embeddings) (Choi, Kim & Ro 2023) |
| ``ltbs``            | variance adaptor + mel decoder + flow post-net → ISTFTGenerator (Kim et al. 2024)    |
| ``lipvoicer``       | flow-matching denoiser over the log-mel, guided by the content judge → ISTFTGenerator  |
|                     | (after Yemini et al., ICLR 2024: the judge's gradient toward the word head's reading)     |

Every variant keeps the lip-reading CTC head: its greedy decoding is the "lip-read text".
Models take tensors; :meth:`LipToSpeech.synthesize` is the one place a video (or a prepared
:class:`~naturall2s.roi.MouthClip`) becomes tensors.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import torch.nn as nn

from naturall2s import audio
from naturall2s.content import JudgeConfig, WordJudge
from naturall2s.errors import NaturalL2SError
from naturall2s.flow import FlowDenoiser, flow_targets, sample, word_log_prob
from naturall2s.grid import GRID_VOCAB, tokens_to_text
from naturall2s.encoders import CTCHead, VisualFrontEnd, WordHead
from naturall2s.generator import PRIOR_MODES, ISTFTGenerator
from naturall2s.heads import ControlHead, F0Head, FrameUpsampler, MelHead, UnitHead
from naturall2s.ltbs import AcousticModel, check_temperature, config_dict as ltbs_config_dict
from naturall2s.retrieval import FrameIndex
from naturall2s.synths import HarmonicPlusNoise
from naturall2s.units import DEFAULT_UNITS, UNIT_FEATURE_DIM, Codebook, encode

VARIANTS = ("mel-gl", "mel-vocoder", "naturall2s-noddsp", "naturall2s", "units", "ltbs", "lipvoicer")
# Seed of :meth:`LipToSpeech.synthesize`'s own random generator (the DDSP noise excitation, the ltbs post-net's
# noise and the lipvoicer variant's starting noise are its only randomness: eval mode has no dropout, Griffin-Lim
# starts from zero phase): the same clip and model give the same waveform in the CLI, the Python API, the studio and
# the evaluation, whatever the caller's RNG state.
DEFAULT_SEED = 0
MEL_VARIANTS = ("mel-gl", "mel-vocoder", "units")  # the speech path starts with a MelHead
# a vocoder reads the (predicted) mel: ``LipToSpeech.vocoder``
VOCODER_VARIANTS = ("mel-vocoder", "units", "ltbs", "lipvoicer")
SAMPLING_VARIANTS = ("lipvoicer",)  # the mel is sampled (synthesize's ``steps`` and ``guidance``)


@dataclass
class ModelConfig:
    """Architecture of one model; stored inside every checkpoint (whisper's ModelDimensions)."""

    variant: str = "naturall2s"
    roi_size: tuple[int, int] = (32, 48)
    lip_dim: int = 40
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 4
    dropout: float = 0.1
    vocab_size: int = len(GRID_VOCAB) + 1  # + CTC blank at index 0
    head_hidden: int = 256
    head_kernel_size: int = 5  # convs of the 100 Hz heads and the upsampler
    n_harmonics: int = 64
    n_noise_bands: int = 65
    gen_dim: int = 256
    gen_intermediate_dim: int = 512
    gen_layers: int = 6
    feature_dropout: float = 0.0  # dropout on front-end features before the speech heads
    # frame-level word classifier on the front end; its posteriors, embedded, are added to the (dropped-out)
    # features the speech heads read: learned text guidance, from the video alone at inference
    word_head: bool | None = None  # None: the variant's default (on for lipvoicer, whose guidance reads it; else off)
    # scale of the gradient from the DDSP synthesizer into the F0 predictor (1: plain end to end). Oscillator-phase
    # gradients are large and erratic; at 1 they pushed the F0 head into its bounds within 100 steps on GRID.
    f0_grad_scale: float = 1.0
    # how the generator uses the DDSP prior (generator.PRIOR_MODES): "refine" rescales the prior's spectrum,
    # "excitation" takes only its phase and harmonic fine structure and predicts the envelope itself
    prior_mode: str = "refine"
    # the generator's additive branch gets its own phase instead of riding on the prior's (generator.ISTFTGenerator)
    prior_free_phase: bool = False
    # F0 head: 0 regresses log F0; > 0 classifies it over this many log-spaced pitch bins (heads.F0Head)
    f0_bins: int = 0
    # the speech heads also read a real log-mel retrieved from the training speaker's own frames by the front end's
    # features and word posteriors (naturall2s.retrieval; needs word_head), projected and added to their input
    retrieval_prior: bool = False
    # frames in the retrieval index stored with the model (set when the index is attached; 0: none stored)
    retrieval_entries: int = 0
    # the ltbs variant's variance adaptor, mel decoder and flow post-net (naturall2s.ltbs.LTBSConfig as a dict: sizes
    # and the post-net's default temperature; filled with its defaults for ltbs, empty for the others)
    ltbs: dict = field(default_factory=dict)
    # the units variant: size of the speech-unit codebook (k-means over MFCCs, naturall2s.units; stored in the
    # checkpoint) that its UnitHead predicts and its vocoder reads beside the mel (0: the DEFAULT_UNITS); others 0
    n_units: int = 0
    unit_dim: int = 64  # the vocoder's unit embedding
    # the lipvoicer variant: its flow-matching denoiser over the log-mel (naturall2s.flow), the sampling defaults of
    # synthesize (Euler steps, classifier-guidance scale; chosen on val, stored with the model) and the architecture
    # of its content judge (naturall2s.content.JudgeConfig as a dict; the judge's weights are in the checkpoint)
    flow_dim: int = 192
    flow_intermediate_dim: int = 576
    flow_layers: int = 8
    sampling_steps: int = 10
    guidance_scale: float = 0.5
    judge: dict = field(default_factory=dict)
    sample_rate: int = audio.SAMPLE_RATE
    hop_length: int = audio.HOP_LENGTH
    n_fft: int = audio.N_FFT
    n_mels: int = audio.N_MELS

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.prior_mode not in PRIOR_MODES:
            raise ValueError(f"unknown prior_mode {self.prior_mode!r}; choose one of {', '.join(PRIOR_MODES)}")
        if self.f0_bins < 0 or self.f0_bins == 1:
            raise ValueError(f"f0_bins must be 0 (regression) or at least 2, got {self.f0_bins}")
        if self.word_head is None:  # the variant's default
            self.word_head = self.variant == "lipvoicer"
        if self.retrieval_prior and not self.word_head:
            raise ValueError("retrieval_prior needs word_head (the retrieval weighs candidates by word posteriors)")
        self.ltbs = ltbs_config_dict(self.variant, self.ltbs, n_mels=self.n_mels, retrieval_prior=self.retrieval_prior)
        if self.variant == "units":
            self.n_units = self.n_units or DEFAULT_UNITS
            if self.n_units < 2:
                raise ValueError(f"n_units must be at least 2 (the units' codebook size), got {self.n_units}")
            if self.unit_dim < 1:
                raise ValueError(f"unit_dim must be positive, got {self.unit_dim}")
        elif self.n_units:
            raise ValueError(f"n_units belongs to the units variant, not {self.variant}")
        if self.variant == "lipvoicer":
            if not self.word_head:
                raise ValueError("the lipvoicer variant guides its sampling toward the word head's reading: "
                                 "word_head must be true")
            check_sampling(self.sampling_steps, self.guidance_scale, what="the config's")
            if min(self.flow_dim, self.flow_intermediate_dim, self.flow_layers) < 1:
                raise ValueError("flow_dim, flow_intermediate_dim and flow_layers must be positive")
            judge = JudgeConfig.from_dict({**JudgeConfig().to_dict(), **self.judge}).to_dict()
            self.judge = {**judge, "dilations": list(judge["dilations"])}  # as JSON gives it back
        elif self.judge:
            raise ValueError(f"judge (the guidance's content judge) belongs to the lipvoicer variant, "
                             f"not {self.variant}")
        self.roi_size = tuple(self.roi_size)

    @property
    def uses_ddsp(self) -> bool:
        return self.variant == "naturall2s"

    @property
    def predicts_mel(self) -> bool:
        return self.variant in MEL_VARIANTS

    @property
    def samples_mel(self) -> bool:
        return self.variant in SAMPLING_VARIANTS

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)


@dataclass
class Synthesis:
    """What :meth:`LipToSpeech.synthesize` returns (numpy, ready to save or plot)."""

    wav: np.ndarray  # (N,) float32 in [-1, 1]
    sample_rate: int
    mel: np.ndarray  # (n_mels, F) log-mel of the output (predicted mel for mel variants)
    text: str  # greedy CTC lip-reading
    seconds: float  # model compute time
    f0: np.ndarray | None = None  # (F,) Hz, 0 where unvoiced
    voicing: np.ndarray | None = None  # (F,) probability of voicing
    coarse: np.ndarray | None = None  # (N,) DDSP prior waveform (naturall2s only)
    extras: dict = field(default_factory=dict)


class LipToSpeech(nn.Module):
    """Visual front end + the speech path of one variant."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        self.name = c.variant
        self.frontend = VisualFrontEnd(
            in_size=c.roi_size, lip_dim=c.lip_dim, dim=c.dim, n_layers=c.n_layers, n_heads=c.n_heads, dropout=c.dropout
        )
        self.ctc = CTCHead(dim=c.dim, vocab_size=c.vocab_size)
        if c.word_head:
            self.word_head = WordHead(dim=c.dim, vocab_size=c.vocab_size)
            self.word_embed = nn.Linear(c.vocab_size, c.dim, bias=False)
            nn.init.zeros_(self.word_embed.weight)  # starts as the plain features (e.g. from an older lip reader)
        self.upsample = FrameUpsampler(
            dim=c.dim, factor=audio.SAMPLES_PER_VIDEO_FRAME // c.hop_length, kernel_size=c.head_kernel_size
        )
        self.feature_dropout = nn.Dropout(c.feature_dropout)
        if c.retrieval_prior:  # zero-initialised: starts as the model without the retrieved prior
            self.retrieval_proj = nn.Linear(c.n_mels, c.dim)
            nn.init.zeros_(self.retrieval_proj.weight)
            nn.init.zeros_(self.retrieval_proj.bias)
        if c.retrieval_entries:
            self.retrieval_index = FrameIndex(n_entries=c.retrieval_entries, dim=c.dim, n_mels=c.n_mels)
        if c.variant == "ltbs":  # naturall2s.ltbs: variance adaptor, mel decoder, flow post-net; a vocoder on its mel
            self.acoustic = AcousticModel(c)
            self.vocoder = self._generator(in_dim=c.n_mels, use_prior=False)
        elif c.predicts_mel:
            self.mel_head = MelHead(
                in_dim=c.dim, hidden=c.head_hidden, n_mels=c.n_mels, kernel_size=c.head_kernel_size
            )
            if c.variant in VOCODER_VARIANTS:
                self.vocoder = self._generator(in_dim=c.n_mels, use_prior=False, n_units=c.n_units)
            if c.variant == "units":
                self.unit_head = UnitHead(in_dim=c.dim, hidden=c.head_hidden, n_units=c.n_units,
                                          kernel_size=c.head_kernel_size)
                # the codebook (naturall2s.units.Codebook): all zeros until a training stage fits or inherits it
                self.register_buffer("unit_mean", torch.zeros(UNIT_FEATURE_DIM))
                self.register_buffer("unit_std", torch.ones(UNIT_FEATURE_DIM))
                self.register_buffer("unit_centroids", torch.zeros(c.n_units, UNIT_FEATURE_DIM))
        elif c.samples_mel:
            self.denoiser = FlowDenoiser(n_mels=c.n_mels, cond_dim=c.dim, dim=c.flow_dim,
                                         intermediate_dim=c.flow_intermediate_dim, n_layers=c.flow_layers)
            self.judge = WordJudge(JudgeConfig.from_dict(c.judge))
            for p in self.judge.parameters():  # a fixed part of the model: trained by its own stage (judge)
                p.requires_grad_(False)
            self.vocoder = self._generator(in_dim=c.n_mels, use_prior=False)
            # the per-bin statistics that normalise the log-mel for the flow (set by the flow stage; stored)
            self.register_buffer("flow_mel_mean", torch.zeros(c.n_mels))
            self.register_buffer("flow_mel_std", torch.ones(c.n_mels))
        else:
            self.f0_head = F0Head(in_dim=c.dim, hidden=c.head_hidden, kernel_size=c.head_kernel_size, n_bins=c.f0_bins)
            if c.uses_ddsp:
                self.control_head = ControlHead(
                    in_dim=c.dim,
                    hidden=c.head_hidden,
                    n_harmonics=c.n_harmonics,
                    n_noise_bands=c.n_noise_bands,
                    kernel_size=c.head_kernel_size,
                )
                self.synth = HarmonicPlusNoise(
                    sample_rate=c.sample_rate,
                    hop_length=c.hop_length,
                    n_harmonics=c.n_harmonics,
                    n_noise_bands=c.n_noise_bands,
                )
            self.generator = self._generator(in_dim=c.dim, use_prior=c.uses_ddsp)

    def _generator(self, *, in_dim: int, use_prior: bool, n_units: int = 0) -> ISTFTGenerator:
        c = self.config
        return ISTFTGenerator(
            in_dim=in_dim,
            dim=c.gen_dim,
            intermediate_dim=c.gen_intermediate_dim,
            n_layers=c.gen_layers,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            use_prior=use_prior,
            prior_mode=c.prior_mode,
            free_phase=use_prior and c.prior_free_phase,
            n_units=n_units,
            unit_dim=c.unit_dim,
        )

    # ---- the units variant's codebook (stored in the checkpoint) -------------------------------
    @property
    def has_codebook(self) -> bool:
        """True when the units' codebook is set (fitted by a training stage or loaded with the weights)."""
        return hasattr(self, "unit_centroids") and bool(self.unit_centroids.abs().sum() > 0)

    @property
    def codebook(self) -> Codebook:
        return Codebook(mean=self.unit_mean, std=self.unit_std, centroids=self.unit_centroids)

    def set_codebook(self, book: Codebook) -> None:
        if book.centroids.shape != self.unit_centroids.shape:
            raise ValueError(f"a codebook of {book.n_units} units for a model of {self.config.n_units}")
        for name, value in (("unit_mean", book.mean), ("unit_std", book.std), ("unit_centroids", book.centroids)):
            getattr(self, name).copy_(value.to(self.unit_centroids))

    def units_of(self, mel: torch.Tensor) -> torch.Tensor:
        """The speech units of log-mels under this model's codebook: (B, n_mels, F) -> (B, F) long (the unit head's
        targets; what the vocoder reads while it trains on real speech)."""
        if not self.has_codebook:
            raise ValueError("this units model has no codebook yet (a training stage fits it: naturall2s.units)")
        return encode(mel, self.unit_mean, self.unit_std, self.unit_centroids)

    # ---- the lipvoicer variant's mel statistics (stored in the checkpoint) -----------------------
    @property
    def has_mel_stats(self) -> bool:
        """True when the flow's mel normalisation is set (by the flow stage, or loaded with the weights)."""
        return hasattr(self, "flow_mel_mean") and bool((self.flow_mel_mean != 0).any()
                                                       or (self.flow_mel_std != 1).any())

    def set_mel_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-bin mean and std (n_mels,) of real log-mels: the flow runs on ``(mel - mean) / std``."""
        self.flow_mel_mean.copy_(mean.to(self.flow_mel_mean))
        self.flow_mel_std.copy_(std.clamp(min=1e-3).to(self.flow_mel_std))

    def normalise_mel(self, mel: torch.Tensor) -> torch.Tensor:
        return (mel - self.flow_mel_mean[:, None]) / self.flow_mel_std[:, None]

    def denormalise_mel(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.flow_mel_std[:, None] + self.flow_mel_mean[:, None]

    def sample_mel(self, h: torch.Tensor, words: torch.Tensor, *, steps: int, guidance: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """The lipvoicer variant's log-mel for the 100 Hz features ``h`` (B, 4T, dim): ``steps`` Euler steps of the
        flow from noise drawn from ``generator``, guided (``guidance`` > 0) by the content judge toward the frame
        words ``words`` (B, T) (:func:`naturall2s.flow.sample`). -> (B, n_mels, 4T)."""
        noise = torch.randn((h.shape[0], self.config.n_mels, h.shape[1]), generator=generator, device=h.device,
                            dtype=h.dtype)

        def log_prob(x1_hat: torch.Tensor) -> torch.Tensor:  # called where gradients are recorded
            return word_log_prob(self.judge, self.denormalise_mel(x1_hat), words.clone())

        x = sample(self.denoiser, self.denoiser.condition(h), noise, steps=steps, guidance=guidance,
                   log_prob=log_prob)
        return self.denormalise_mel(x)

    def train(self, mode: bool = True):
        """As nn.Module.train, but the lipvoicer variant's content judge stays in eval mode (a fixed recogniser: its
        batch-norm statistics are those of real speech)."""
        super().train(mode)
        if hasattr(self, "judge"):
            self.judge.eval()
        return self

    def attach_index(self, index: FrameIndex) -> None:
        """Store a retrieval index (of this model's own front-end features) with the model; it is saved with it."""
        self.retrieval_index = index.to(self.device)
        self.config.retrieval_entries = int(index.keys.shape[0])

    def postnet_options(self, postnet: bool = True, temperature: float | None = None) -> dict:
        """The ltbs variant's post-net options for :meth:`decode` (``{"postnet": bool, "temperature": float}``, the
        config's temperature when None), checked; ``{}`` for another variant, which has none to set (NaturalL2SError
        when ``postnet=False`` or a temperature is asked of it, or for a bad value)."""
        from naturall2s.errors import NaturalL2SError

        if self.config.variant != "ltbs":
            if postnet is not True or temperature is not None:
                raise NaturalL2SError(f"postnet and temperature are options of the ltbs variant's flow post-net; a "
                                      f"{self.config.variant} model has none")
            return {}
        if not isinstance(postnet, bool):
            raise NaturalL2SError(f"postnet must be True or False, got {postnet!r}")
        if temperature is None:
            temperature = self.config.ltbs["postnet_temperature"]
        try:
            t = check_temperature(temperature, what="the post-net's temperature")
            return {"postnet": postnet, "temperature": t}
        except ValueError as e:
            raise NaturalL2SError(str(e)) from None

    # ---- tensors in, tensors out -------------------------------------------------------------
    def encode(self, roi: torch.Tensor, lips: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """roi (B,T,H,W) uint8 or float in [0,1], lips (B,T,lip_dim), mask (B,T) valid → features (B,T,dim)."""
        if roi.dtype == torch.uint8:
            roi = roi.float() / 255.0
        return self.frontend(roi, lips.float(), mask)

    def decode(self, feats: torch.Tensor, *, f0_hz: torch.Tensor | None = None,
               generator: torch.Generator | None = None,
               retrieved: torch.Tensor | None = None, vocode: bool = True, teacher: dict | None = None,
               postnet: bool = True, temperature: float | None = None, flow_mel: torch.Tensor | None = None,
               steps: int | None = None, guidance: float | None = None,
               unit_input: bool = True) -> dict[str, torch.Tensor]:
        """Front-end features (B,T,dim) @25 fps → the variant's speech outputs.

        Returns a dict with ``ctc_log_probs`` (B,T,V), ``word_logits`` (B,T,V) with ``word_head``, and, per variant, ``mel`` (B,n_mels,4T) /
        ``log_f0``, ``voicing_logit``, ``loudness`` (B,4T), ``coarse`` (B,N), ``wav`` (B,N).
        ``f0_hz`` (B,4T) overrides the predicted F0 that drives the DDSP synthesizer (teacher forcing).
        ``generator`` draws the synthesizer's noise (None: torch's global RNG, as in training).
        ``retrieved`` (B,n_mels,4T): the retrieved real log-mel of a ``retrieval_prior`` model (None: retrieved from
        the model's own index).
        The ltbs variant (:class:`naturall2s.ltbs.AcousticModel`) returns ``mel`` (the post-net's, or with
        ``postnet=False`` the decoder's), ``decoder_mel`` and its pitch and energy predictions ``log_f0``,
        ``voicing_logit``, ``loudness``; ``temperature`` (None: the config's) scales the post-net's noise, drawn from
        ``generator``. Given ``teacher`` (the real ``f0``, ``voiced``, ``loudness``, ``mel``, ``mask``: its training)
        the real pitch and energy drive its decoder and it returns the post-net's ``postnet_z``, ``postnet_logdet``
        instead of ``mel`` and ``wav``.
        The units variant also returns ``unit_logits`` (B,4T,n_units) and ``units`` (B,4T) (their argmax, what its
        vocoder reads beside the predicted mel); ``vocode=False`` stops a vocoder variant before its vocoder (the
        lip-reading stage's training steps, which do not train it).
        The lipvoicer variant samples ``mel`` with ``steps`` Euler steps and classifier guidance ``guidance`` (None:
        the config's ``sampling_steps`` / ``guidance_scale``), the starting noise from ``generator``, and returns
        ``words`` (B,T), the word head's reading it was guided toward; given ``flow_mel`` (B,n_mels,4T), real
        log-mels, it instead returns one flow-matching draw (the flow stage's training): ``velocity`` and
        ``velocity_target`` (B,n_mels,4T), the draw's noise and time from ``generator``, and the denoiser's clean
        estimate ``mel_estimate`` (B,n_mels,4T), a log-mel (what the guidance shows the judge at that time).
        """
        out: dict[str, torch.Tensor] = {"ctc_log_probs": self.ctc(feats)}
        h = self.feature_dropout(feats)
        if self.config.word_head:
            out["word_logits"] = self.word_head(feats)
            h = h + self.word_embed(torch.softmax(out["word_logits"], dim=-1).to(h.dtype))
        h = self.upsample(h)  # (B,4T,dim) @100 Hz
        if self.config.variant == "ltbs":
            words = torch.softmax(out["word_logits"], dim=-1) if self.config.word_head else None
            out.update(self.acoustic(h, words, teacher=teacher, postnet=postnet, temperature=temperature,
                                     generator=generator))
            if vocode and "mel" in out:
                out["wav"] = self.vocoder(out["mel"].transpose(1, 2))
            return out
        if self.config.retrieval_prior:
            if retrieved is None:
                if not hasattr(self, "retrieval_index"):
                    raise ValueError("this model reads a retrieved prior but stores no retrieval index")
                retrieved = self.retrieval_index.retrieve(feats, torch.log_softmax(out["word_logits"], dim=-1))
            h = h + self.retrieval_proj(retrieved[..., : h.shape[1]].transpose(1, 2).to(h.dtype))
        if self.config.samples_mel:
            if flow_mel is not None:
                x_t, t, out["velocity_target"] = flow_targets(self.normalise_mel(flow_mel[..., : h.shape[1]]),
                                                              generator=generator)
                out["velocity"] = self.denoiser(x_t, t, self.denoiser.condition(h))
                out["mel_estimate"] = self.denormalise_mel(x_t + (1 - t)[:, None, None] * out["velocity"])
                return out
            out["words"] = out["word_logits"].argmax(-1)
            steps, guidance = self.sampling_options(steps, guidance)
            out["mel"] = self.sample_mel(h, out["words"], steps=steps, guidance=guidance, generator=generator)
            if vocode:
                out["wav"] = self.vocoder(out["mel"].transpose(1, 2))
            return out
        if self.config.predicts_mel:
            out["mel"] = self.mel_head(h)
            units = None
            if self.config.variant == "units":
                out["unit_logits"] = self.unit_head(h)
                units = out["units"] = out["unit_logits"].argmax(-1)
                if not unit_input:  # the ablation: every unit equally likely, so the vocoder hears no content from them
                    units = torch.full_like(out["unit_logits"], 1.0 / self.config.n_units)
            if self.config.variant in VOCODER_VARIANTS and vocode:
                out["wav"] = self.vocoder(out["mel"].transpose(1, 2), units=units)
            return out
        out.update(self.f0_head(h))
        prior = None
        if self.config.uses_ddsp:
            controls = self.control_head(h)
            voiced = torch.sigmoid(out["voicing_logit"])
            f0 = f0_hz if f0_hz is not None else _scale_grad(torch.exp(out["log_f0"]), self.config.f0_grad_scale)
            synth = self.synth(
                f0,
                controls["amplitude"] * voiced,
                controls["harmonic_distribution"],
                controls["noise_magnitudes"],
                generator=generator,
            )
            prior = out["coarse"] = synth["signal"]
        out["wav"] = self.generator(h, prior)
        return out

    def forward(self, roi=None, lips=None, mask=None, *, feats=None, mel=None, units=None, f0_hz=None,
                generator=None, retrieved=None, vocode: bool = True, teacher=None, postnet: bool = True,
                temperature=None, flow_mel=None, steps=None, guidance=None, unit_input=True) -> dict[str, torch.Tensor]:
        """Video tensors (or precomputed front-end ``feats``) → :meth:`decode`'s outputs (``teacher``, ``postnet``,
        ``temperature``: the ltbs variant's; ``flow_mel``, ``steps``, ``guidance``: the lipvoicer variant's;
        ``unit_input``: the units variant's).

        ``mel`` (B,n_mels,F) instead runs only the vocoder on it (how the cascade's vocoder trains on real mels),
        with ``units`` (B,F) for the units variant's (the real speech's units, :meth:`units_of`).
        One entry point, so DistributedDataParallel sees every training path.
        """
        if mel is not None:
            return {"wav": self.vocoder(mel.transpose(1, 2), units=units)}
        if feats is None:
            feats = self.encode(roi, lips, mask)
        return self.decode(feats, f0_hz=f0_hz, generator=generator, retrieved=retrieved, vocode=vocode,
                           teacher=teacher, postnet=postnet, temperature=temperature, flow_mel=flow_mel, steps=steps,
                           guidance=guidance, unit_input=unit_input)

    def sampling_options(self, steps: int | None = None, guidance: float | None = None) -> tuple[int, float]:
        """(Euler steps, guidance scale) of a lipvoicer sampling: the given ones, checked, or the config's defaults
        (chosen on val). NaturalL2SError for a bad value, or for either given to a variant that does not sample."""
        if not self.config.samples_mel:
            if steps is not None or guidance is not None:
                raise NaturalL2SError(f"steps and guidance are options of the sampling variants "
                                      f"({', '.join(SAMPLING_VARIANTS)}); a {self.config.variant} model has none")
            return 0, 0.0
        steps = self.config.sampling_steps if steps is None else steps
        guidance = self.config.guidance_scale if guidance is None else guidance
        try:
            check_sampling(steps, guidance)
        except ValueError as e:
            raise NaturalL2SError(str(e)) from None
        return int(steps), float(guidance)

    # ---- video in, audio out -----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.inference_mode()
    def synthesize(self, video, *, detector=None, max_seconds: float | None = None,
                   seed: int = DEFAULT_SEED, postnet: bool = True, temperature: float | None = None,
                   steps: int | None = None, guidance: float | None = None, unit_input: bool = True) -> Synthesis:
        """Speech for a silent talking-face video.

        ``video``: a path, :class:`~naturall2s.video.VideoData` or a prepared :class:`~naturall2s.roi.MouthClip`
        (the studio and the evaluator prepare a clip once and run every model on it). ``seed`` seeds a
        generator of this call's own (the noise excitation): the same clip, model and seed give the same
        waveform (bitwise, on the same device and thread count); torch's global RNG is neither used nor advanced.
        ``postnet`` and ``temperature`` (the ltbs variant only): ``postnet=False`` gives the mel decoder's output
        without the flow post-net (the ablation); ``temperature`` scales the post-net's noise (0: z = 0; None: the
        model's default, ``config.ltbs["postnet_temperature"]``). NaturalL2SError for a bad value or another variant.
        ``steps`` and ``guidance`` (the lipvoicer variant only): Euler steps of the flow and the scale of the content
        judge's classifier guidance (0: none); None takes the model's defaults, chosen on val
        (``config.sampling_steps``, ``config.guidance_scale``). NaturalL2SError for bad values or for a variant that
        does not sample. ``unit_input=False`` (the units variant only, its ablation): the vocoder reads every unit as
        equally likely, so only the mel carries content.
        """
        from naturall2s.roi import MouthClip, extract_mouth

        if unit_input is not True and not (unit_input is False and self.config.variant == "units"):
            raise NaturalL2SError(f"unit_input=False is the units variant's ablation (True or False); got "
                                  f"{unit_input!r} for a {self.config.variant} model")

        postnet_options = self.postnet_options(postnet, temperature)  # checked before any video is read
        steps, guidance = self.sampling_options(steps, guidance)
        sampling = {"steps": steps, "guidance": guidance} if self.config.samples_mel else {}
        if not isinstance(video, MouthClip):
            kwargs = {"detector": detector}
            if max_seconds is not None:
                kwargs["max_seconds"] = max_seconds
            video = extract_mouth(video, **kwargs)
        was_training = self.training
        self.eval()
        start = time.perf_counter()
        roi = torch.as_tensor(np.asarray(video.roi), device=self.device)[None]
        lips = torch.as_tensor(np.asarray(video.lips, dtype=np.float32), device=self.device)[None]
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        out = self(roi, lips, generator=generator, **postnet_options, **sampling, unit_input=unit_input)
        if self.config.variant == "mel-gl":
            wav = audio.griffin_lim(out["mel"][0].float().cpu())
            wav = torch.as_tensor(wav)
        else:
            wav = out["wav"][0].float().cpu()
        wav = audio.soft_limit(wav)
        seconds = time.perf_counter() - start
        self.train(was_training)

        text = tokens_to_text(_ctc_greedy(out["ctc_log_probs"][0]))
        mel = out["mel"][0] if "mel" in out else audio.log_mel(wav)
        result = Synthesis(
            wav=wav.numpy().astype(np.float32),
            sample_rate=self.config.sample_rate,
            mel=mel.float().cpu().numpy(),
            text=text,
            seconds=seconds,
        )
        if "log_f0" in out:
            voicing = torch.sigmoid(out["voicing_logit"][0]).float().cpu()
            f0 = torch.exp(out["log_f0"][0]).float().cpu() * (voicing > 0.5)
            result.f0, result.voicing = f0.numpy(), voicing.numpy()
        if postnet_options:  # the ltbs variant: how its mel was made, and its predicted loudness (F,) dB
            result.extras.update(postnet_options, loudness=out["loudness"][0].float().cpu().numpy())
        if "coarse" in out:
            result.coarse = out["coarse"][0].float().cpu().clamp(-1, 1).numpy()
        if "units" in out:
            result.extras["units"] = out["units"][0].cpu().numpy()  # (F,) the predicted speech units
        if sampling:  # how it was sampled, and how well the judge hears the word head's reading in it
            words = out["words"]
            judged = word_log_prob(self.judge, out["mel"], words) / max(1, words.shape[1])
            result.extras.update(sampling, words=words[0].cpu().numpy(),
                                 judge_log_prob=float(judged[0]))  # mean per video frame
        return result

    def stream(self, **kw):
        """Live synthesis from camera frames: a :class:`naturall2s.stream.LiveSynth` (``push(frame)`` -> samples,
        ``flush()``); keywords ``lookahead`` (s), ``window`` (s), ``hop`` (frames), ``threads``, ``crossfade``, ``seed``."""
        from naturall2s.stream import LiveSynth

        return LiveSynth(self, **kw)


def check_sampling(steps, guidance, *, what: str = "") -> None:
    """ValueError unless ``steps`` is an int ≥ 1 and ``guidance`` a finite number ≥ 0."""
    prefix = f"{what} " if what else ""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"{prefix}sampling steps must be a whole number of at least 1, got {steps!r}")
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float, np.number)) or not np.isfinite(guidance) \
            or guidance < 0:
        raise ValueError(f"{prefix}guidance scale must be a finite number of at least 0, got {guidance!r}")


def _scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` in the forward pass; its gradient multiplied by ``scale`` in the backward pass."""
    if scale == 1.0:
        return x
    return x * scale + x.detach() * (1.0 - scale)


def _ctc_greedy(log_probs: torch.Tensor) -> list[int]:
    """(T,V) log-probabilities → token ids: best path, repeats collapsed, blanks (0) removed."""
    best = log_probs.argmax(-1).tolist()
    tokens, prev = [], 0
    for t in best:
        if t != prev and t != 0:
            tokens.append(t)
        prev = t
    return tokens


def ctc_greedy_batch(log_probs: torch.Tensor, lengths: torch.Tensor | None = None) -> list[list[int]]:
    """(B,T,V) → token ids per item (greedy CTC), honouring valid ``lengths``."""
    out = []
    for i in range(log_probs.shape[0]):
        n = int(lengths[i]) if lengths is not None else log_probs.shape[1]
        out.append(_ctc_greedy(log_probs[i, :n]))
    return out


def build(variant: str, **overrides) -> LipToSpeech:
    """A fresh (untrained) model of a variant: ``build("naturall2s", dim=128)``."""
    return LipToSpeech(ModelConfig(variant=variant, **overrides))

