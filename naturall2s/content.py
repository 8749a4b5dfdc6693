"""The content judge: a frame-level word recognizer on log-mels, trained on *real* speech and then frozen.

Lip-to-speech models trained on spectral losses alone average over what the video leaves uncertain and blur the
sounds that tell words apart. The judge turns text supervision onto the generated waveform: its word
cross-entropy on the model's speech (``losses.content_loss``, key ``content/ce``) rewards audio in which the spoken
words can be recognised. It is trained once on the real audio of the training split (``python -m naturall2s train
--stage judge``) and never sees validation or test audio; its accuracy on generated validation speech is a cheap
intelligibility probe logged while training. It is *not* an evaluation metric: the models it supervised are judged
by an independent recogniser (pocketsphinx, :mod:`naturall2s.asr`).

Shapes: log-mel ``(B, N_MELS, 4T)`` at 100 Hz -> word logits ``(B, T, n_words)`` at the 25 Hz video rate, the
rate of the GRID ``.align`` frame labels (:func:`naturall2s.data.word_frames`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn

from naturall2s.audio import N_MELS
from naturall2s.data import AUDIO_FRAMES_PER_VIDEO_FRAME
from naturall2s.grid import GRID_VOCAB

JUDGE_KIND = "content-judge"


@dataclass
class JudgeConfig:
    """Architecture of the judge; stored inside its checkpoint."""

    kind: str = JUDGE_KIND  # tells a judge's checkpoint from a lip-to-speech model's
    n_mels: int = N_MELS
    dim: int = 192
    kernel_size: int = 3
    dilations: tuple[int, ...] = (1, 2, 4, 8, 1, 2)  # receptive field 1 + 2·Σd = 37 video frames (1.5 s)
    dropout: float = 0.1
    n_words: int = len(GRID_VOCAB) + 1  # + 0 = silence (grid.BLANK)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "JudgeConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown or d.get("kind") != JUDGE_KIND:
            raise ValueError(f"not a content judge config (kind {d.get('kind')!r}, unknown keys {sorted(unknown)})")
        return cls(**{**d, "dilations": tuple(d.get("dilations", cls.dilations))})


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of a (B, C, T) sequence."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class ResidualDilatedConv(nn.Module):
    """x + Dropout(Conv1d_d(GELU(Norm(x)))): (B, C, T) -> (B, C, T)."""

    def __init__(self, dim: int, *, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.norm = ChannelNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.conv(torch.nn.functional.gelu(self.norm(x))))


class WordJudge(nn.Module):
    """Log-mel (B, n_mels, 4T) -> word logits (B, T, n_words): a strided conv to the video rate, then dilated
    residual convs (all convolutional: cheap on CPU, and differentiable in eval mode on any device)."""

    def __init__(self, config: JudgeConfig | None = None):
        super().__init__()
        self.config = c = config or JudgeConfig()
        stride = AUDIO_FRAMES_PER_VIDEO_FRAME
        self.inp_norm = nn.BatchNorm1d(c.n_mels, affine=False)  # running statistics of real log-mels
        self.inp = nn.Conv1d(c.n_mels, c.dim, 2 * stride, stride=stride, padding=stride // 2)
        self.blocks = nn.Sequential(*(
            ResidualDilatedConv(c.dim, kernel_size=c.kernel_size, dilation=d, dropout=c.dropout) for d in c.dilations
        ))
        self.out_norm = ChannelNorm(c.dim)
        self.out = nn.Linear(c.dim, c.n_words)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        n_frames = log_mel.shape[-1] // AUDIO_FRAMES_PER_VIDEO_FRAME
        x = self.inp(self.inp_norm(log_mel))[..., :n_frames]
        x = self.out_norm(self.blocks(x))
        return self.out(x.transpose(1, 2))


def spec_augment(log_mel: torch.Tensor, *, max_freq: int = 12, max_time: int = 12, n_masks: int = 2,
                 max_gain: float = 0.5) -> torch.Tensor:
    """SpecAugment (torchaudio's masks) for training the judge: a random gain per item (uniform in ±``max_gain``
    natural-log units), then ``n_masks`` frequency and time masks per item filled with the batch mean.
    (B, n_mels, F) -> (B, n_mels, F)."""
    import torchaudio

    log_mel = log_mel + max_gain * (2 * torch.rand(log_mel.shape[0], 1, 1, device=log_mel.device) - 1)
    fill = float(log_mel.mean())
    freq = torchaudio.transforms.FrequencyMasking(max_freq, iid_masks=True)
    time = torchaudio.transforms.TimeMasking(max_time, iid_masks=True)
    x = log_mel[:, None]  # iid masks need a channel dimension
    for _ in range(n_masks):
        x = time(freq(x, mask_value=fill), mask_value=fill)
    return x[:, 0]


def load_judge(path: str | Path, *, device: str | torch.device = "cpu") -> WordJudge:
    """A trained judge, float32, eval mode, parameters frozen (gradients still flow to its input)."""
    from naturall2s.checkpoints import load_module

    judge, _ = load_module(path, JudgeConfig, WordJudge, bad_config="not a content judge")
    for p in judge.parameters():
        p.requires_grad_(False)
    return judge.to(device).eval()
