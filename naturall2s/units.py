"""Discrete speech units for the ``units`` variant: k-means over MFCCs (+ deltas) of the training split's speech.

The method (Choi, Kim & Ro, "Intelligible Lip-to-Speech Synthesis with Speech Units", Interspeech 2023) predicts,
beside the mel, the discrete units of the target speech (k-means clusters of HuBERT features). No self-supervised
speech model ships offline here, so the units are those of HuBERT's *first* training iteration: k-means over
13 MFCCs + deltas + delta-deltas (39 dims per 100 Hz frame). The MFCCs are the DCT of the cached log-mel (80 bins,
n_fft 640) rather than Kaldi's (23 bins, 25 ms); every dimension is standardised by the training frames' mean and
standard deviation before the k-means (raw MFCC distances are ruled by c0, the frame energy: ``scripts/unit_purity.py``
measures both).

Pure functions on tensors (no files): :func:`mfcc`, :func:`deltas`, :func:`unit_features`, :func:`kmeans`,
:func:`assign`, and :func:`fit_codebook` (a list of log-mels in, a :class:`Codebook` out). The codebook travels inside
the checkpoint (buffers of :class:`naturall2s.model.LipToSpeech`), rounded to fp16 as checkpoints store it, so every
training stage and every later user assigns the same units to the same audio.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

N_MFCC = 13
DELTA_WIDTH = 2  # frames each side of the regression deltas (HTK / Kaldi default)
UNIT_FEATURE_DIM = 3 * N_MFCC  # MFCC + Δ + ΔΔ
# codebook size of the units variant (scripts/unit_purity.py on GRID s1 val: PNMI 0.60, against 0.50 at 100)
DEFAULT_UNITS = 200
KMEANS_ITERS = 30
KMEANS_SEED = 0
MAX_FIT_FRAMES = 250_000  # frames the k-means sees at most (a seeded draw; GRID s1 train has 240k)
CHUNK = 32768  # frames per distance block (memory: CHUNK x K floats)


def dct_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Orthonormal DCT-II basis: (n_out, n_in), so ``basis @ x`` gives the first n_out coefficients of x (n_in,)."""
    n = torch.arange(n_in, dtype=torch.float64)
    k = torch.arange(n_out, dtype=torch.float64)[:, None]
    basis = torch.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    basis[0] /= math.sqrt(2.0)
    return basis.float()


def mfcc(log_mel: torch.Tensor, n_mfcc: int = N_MFCC) -> torch.Tensor:
    """Cepstra of a log-mel spectrogram: (..., n_mels, F) natural-log mel -> (..., n_mfcc, F) (orthonormal DCT-II
    over the mel axis, the first ``n_mfcc`` coefficients; c0 included)."""
    basis = dct_matrix(log_mel.shape[-2], n_mfcc).to(log_mel.device)
    return torch.matmul(basis, log_mel.float())


def deltas(x: torch.Tensor, width: int = DELTA_WIDTH) -> torch.Tensor:
    """Regression deltas along the last (time) axis, edges held: ``d_t = Σ_n n (x_{t+n} - x_{t-n}) / (2 Σ_n n²)``,
    n = 1..width. (..., C, F) -> (..., C, F)."""
    f = x.shape[-1]
    padded = torch.cat([x[..., :1].expand(*x.shape[:-1], width), x, x[..., -1:].expand(*x.shape[:-1], width)], -1)
    out = torch.zeros_like(x)
    for n in range(1, width + 1):
        out = out + n * (padded[..., width + n : width + n + f] - padded[..., width - n : width - n + f])
    return out / (2 * sum(n * n for n in range(1, width + 1)))


def unit_features(log_mel: torch.Tensor) -> torch.Tensor:
    """What the units cluster: MFCC + Δ + ΔΔ per frame. (..., n_mels, F) log-mel -> (..., F, 39), frame-major."""
    c = mfcc(log_mel)
    d = deltas(c)
    return torch.cat([c, d, deltas(d)], dim=-2).transpose(-1, -2)


def assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Nearest centroid (Euclidean) of every row: x (..., D), centroids (K, D) -> (...) long in [0, K)."""
    flat = x.reshape(-1, x.shape[-1]).float()
    c = centroids.float()
    c2 = (c * c).sum(-1)
    out = torch.empty(flat.shape[0], dtype=torch.long, device=x.device)
    for s in range(0, flat.shape[0], CHUNK):
        block = flat[s : s + CHUNK]
        out[s : s + CHUNK] = (c2[None] - 2 * block @ c.T).argmin(-1)  # |x|² is the same for every centroid
    return out.reshape(x.shape[:-1])


def _sq_distances_to(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared distance of each row of x (N, D) to one point c (D,). -> (N,)."""
    return ((x - c) ** 2).sum(-1)


