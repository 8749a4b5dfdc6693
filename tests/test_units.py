"""Speech units: MFCC + deltas, k-means (deterministic for a seed), the codebook and its purity measure."""
from __future__ import annotations

import math

import pytest
import torch

from naturall2s.units import (
    UNIT_FEATURE_DIM, assign, dct_matrix, deltas, fit_codebook, kmeans, mfcc, purity, unit_features,
)


def blobs(n_per: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well separated 2-D clusters -> (points (3·n_per, 2), their cluster (3·n_per,))."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = torch.arange(3).repeat_interleave(n_per)
    return centres[labels] + 0.3 * torch.randn(3 * n_per, 2, generator=g), labels


def test_dct_is_orthonormal_and_mfcc_has_the_right_shape():
    basis = dct_matrix(80, 80)
    assert torch.allclose(basis @ basis.T, torch.eye(80), atol=1e-5)
    mel = torch.randn(2, 80, 30)
    assert mfcc(mel).shape == (2, 13, 30)
    assert torch.allclose(mfcc(torch.ones(80, 5))[1:], torch.zeros(12, 5), atol=1e-5)  # a flat spectrum: c0 only


def test_deltas_of_a_ramp_are_its_slope_and_features_are_frame_major():
    ramp = torch.arange(20.0)[None].repeat(3, 1) * 0.5  # (3, 20)
    d = deltas(ramp)
    assert torch.allclose(d[:, 2:-2], torch.full((3, 16), 0.5))
    assert unit_features(torch.randn(4, 80, 25)).shape == (4, 25, UNIT_FEATURE_DIM)


def test_kmeans_finds_separated_clusters_and_is_deterministic_for_a_seed():
    x, labels = blobs()
    c1, c2 = kmeans(x, 3, seed=5), kmeans(x, 3, seed=5)
    assert torch.equal(c1, c2)
    found = assign(x, c1)
    for j in range(3):  # each true cluster lands in one unit
        assert len(set(found[labels == j].tolist())) == 1
    s = purity(found, labels, 3, 3)
    assert s["purity"] == pytest.approx(1.0) and s["pnmi"] == pytest.approx(1.0)
    assert s["perplexity"] == pytest.approx(3.0)
    rng = torch.get_rng_state()
    kmeans(x, 3, seed=6)
    assert torch.equal(rng, torch.get_rng_state())  # the global RNG is not touched


def test_fit_codebook_is_deterministic_and_fp16_exact():
    g = torch.Generator().manual_seed(0)
    mels = [torch.randn(80, 60, generator=g) for _ in range(3)]
    a, b = fit_codebook(mels, 6, seed=3), fit_codebook(mels, 6, seed=3)
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.mean, b.mean) and torch.equal(a.std, b.std)
    assert torch.equal(a.centroids, a.centroids.half().float())  # what a checkpoint stores
    assert not torch.equal(a.centroids, fit_codebook(mels, 6, seed=4).centroids)
    units = a.units(torch.stack(mels))
    assert units.shape == (3, 60) and units.dtype == torch.long and int(units.max()) < 6


def test_too_few_frames_or_units_are_clear_errors():
    x, _ = blobs(2)
    with pytest.raises(ValueError, match="6 frames cannot make 10 units"):
        kmeans(x, 10)
    with pytest.raises(ValueError, match="at least 2 units"):
        kmeans(x, 1)
    with pytest.raises(ValueError, match="distinct frames"):
        kmeans(torch.zeros(20, 3), 4)


def test_purity_of_uninformative_units_is_low():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (4000,), generator=g)
    units = torch.randint(0, 8, (4000,), generator=g)
    s = purity(units, labels, 8, 4)
    assert s["pnmi"] < 0.01 and s["purity"] < 0.35 and math.isclose(s["perplexity"], 8, rel_tol=0.01)
