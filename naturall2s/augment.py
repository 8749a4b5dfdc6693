"""Training-time augmentation of mouth clips (pure functions on batched tensors).

The front end overfits 800 GRID clips within minutes; these cheap, label-preserving distortions are what lip
reading recipes use against it: a random translation of the crop (the lip landmarks move with it), a random
contrast / brightness change, and one masked time span per clip (filled with the clip's mean frame).

:func:`degrade_mels` is the vocoder's counterpart (``train --degrade-mel``): the real log-mels a vocoder trains on,
blurred and noised by a random amount per clip, as the mels a lip reader predicts are (the units variant's
multi-input vocoder, which also reads the speech units, then learns to lean on them where the mel is vague).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_SHIFT = 4  # pixels of the 48x72 crop, each direction
MAX_GAIN = 0.2  # contrast factor in [1 - g, 1 + g]
MAX_BIAS = 0.08  # brightness offset, fraction of full scale
MAX_MASK_FRAMES = 6  # longest masked span (video frames)
MEL_MAX_TIME_BLUR = 2.0  # largest Gaussian blur of a degraded mel along time (sd in 10 ms frames)
MEL_MAX_FREQ_BLUR = 1.5  # ... and along the mel bins (sd in bins)
MEL_MAX_NOISE = 0.3  # largest sd of the Gaussian noise added to a degraded log-mel (natural-log units)


def augment_clips(roi: torch.Tensor, lips: torch.Tensor, frames: torch.Tensor, *, max_shift: int = MAX_SHIFT,
                  max_gain: float = MAX_GAIN, max_bias: float = MAX_BIAS, max_mask_frames: int = MAX_MASK_FRAMES,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One random distortion per clip.

    roi (B,T,H,W) uint8 or float in [0,1]; lips (B,T,2·P) x,y pairs in crop-normalised units ((pixel - centre) /
    half-size); frames (B,) valid lengths. -> (roi (B,T,H,W) float in [0,1], lips (B,T,2·P) float).
    A shift of (dx, dy) pixels moves the picture and the landmarks together; padded frames stay as they are.
    """
    original = roi.float() / 255.0 if roi.dtype == torch.uint8 else roi.float()
    x = original
    b, t, h, w = x.shape
    dev = x.device

    def uniform(lo, hi, n):
        return lo + (hi - lo) * torch.rand(n, generator=generator).to(dev)

    # translation: replicate-pad, then crop at a random offset per clip
    shifts = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator)
    if max_shift > 0:
        padded = F.pad(x, (max_shift,) * 4, mode="replicate")
        x = torch.stack([
            padded[i, :, max_shift - int(dy): max_shift - int(dy) + h, max_shift - int(dx): max_shift - int(dx) + w]
            for i, (dx, dy) in enumerate(shifts.tolist())
        ])
    lips = lips.float().clone()
    lips[..., 0::2] += (shifts[:, 0].to(dev, lips.dtype) / (w / 2))[:, None, None]
    lips[..., 1::2] += (shifts[:, 1].to(dev, lips.dtype) / (h / 2))[:, None, None]

    # contrast and brightness around each clip's mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    gain = uniform(1 - max_gain, 1 + max_gain, b)[:, None, None, None]
    bias = uniform(-max_bias, max_bias, b)[:, None, None, None]
    x = ((x - mean) * gain + mean + bias).clamp(0.0, 1.0)

    # one masked span per clip
    if max_mask_frames > 0:
        mean_frame = x.mean(dim=1)  # (B,H,W)
        for i in range(b):
            n = int(frames[i])
            span = int(torch.randint(0, max_mask_frames + 1, (), generator=generator))
            if span == 0 or n <= span:
                continue
            s = int(torch.randint(0, n - span + 1, (), generator=generator))
            x[i, s: s + span] = mean_frame[i]
    valid = torch.arange(t, device=dev)[None] < frames.to(dev)[:, None]
    x = torch.where(valid[:, :, None, None], x, original)
    return x, lips


def _gaussian_kernel(sd: float, radius: int) -> torch.Tensor:
    """(2·radius + 1,) normalised Gaussian taps (a unit impulse when sd is ~0)."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / max(sd, 1e-3)) ** 2)
    return k / k.sum()


def degrade_mels(mel: torch.Tensor, *, max_time_blur: float = MEL_MAX_TIME_BLUR,
                 max_freq_blur: float = MEL_MAX_FREQ_BLUR, max_noise: float = MEL_MAX_NOISE,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Blurred, noisy copies of log-mels: per clip a Gaussian blur along time (sd uniform in [0, max_time_blur]
    frames) and along frequency (sd uniform in [0, max_freq_blur] bins, edges held), then Gaussian noise (sd uniform
    in [0, max_noise]). mel (B, n_mels, F) natural-log mel -> (B, n_mels, F)."""
    b, n_mels, n = mel.shape
    out = []
    for i in range(b):
        x = mel[i].float()
        t_sd, f_sd, noise = (float(torch.rand((), generator=generator)) * m
                             for m in (max_time_blur, max_freq_blur, max_noise))
        for sd, axis in ((t_sd, 1), (f_sd, 0)):
            radius = int(3 * sd + 0.5)
            if radius == 0:
                continue
            k = _gaussian_kernel(sd, radius).to(x.device)
            rows = x if axis == 1 else x.T  # (channels, length) to blur along length
            padded = F.pad(rows[:, None], (radius, radius), mode="replicate")
            rows = F.conv1d(padded, k[None, None])[:, 0]
            x = rows if axis == 1 else rows.T
        x = x + noise * torch.randn(x.shape, generator=generator).to(x.device)
        out.append(x)
    return torch.stack(out).to(mel.dtype)
