"""Training losses (DAC style): every function returns a dict of scalar tensors with namespaced keys, and
:func:`weighted_sum` combines them with an explicit weight per key (:data:`DEFAULT_LAMBDAS`).

Padding: every loss over padded batches takes ``mask`` (True = valid). Waveform losses accept a sample mask
(B, N) or a frame mask (B, F) at any rate with N divisible by F (each frame covers N / F samples); masked
samples are zeroed in both signals and masked STFT frames (those whose centre sample is padding) do not count.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from naturall2s import audio
from naturall2s.audio import SAMPLE_RATE

STFT_RESOLUTIONS = ((256, 64, 256), (512, 128, 512), (1024, 256, 1024))  # (n_fft, hop, win)
MEL_SCALES = ((256, 64, 40), (512, 128, 80), (1024, 256, 128))  # (n_fft = win, hop, n_mels)
MAG_FLOOR = 1e-5  # clamp before log-magnitude / log-mel
F0_CE_SIGMA_CENTS = 25.0  # width of the pitch-classification target (CREPE: 25 cents)

DEFAULT_LAMBDAS: dict[str, float] = {
    "ctc": 1.0,
    "word/ce": 0.5,  # frame-level word classification (GRID .align timings)
    "melhead/l1": 1.0,  # train.py: predicted log-mel vs. the cached one (mel variants)
    "stft/sc": 1.0,
    "stft/mag": 1.0,
    "mel/l1": 5.0,
    "prior/sc": 1.0,  # the same STFT loss on the DDSP prior waveform
    "prior/mag": 1.0,
    "f0/l1": 5.0,  # |Δ log f0| of 0.1 ≈ 170 cents
    "f0/ce": 1.0,  # pitch classification (only a classifying F0 head, ModelConfig.f0_bins > 0, has it)
    "vuv/bce": 1.0,
    "loud/l1": 0.05,  # in dB
    "stoi/neg": 0.0,  # negative differentiable ESTOI of the waveform (torch_stoi); 0: off (not even computed)
    "unit/ce": 0.5,  # speech-unit classification of the units variant's UnitHead (weighted like word/ce)
    "flow/mse": 1.0,  # flow-matching velocity error of the lipvoicer variant's denoiser (naturall2s.flow)
    "content/ce": 0.0,  # word cross-entropy of the frozen content judge on the waveform (needs TrainConfig.judge)
    "adv/gen": 1.0,
    "adv/feat": 2.0,
    "adv/disc": 1.0,
    # the ltbs variant (naturall2s.ltbs): its decoder's log-mel L1 (as melhead/l1), the pitch and energy predictors
    # (as f0/l1, vuv/bce, loud/l1), the flow post-net's negative log-likelihood of the real mel (nats per value)
    "decoder/l1": 1.0,
    "pitch/l1": 5.0,
    "pitch/vuv": 1.0,
    "energy/l1": 0.05,
    "flow/nll": 1.0,
}


# ------------------------------------------------------------------------------------------ masks
def sample_mask(mask: torch.Tensor | None, n_samples: int) -> torch.Tensor | None:
    """(B, N) sample mask, or (B, F) frame mask with N % F == 0, -> (B, N) bool (None stays None)."""
    if mask is None:
        return None
    mask = mask.bool()
    if mask.shape[-1] == n_samples:
        return mask
    if n_samples % mask.shape[-1]:
        raise ValueError(f"mask of {mask.shape[-1]} frames does not divide {n_samples} samples")
    return mask.repeat_interleave(n_samples // mask.shape[-1], dim=-1)


def zero_padding(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None):
    """Both (B, N) waveforms with masked samples zeroed -> (pred, target, (B, N) sample mask or None)."""
    m = sample_mask(mask, pred.shape[-1])
    if m is None:
        return pred, target, None
    return pred * m, target * m, m


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of x over positions where mask (broadcastable to x) is True; 0 (with grad) when none are."""
    if mask is None:
        return x.mean()
    m = mask.to(x.dtype).expand_as(x)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def _frame_mask(mask: torch.Tensor | None, n_frames: int, hop: int) -> torch.Tensor | None:
    """Valid centred-STFT frames of a (B, N) sample mask: frame t counts when sample t·hop is valid. -> (B, n_frames)."""
    if mask is None:
        return None
    centres = (torch.arange(n_frames, device=mask.device) * hop).clamp(max=mask.shape[-1] - 1)
    return mask[:, centres]