def kmeans(x: torch.Tensor, k: int, *, seed: int = KMEANS_SEED, iters: int = KMEANS_ITERS) -> torch.Tensor:
    """k-means (k-means++ seeding, then Lloyd iterations until no frame changes cluster or ``iters``).

    x (N, D) float -> centroids (k, D) float32. Deterministic for a seed (its own torch.Generator; the global RNG
    is not touched). A cluster left empty is re-seeded at the frame farthest from its centroid. ValueError when
    there are fewer distinct frames than clusters.
    """
    x = x.float()
    n = x.shape[0]
    if k < 2:
        raise ValueError(f"a codebook needs at least 2 units, got {k}")
    if n < k:
        raise ValueError(f"{n} frames cannot make {k} units: use fewer units (n_units) or more audio")
    g = torch.Generator().manual_seed(int(seed))
    centroids = torch.empty(k, x.shape[1])
    centroids[0] = x[int(torch.randint(n, (1,), generator=g))]
    d2 = _sq_distances_to(x, centroids[0])
    for j in range(1, k):
        total = float(d2.sum())
        if total <= 0:
            raise ValueError(f"only {j} distinct frames for {k} units: use fewer units (n_units) or more audio")
        pick = int(torch.multinomial(d2 / total, 1, generator=g))
        centroids[j] = x[pick]
        d2 = torch.minimum(d2, _sq_distances_to(x, centroids[j]))
    labels = None
    for _ in range(iters):
        new = assign(x, centroids)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        sums = torch.zeros(k, x.shape[1], dtype=torch.float64).index_add_(0, labels, x.double())
        counts = torch.bincount(labels, minlength=k)
        full = counts > 0
        centroids[full] = (sums[full] / counts[full, None]).float()
        empty = torch.nonzero(~full).flatten().tolist()
        if empty:  # an empty cluster takes the worst-fitted frame (one frame each)
            err = ((x - centroids[labels]) ** 2).sum(-1)
            for j in empty:
                far = int(err.argmax())
                centroids[j] = x[far]
                err[far] = -1.0
    return centroids


@dataclass
class Codebook:
    """Standardisation and centroids of the units: ``mean``, ``std`` (39,) and ``centroids`` (K, 39), float32
    values exactly representable in fp16 (what a checkpoint stores)."""

    mean: torch.Tensor
    std: torch.Tensor
    centroids: torch.Tensor

    @property
    def n_units(self) -> int:
        return self.centroids.shape[0]

    def units(self, log_mel: torch.Tensor) -> torch.Tensor:
        """The units of log-mels: (..., n_mels, F) -> (..., F) long."""
        return encode(log_mel, self.mean, self.std, self.centroids)


def encode(log_mel: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Units of log-mels under a codebook: (..., n_mels, F) -> (..., F) long (standardised MFCC + deltas, then the
    nearest centroid)."""
    feats = (unit_features(log_mel) - mean.float()) / std.float()
    return assign(feats, centroids)


def _fp16(x: torch.Tensor) -> torch.Tensor:
    return x.float().half().float()


def fit_codebook(mels: list[torch.Tensor], n_units: int, *, seed: int = KMEANS_SEED, standardize: bool = True,
                 max_frames: int = MAX_FIT_FRAMES, iters: int = KMEANS_ITERS) -> Codebook:
    """The units' codebook from log-mels [(n_mels, F_i)] (the training split's, never validation or test audio):
    unit features of every frame, standardised (``standardize``; else mean 0, std 1 are stored), at most
    ``max_frames`` of them (a seeded draw), clustered into ``n_units`` by :func:`kmeans`. Deterministic for a seed.
    The statistics are rounded to fp16 before the clustering and the centroids after it."""
    feats = torch.cat([unit_features(m.float()) for m in mels], dim=0)  # (N, 39)
    if feats.shape[0] > max_frames:
        g = torch.Generator().manual_seed(int(seed) + 1)
        feats = feats[torch.randperm(feats.shape[0], generator=g)[:max_frames].sort().values]
    if standardize:
        mean, std = _fp16(feats.mean(0)), _fp16(feats.std(0).clamp(min=1e-3))
    else:
        mean, std = torch.zeros(feats.shape[1]), torch.ones(feats.shape[1])
    centroids = _fp16(kmeans((feats - mean) / std, n_units, seed=seed, iters=iters))
    return Codebook(mean=mean, std=std, centroids=centroids)


def purity(units: torch.Tensor, labels: torch.Tensor, n_units: int, n_labels: int) -> dict[str, float]:
    """How much the units say about frame labels (e.g. GRID words): units, labels (N,) long ->
    ``purity`` (share of frames whose label is their unit's most frequent one), ``pnmi`` (HuBERT's phone-normalised
    mutual information I(label; unit) / H(label), here with the label set given), ``perplexity`` (of the unit usage:
    how many units are in effective use)."""
    joint = torch.zeros(n_units, n_labels, dtype=torch.float64)
    joint.index_put_((units.long(), labels.long()), torch.ones(len(units), dtype=torch.float64), accumulate=True)
    p = joint / joint.sum()
    pu, pl = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * torch.log(p[nz] / (pu[:, None] * pl[None, :]).expand_as(p)[nz])).sum())
    h_label = float(-(pl[pl > 0] * torch.log(pl[pl > 0])).sum())
    h_unit = float(-(pu[pu > 0] * torch.log(pu[pu > 0])).sum())
    return {"purity": float(p.max(1).values.sum()), "pnmi": mi / h_label if h_label > 0 else float("nan"),
            "perplexity": math.exp(h_unit)}
