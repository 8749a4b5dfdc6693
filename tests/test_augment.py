"""Training augmentation: the picture and the lip landmarks move together; padding and value range are kept."""
from __future__ import annotations

import torch

from naturall2s.augment import augment_clips
from naturall2s.roi import ROI_HEIGHT, ROI_WIDTH


def dot_clip(b: int, t: int, rows, cols):
    """Dark frames with one bright pixel per clip, and 'lips' = that pixel in crop-normalised units (x, y)."""
    roi = torch.zeros(b, t, ROI_HEIGHT, ROI_WIDTH, dtype=torch.uint8)
    lips = torch.zeros(b, t, 4)
    for i, (r, c) in enumerate(zip(rows, cols)):
        roi[i, :, r, c] = 255
        lips[i, :, 0::2] = (c - (ROI_WIDTH - 1) / 2) / (ROI_WIDTH / 2)
        lips[i, :, 1::2] = (r - (ROI_HEIGHT - 1) / 2) / (ROI_HEIGHT / 2)
    return roi, lips


def test_shift_moves_picture_and_landmarks_together():
    roi, lips = dot_clip(6, 5, rows=[20, 10, 30, 24, 8, 40], cols=[30, 50, 12, 36, 60, 20])
    g = torch.Generator().manual_seed(0)
    out, out_lips = augment_clips(roi, lips, torch.full((6,), 5), max_gain=0, max_bias=0, max_mask_frames=0,
                                  generator=g)
    assert out.dtype == torch.float32 and out.shape == roi.shape
    moved = 0
    for i in range(6):
        r, c = divmod(int(out[i, 0].argmax()), ROI_WIDTH)
        x = out_lips[i, 0, 0] * ROI_WIDTH / 2 + (ROI_WIDTH - 1) / 2
        y = out_lips[i, 0, 1] * ROI_HEIGHT / 2 + (ROI_HEIGHT - 1) / 2
        assert abs(float(x) - c) < 1e-4 and abs(float(y) - r) < 1e-4  # landmarks still on the dot
        assert abs(r - [20, 10, 30, 24, 8, 40][i]) <= 4 and abs(c - [30, 50, 12, 36, 60, 20][i]) <= 4
        moved += (r, c) != ([20, 10, 30, 24, 8, 40][i], [30, 50, 12, 36, 60, 20][i])
    assert moved >= 3  # the shifts are random, not all zero


def test_masking_contrast_and_padding():
    g = torch.Generator().manual_seed(1)
    roi = torch.randint(0, 256, (4, 30, ROI_HEIGHT, ROI_WIDTH), dtype=torch.uint8, generator=g)
    frames = torch.tensor([30, 30, 20, 10])
    out, _ = augment_clips(roi, torch.zeros(4, 30, 40), frames, max_shift=0, max_mask_frames=6, generator=g)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    for i in range(4):  # padded frames are left as they were
        n = int(frames[i])
        torch.testing.assert_close(out[i, n:], roi[i, n:].float() / 255)
    # with nothing random switched on the clip comes back unchanged
    same, _ = augment_clips(roi, torch.zeros(4, 30, 40), frames, max_shift=0, max_gain=0, max_bias=0,
                            max_mask_frames=0)
    torch.testing.assert_close(same, roi.float() / 255)
    # a masked span shows as identical consecutive frames (the clip's mean frame)
    g = torch.Generator().manual_seed(3)
    masked, _ = augment_clips(roi[:1].repeat(8, 1, 1, 1), torch.zeros(8, 30, 40), torch.full((8,), 30), max_shift=0,
                              max_gain=0, max_bias=0, max_mask_frames=6, generator=g)
    repeats = [(masked[i, 1:] == masked[i, :-1]).flatten(1).all(1).sum() for i in range(8)]
    assert sum(int(r) for r in repeats) > 0


def test_degrade_mels_blurs_and_noises_each_clip_reproducibly():
    from naturall2s.augment import degrade_mels

    g = torch.Generator().manual_seed(0)
    mel = torch.randn(3, 80, 50, generator=g) - 5
    a = degrade_mels(mel, generator=torch.Generator().manual_seed(1))
    b = degrade_mels(mel, generator=torch.Generator().manual_seed(1))
    assert a.shape == mel.shape and torch.equal(a, b)
    assert not torch.allclose(a, mel)
    assert torch.equal(degrade_mels(mel, max_time_blur=0, max_freq_blur=0, max_noise=0), mel)  # nothing asked: as is
    # a blur alone keeps a constant spectrogram constant (edges held) and smooths a click in time
    flat = torch.full((1, 80, 30), -3.0)
    assert torch.allclose(degrade_mels(flat, max_noise=0, max_time_blur=2, max_freq_blur=1.5), flat, atol=1e-5)
    click = torch.zeros(1, 80, 31)
    click[..., 15] = 1.0
    smooth = degrade_mels(click.repeat(8, 1, 1), max_noise=0, max_freq_blur=0, max_time_blur=2,
                          generator=torch.Generator().manual_seed(3))  # a random sd per clip, up to 2 frames
    assert torch.allclose(smooth.sum(-1), torch.ones(8, 80), atol=1e-5)  # a blur moves energy, keeps its sum
    assert (smooth[:, 0, 15] < 0.5).any() and (smooth[:, 0, 14] > 0.1).any()