# ------------------------------------------------------------------------------------- waveforms
def _stft_mag(wav: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    """(B, N) -> (B, n_fft // 2 + 1, frames) magnitude, centred hann STFT."""
    window = torch.hann_window(win, device=wav.device, dtype=wav.dtype)
    spec = torch.stft(wav, n_fft, hop_length=hop, win_length=win, window=window, center=True, return_complex=True)
    return torch.sqrt(spec.real**2 + spec.imag**2 + 1e-12)


def multi_resolution_stft_loss(pred: torch.Tensor, target: torch.Tensor, *, resolutions=STFT_RESOLUTIONS,
                               mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Spectral convergence and log-magnitude L1, averaged over STFT resolutions (Parallel WaveGAN).

    pred, target (B, N) waveforms -> {"stft/sc": ‖|T|-|P|‖_F / ‖|T|‖_F, "stft/mag": mean |log|T| - log|P||}.
    """
    pred, target, m = zero_padding(pred, target, mask)
    sc, mag = [], []
    for n_fft, hop, win in resolutions:
        p, t = _stft_mag(pred, n_fft, hop, win), _stft_mag(target, n_fft, hop, win)
        fm = _frame_mask(m, p.shape[-1], hop)
        fm = None if fm is None else fm[:, None, :]
        sq = (t - p) ** 2 if fm is None else (t - p) ** 2 * fm
        ref = t**2 if fm is None else t**2 * fm
        sc.append(torch.sqrt(sq.sum()) / torch.sqrt(ref.sum()).clamp(min=1e-7))
        log_diff = (torch.log(t.clamp(min=MAG_FLOOR)) - torch.log(p.clamp(min=MAG_FLOOR))).abs()
        mag.append(masked_mean(log_diff, fm))
    return {"stft/sc": torch.stack(sc).mean(), "stft/mag": torch.stack(mag).mean()}


@audio.tensor_cache
def _mel_filters(n_fft: int, n_mels: int, sample_rate: int, device: str) -> torch.Tensor:
    """Slaney mel filterbank (n_fft // 2 + 1, n_mels), 0 Hz to Nyquist."""
    import torchaudio.functional as AF

    return AF.melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate, norm="slaney",
                              mel_scale="slaney").to(device)


def mel_loss(pred_wav: torch.Tensor, target_wav: torch.Tensor, *, scales=MEL_SCALES, sample_rate: int = SAMPLE_RATE,
             mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Multi-scale log-mel L1 (DAC's mel reconstruction loss). (B, N), (B, N) -> {"mel/l1"} (mean over scales)."""
    pred_wav, target_wav, m = zero_padding(pred_wav, target_wav, mask)
    terms = []
    for n_fft, hop, n_mels in scales:
        fb = _mel_filters(n_fft, n_mels, sample_rate, str(pred_wav.device)).to(pred_wav.dtype)
        p = _stft_mag(pred_wav, n_fft, hop, n_fft).transpose(1, 2) @ fb  # (B, frames, n_mels)
        t = _stft_mag(target_wav, n_fft, hop, n_fft).transpose(1, 2) @ fb
        diff = (torch.log(p.clamp(min=MAG_FLOOR)) - torch.log(t.clamp(min=MAG_FLOOR))).abs()
        fm = _frame_mask(m, p.shape[1], hop)
        terms.append(masked_mean(diff, None if fm is None else fm[..., None]))
    return {"mel/l1": torch.stack(terms).mean()}


@audio.tensor_cache
def _neg_stoi(sample_rate: int, extended: bool):
    import warnings

    from torch_stoi import NegSTOILoss

    with warnings.catch_warnings():  # torchaudio's notice about a renamed resampling method, inside torch_stoi
        warnings.simplefilter("ignore", UserWarning)
        return NegSTOILoss(sample_rate=sample_rate, extended=extended)


def intelligibility_loss(pred: torch.Tensor, target: torch.Tensor, *, sample_rate: int = SAMPLE_RATE,
                         extended: bool = True, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Negative differentiable (E)STOI (torch_stoi): band-envelope correlation over 384 ms windows at 10 kHz,
    frames that are silent in ``target`` removed, as the evaluation's pystoi does. (B, N), (B, N) -> {"stoi/neg"}
    in [-1, 1], lower is better. Needs at least 384 ms of speech per item (train segments of ≥ 1 s)."""
    pred, target, _ = zero_padding(pred, target, mask)
    loss = _neg_stoi(sample_rate, extended).to(pred.device)
    return {"stoi/neg": loss(pred.float(), target.float()).mean()}


# ---------------------------------------------------------------------------------- frame targets
def f0_losses(log_f0_pred: torch.Tensor, voicing_logit: torch.Tensor, f0_hz: torch.Tensor, voiced: torch.Tensor, *,
              mask: torch.Tensor | None = None, f0_logits: torch.Tensor | None = None,
              bin_centres: torch.Tensor | None = None,
              sigma_cents: float = F0_CE_SIGMA_CENTS) -> dict[str, torch.Tensor]:
    """F0 and voicing per frame. All (B, F); f0_hz in Hz (0 where unvoiced), voiced bool, mask bool valid frames.

    -> {"f0/l1": mean |log_f0_pred - log f0| over voiced valid frames, "vuv/bce": BCE over valid frames}.
    With ``f0_logits`` (B, F, n_bins) over ``bin_centres`` (n_bins,) natural-log Hz (a classifying
    :class:`~naturall2s.heads.F0Head`), also "f0/ce": cross-entropy against a Gaussian of ``sigma_cents`` around
    the true pitch (CREPE's blurred one-hot), over voiced valid frames.
    """
    voiced = voiced.bool()
    valid = voiced if mask is None else voiced & mask.bool()
    target = torch.log(f0_hz.clamp(min=1.0))
    f0_l1 = masked_mean((log_f0_pred - target).abs(), valid)
    bce = F.binary_cross_entropy_with_logits(voicing_logit, voiced.to(voicing_logit.dtype), reduction="none")
    out = {"f0/l1": f0_l1, "vuv/bce": masked_mean(bce, mask)}
    if f0_logits is not None:
        sigma = sigma_cents / 1200.0 * math.log(2.0)  # cents -> natural-log units
        # targets clamped into the bins: an unvoiced frame's log(1 Hz) is far from every bin (0/0 below); it is
        # masked out anyway, and a voiced one (pyworld searches F0_MIN..F0_MAX) is unchanged
        centred = target.clamp(float(bin_centres[0]), float(bin_centres[-1]))[..., None] - bin_centres
        q = torch.exp(-0.5 * (centred / sigma) ** 2)
        q = q / q.sum(-1, keepdim=True)
        ce = -(q * torch.log_softmax(f0_logits.float(), dim=-1)).sum(-1)  # (B, F)
        out["f0/ce"] = masked_mean(ce, valid)
    return out


def loudness_loss(loudness_pred: torch.Tensor, loudness_target: torch.Tensor, *,
                  mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """L1 in dB over valid frames. (B, F), (B, F) -> {"loud/l1"}."""
    return {"loud/l1": masked_mean((loudness_pred - loudness_target.to(loudness_pred.dtype)).abs(), mask)}


def ctc_loss(log_probs: torch.Tensor, tokens: torch.Tensor, input_lengths: torch.Tensor,
             target_lengths: torch.Tensor, *, blank: int = 0) -> dict[str, torch.Tensor]:
    """CTC over padded batches. log_probs (B, T, V) log-softmax, tokens (B, L) padded (any pad value),
    input_lengths (B,) valid frames, target_lengths (B,) -> {"ctc"} (per-target-token mean; infeasible
    alignments count 0 instead of inf)."""
    loss = F.ctc_loss(log_probs.float().transpose(0, 1), tokens.long(), input_lengths.long(), target_lengths.long(),
                      blank=blank, reduction="mean", zero_infinity=True)
    return {"ctc": loss}


def word_ce_loss(logits: torch.Tensor, words: torch.Tensor, *, ignore_index: int) -> dict[str, torch.Tensor]:
    """Frame-level word classification. logits (B, T, V), words (B, T) labels (``ignore_index``: unknown or
    padding, ``data.UNKNOWN_WORD``) -> {"word/ce"} (mean over labelled frames; 0 with grad when none are)."""
    valid = words != ignore_index
    if not bool(valid.any()):
        return {"word/ce": logits.sum() * 0.0}
    return {"word/ce": F.cross_entropy(logits.float()[valid], words[valid].long())}


def unit_ce_loss(logits: torch.Tensor, units: torch.Tensor, *,
                 mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Speech-unit classification (the units variant). logits (B, F, K), units (B, F) the real speech's units, mask
    (B, F) valid frames -> {"unit/ce"} (mean over valid frames; 0 with grad when none are)."""
    n = min(logits.shape[1], units.shape[1])
    logits, units = logits[:, :n], units[:, :n]
    valid = torch.ones_like(units, dtype=torch.bool) if mask is None else mask[:, :n].bool()
    if not bool(valid.any()):
        return {"unit/ce": logits.sum() * 0.0}
    return {"unit/ce": F.cross_entropy(logits.float()[valid], units[valid].long())}


def content_loss(judge, wav: torch.Tensor, words: torch.Tensor, *, ignore_index: int) -> dict[str, torch.Tensor]:
    """Text supervision of generated speech: the word cross-entropy of a frozen :class:`~naturall2s.content.WordJudge`
    on the log-mel of ``wav``. wav (B, 640T), words (B, T) frame labels (``ignore_index``: unknown or padding)
    -> {"content/ce"} (mean over labelled frames). Gradients reach ``wav``, never the judge's frozen weights."""
    from naturall2s.audio import log_mel

    logits = judge(log_mel(wav))
    n = min(logits.shape[1], words.shape[1])
    return {"content/ce": word_ce_loss(logits[:, :n], words[:, :n], ignore_index=ignore_index)["word/ce"]}


# ------------------------------------------------------------------------------------ adversarial
def generator_adv_loss(fake_logits: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """LSGAN generator loss, summed over sub-discriminators: Σ mean((1 - D(fake))²). -> {"adv/gen"}."""
    return {"adv/gen": sum(torch.mean((1 - x) ** 2) for x in fake_logits)}


def discriminator_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """LSGAN discriminator loss, summed over sub-discriminators: Σ mean((1 - D(real))²) + mean(D(fake)²). -> {"adv/disc"}."""
    return {"adv/disc": sum(torch.mean((1 - r) ** 2) + torch.mean(f**2) for r, f in zip(real_logits, fake_logits))}


def feature_matching_loss(real_feats: list, fake_feats: list) -> dict[str, torch.Tensor]:
    """HiFi-GAN / DAC feature matching: Σ over feature maps of mean |real - fake| (real detached).

    Accepts flat lists or nested lists (per sub-discriminator, per layer). -> {"adv/feat"}."""
    real, fake = _flatten(real_feats), _flatten(fake_feats)
    if len(real) != len(fake):
        raise ValueError(f"feature lists differ in length: {len(real)} real vs {len(fake)} fake")
    return {"adv/feat": torch.stack([torch.mean(torch.abs(r.detach() - f)) for r, f in zip(real, fake)]).sum()}


def _flatten(feats) -> list[torch.Tensor]:
    out = []
    for f in feats:
        out.extend(_flatten(f) if isinstance(f, (list, tuple)) else [f])
    return out


# -------------------------------------------------------------------------------------- combining
def weighted_sum(losses: dict[str, torch.Tensor], lambdas: dict[str, float]) -> torch.Tensor:
    """Σ lambdas[k] · losses[k]. Raises KeyError naming every loss key that has no weight (never weight 0 silently)."""
    missing = sorted(k for k in losses if k not in lambdas)
    if missing:
        raise KeyError(f"no weight (lambda) for loss keys {missing}; known weights: {sorted(lambdas)}")
    if not losses:
        raise ValueError("weighted_sum of no losses")
    return sum(lambdas[k] * v for k, v in losses.items())
