"""Visual front end (lip reading encoder), its CTC head and its frame-level word head.

``VisualFrontEnd``: grayscale mouth crops + lip landmarks at 25 fps -> one feature vector per video frame.
Built for CPU training: a 3D-conv stem over time, a light per-frame 2D residual trunk that runs only on the
valid (unpadded) frames, global average pooling, a small MLP of the lip coordinates, then a pre-norm
Transformer encoder over time.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

ROI_MEAN = 0.42  # grayscale mouth-crop statistics (the usual LRW/GRID normalisation), on [0, 1] pixels
ROI_STD = 0.16
STEM_CHANNELS = 24
TRUNK_CHANNELS = (32, 64, 128)  # one stride-2 residual stage each
LIP_HIDDEN = 64
FF_MULT = 2  # transformer feed-forward width = FF_MULT · dim


def sinusoidal_positions(length: int, dim: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Transformer sinusoidal position encodings. -> (length, dim)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return pe.to(dtype)


class ResidualStage(nn.Module):
    """Stride-2 basic residual block (ResNet-18 style). (n, c_in, H, W) -> (n, c_out, ceil(H/2), ceil(W/2))."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class VisualFrontEnd(nn.Module):
    """Mouth ROI video + lip landmarks -> per-frame features.

    forward(roi (B,T,H,W) float in [0,1], lips (B,T,lip_dim), mask (B,T) bool, True = valid | None)
    -> (B,T,dim). Inputs whose (H,W) differ from ``in_size`` are area-resized to it first.
    Padded frames (mask False) are zeroed before the stem (like the stem's own temporal zero padding), skipped
    by the 2D trunk and ignored as attention keys, so in eval mode a clip's valid outputs do not depend on how
    it was padded or batched; outputs at padded frames are defined but meaningless.
    """

    def __init__(self, *, in_size: tuple[int, int] = (32, 48), lip_dim: int = 40, dim: int = 256,
                 n_layers: int = 4, n_heads: int = 4, dropout: float = 0.1,
                 stem_channels: int = STEM_CHANNELS, trunk_channels: tuple[int, ...] = TRUNK_CHANNELS):
        super().__init__()
        self.in_size = tuple(in_size)
        self.dim = dim
        self.stem = nn.Sequential(  # (B,1,T,H,W) -> (B,stem,T,H/2,W/2)
            nn.Conv3d(1, stem_channels, kernel_size=(5, 5, 5), stride=(1, 2, 2), padding=(2, 2, 2), bias=False),
            nn.BatchNorm3d(stem_channels),
            nn.ReLU(inplace=True),
        )
        chans = (stem_channels, *trunk_channels)
        self.trunk = nn.Sequential(*[ResidualStage(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.lip_mlp = nn.Sequential(nn.Linear(lip_dim, LIP_HIDDEN), nn.GELU(), nn.Linear(LIP_HIDDEN, LIP_HIDDEN))
        self.proj = nn.Linear(chans[-1] + LIP_HIDDEN, dim)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, n_heads, dim_feedforward=FF_MULT * dim, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, roi: torch.Tensor, lips: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t = roi.shape[:2]
        if tuple(roi.shape[-2:]) != self.in_size:
            roi = F.interpolate(roi, size=self.in_size, mode="area")  # time as channels
        x = (roi - ROI_MEAN) / ROI_STD
        if mask is not None:  # padded frames look like the stem's own zero padding: batching changes nothing
            x = x * mask[:, :, None, None].to(x.dtype)
        x = self.stem(x[:, None])  # (B,C,T,h,w)
        c, h, w = x.shape[1], x.shape[3], x.shape[4]
        x = x.transpose(1, 2).reshape(b * t, c, h, w)  # (B·T,C,h,w)
        valid = mask.reshape(-1) if mask is not None else None
        if valid is not None and not bool(valid.all()):
            pooled = x.new_zeros(b * t, self.proj.in_features - LIP_HIDDEN)
            pooled[valid] = self.trunk(x[valid]).mean(dim=(-2, -1))
        else:
            pooled = self.trunk(x).mean(dim=(-2, -1))
        h = torch.cat([pooled.reshape(b, t, -1), self.lip_mlp(lips)], dim=-1)
        h = self.proj(h) + sinusoidal_positions(t, self.dim, device=h.device, dtype=h.dtype)
        h = self.transformer(self.dropout(h), src_key_padding_mask=None if mask is None else ~mask)
        return self.norm(h)


class CTCHead(nn.Module):
    """Linear classifier over the CTC vocabulary. (B,T,dim) -> log-probabilities (B,T,vocab_size), float32."""

    def __init__(self, *, dim: int, vocab_size: int):
        super().__init__()
        self.proj = nn.Linear(dim, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.proj(x).float(), dim=-1)


class WordHead(nn.Module):
    """Frame-level word classifier (trained on GRID .align timings; 0 = silence, 1..V-1 the words).
    (B,T,dim) -> logits (B,T,vocab_size), float32."""

    def __init__(self, *, dim: int, vocab_size: int):
        super().__init__()
        self.proj = nn.Linear(dim, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).float()
