"""Mouth regions of interest: aligned grayscale mouth crops and lip landmarks from a talking-face video.

Per clip (``crop_mouth``):

1. frames without a face (NaN landmark rows) are filled by linear interpolation over time (held at the ends);
   fewer than ``MIN_FACE_FRACTION`` of the frames with a face raises ``NoFaceError``;
2. the stable points (eye corners, nose base: ``STABLE_POINTS``) are smoothed over ``ALIGN_SMOOTH_FRAMES``
   frames and a similarity transform (Umeyama: scale, rotation, translation) maps them onto the constant
   reference face ``REFERENCE_FACE`` (units: the distance between the outer eye corners; origin between them);
3. in that reference frame the mouth centre (mean of the 20 lip points, smoothed over ``CENTRE_SMOOTH_FRAMES``)
   becomes the crop centre, and ``PIXELS_PER_UNIT`` sets the zoom so the reference mouth (width
   ``REFERENCE_MOUTH_WIDTH``) spans ``MOUTH_WIDTH_FRACTION`` = 60% of the patch width;
4. ONE ``cv2.warpAffine`` per frame both aligns and crops a ``ROI_HEIGHT x ROI_WIDTH`` = 48 x 72 patch.

Extent of the crop, in reference units (outer-eye-corner distance = 1): 72 px = 0.99 units wide and 48 px =
0.66 units tall around the mouth centre, i.e. from the bottom of the nose to about 0.2 units below the lower
lip (part of the chin); the whole lips stay inside even with the mouth wide open.

``lips``: the 20 lip points (iBUG 48..67, not smoothed) in crop coordinates normalised so that the patch spans
[-1, 1] in x and y (x = (u - (W-1)/2) / (W/2), y = (v - (H-1)/2) / (H/2), u, v in crop pixels), interleaved
as (x48, y48, x49, y49, ...) -> (T, 40) float32. Values may leave [-1, 1] when a lip leaves the patch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from naturall2s.errors import ClipTooLongError, NoFaceError
from naturall2s.landmarks import Detector, get_detector
from naturall2s.video import MAX_SECONDS, VideoData, read_video

ROI_HEIGHT = 48
ROI_WIDTH = 72
N_LIP_POINTS = 20  # iBUG points 48..67
LIP_DIM = 40  # x, y of those 20 points in crop-normalised coordinates

LIP_POINTS = np.arange(48, 68)
# eye corners (36, 39, 42, 45) and nose base (31, 33, 35): points that do not move when a person speaks
STABLE_POINTS = np.array([31, 33, 35, 36, 39, 42, 45])
# Frontal reference face for STABLE_POINTS, in units of the outer-eye-corner distance, origin midway between
# the outer eye corners, x right, y down. Left/right-symmetrised mean of MediaPipe landmarks over 8 GRID and
# 2 in-the-wild speakers (per-clip medians after normalising eye position, roll and scale).
REFERENCE_FACE = np.array([
    [-0.150, 0.522], [0.000, 0.570], [0.150, 0.522],  # nostril right, below the tip, nostril left
    [-0.500, 0.000], [-0.195, 0.016], [0.195, 0.016], [0.500, 0.000],  # eye corners: R outer, R inner, L inner, L outer
])
REFERENCE_MOUTH_WIDTH = 0.594  # corner-to-corner (iBUG 48-54) width of the mean mouth, same units
MOUTH_WIDTH_FRACTION = 0.6  # the reference mouth spans this fraction of the patch width
PIXELS_PER_UNIT = MOUTH_WIDTH_FRACTION * ROI_WIDTH / REFERENCE_MOUTH_WIDTH  # crop pixels per reference unit

MIN_FACE_FRACTION = 0.5  # fewer frames with a detected face than this raises NoFaceError
ALIGN_SMOOTH_FRAMES = 5  # moving-average window (frames) on the stable points before alignment
CENTRE_SMOOTH_FRAMES = 7  # moving-average window (frames) on the mouth centre (in reference coordinates)
# Frames are decoded with their longer side at most this many pixels (speed and memory; a mouth filling less
# than ~6% of the picture width then gets upsampled).
EXTRACT_MAX_SIDE = 720


@dataclass
class MouthClip:
    """Mouth crops of one clip.

    roi: (T, ROI_HEIGHT, ROI_WIDTH) uint8 grayscale; lips: (T, LIP_DIM) float32 (see module doc);
    audio: (N,) float32 at 16 kHz or None; fps: frames per second of roi/lips; detected: (T,) bool, frames where
    the detector found a face (the others were interpolated); source: the file path ("" if none).
    """

    roi: np.ndarray
    lips: np.ndarray
    audio: np.ndarray | None
    fps: float
    detected: np.ndarray
    source: str

    @property
    def detection_rate(self) -> float:
        """Fraction of frames in which a face was detected."""
        return float(np.mean(self.detected)) if len(self.detected) else 0.0


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over axis 0 of (T, ...) with edge values repeated; same shape, float64."""
    x = np.asarray(x, dtype=np.float64)
    if window <= 1 or len(x) < 2:
        return x.copy()
    half = window // 2
    padded = np.concatenate([np.repeat(x[:1], half, 0), x, np.repeat(x[-1:], half, 0)], axis=0)
    csum = np.cumsum(padded, axis=0)
    csum = np.concatenate([np.zeros_like(csum[:1]), csum], axis=0)
    w = 2 * half + 1
    return (csum[w:] - csum[:-w]) / w


def _interpolate_gaps(landmarks: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """Fill the frames where ``detected`` is False by linear interpolation in time (ends held constant).

    landmarks: (T, K, 2) with at least one detected frame -> (T, K, 2) float64.
    """
    t = len(landmarks)
    flat = np.asarray(landmarks, dtype=np.float64).reshape(t, -1)
    if detected.all():
        return flat.reshape(landmarks.shape)
    idx = np.flatnonzero(detected)
    frames = np.arange(t)
    filled = np.empty_like(flat)
    for j in range(flat.shape[1]):
        filled[:, j] = np.interp(frames, idx, flat[idx, j])
    return filled.reshape(landmarks.shape)


def similarity_transforms(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991) from src to dst points, batched over frames.

    src: (T, K, 2), dst: (K, 2) -> (T, 2, 3) matrices A with dst ~ A[:, :, :2] @ p + A[:, :, 2] (no reflection).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s = src.mean(axis=1)  # (T, 2)
    mu_d = dst.mean(axis=0)  # (2,)
    s0 = src - mu_s[:, None]
    d0 = dst - mu_d
    cov = np.einsum("ki,tkj->tij", d0, s0) / src.shape[1]  # (T, 2, 2)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u) * np.linalg.det(vt))  # -1 would be a reflection
    d = np.stack([np.ones_like(sign), sign], axis=1)  # (T, 2)
    rot = np.einsum("tij,tj,tjk->tik", u, d, vt)
    var_s = (s0 ** 2).sum(axis=(1, 2)) / src.shape[1]
    scale = (sig * d).sum(axis=1) / np.maximum(var_s, 1e-12)
    lin = scale[:, None, None] * rot
    trans = mu_d[None] - np.einsum("tij,tj->ti", lin, mu_s)
    return np.concatenate([lin, trans[:, :, None]], axis=2)


def apply_affine(mats: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply per-frame affine maps (T, 2, 3) to points (T, K, 2) -> (T, K, 2)."""
    return np.einsum("tij,tkj->tki", mats[:, :, :2], points) + mats[:, None, :, 2]


CROP_CENTRE = np.array([(ROI_WIDTH - 1) / 2, (ROI_HEIGHT - 1) / 2])  # pixel centre of the crop (x, y)


def mouth_transforms(landmarks: np.ndarray, detected: np.ndarray | None = None) -> np.ndarray:
    """Per-frame affine maps from image pixels to mouth-crop pixels (the ones ``crop_mouth`` warps with).

    landmarks: (T, 68, 2) pixel coordinates (NaN rows allowed when ``detected`` is given or computed here).
    Returns (T, 2, 3) float64. Raises NoFaceError when fewer than MIN_FACE_FRACTION of the frames have a face.
    """
    return _filled_and_transforms(landmarks, detected)[1]


def _filled_and_transforms(landmarks: np.ndarray, detected: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(landmarks with detection gaps interpolated (T, 68, 2), :func:`mouth_transforms` (T, 2, 3))."""
    landmarks = np.asarray(landmarks)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (T, 68, 2), got {landmarks.shape}")
    if detected is None:
        detected = np.isfinite(landmarks).all(axis=(1, 2))
    t, n = len(landmarks), int(np.sum(detected))
    if n == 0 or n < MIN_FACE_FRACTION * t:
        raise NoFaceError(f"a face was found in only {n} of {t} frames "
                          f"(at least {MIN_FACE_FRACTION:.0%} are needed); is a face clearly visible?")
    lm = _interpolate_gaps(landmarks, detected)
    to_ref = similarity_transforms(_smooth(lm[:, STABLE_POINTS], ALIGN_SMOOTH_FRAMES), REFERENCE_FACE)
    centre = _smooth(apply_affine(to_ref, lm[:, LIP_POINTS]).mean(axis=1), CENTRE_SMOOTH_FRAMES)  # (T, 2)
    mats = PIXELS_PER_UNIT * to_ref
    mats[:, :, 2] = PIXELS_PER_UNIT * (to_ref[:, :, 2] - centre) + CROP_CENTRE
    return lm, mats


def _pyramid_levels(mats: np.ndarray) -> int:
    """How many times to halve the frames (cv2.pyrDown) so the warp does not shrink by more than 2x (anti-alias)."""
    zoom = float(np.median(np.sqrt(np.abs(np.linalg.det(mats[:, :, :2])))))  # crop px per image px
    return max(0, int(np.floor(np.log2(0.5 / zoom)))) if zoom < 0.5 else 0


def crop_mouth(frames: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aligned grayscale mouth crops and normalised lip points (see the module doc).

    frames: (T, H, W, 3) uint8 RGB; landmarks: (T, 68, 2) float pixel coords, NaN rows where no face.
    Returns roi (T, ROI_HEIGHT, ROI_WIDTH) uint8, lips (T, LIP_DIM) float32, detected (T,) bool.
    Raises NoFaceError when fewer than MIN_FACE_FRACTION of the frames have a face.
    """
    import cv2

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
    if len(frames) != len(landmarks):
        raise ValueError(f"{len(frames)} frames but {len(landmarks)} landmark rows")
    detected = np.isfinite(np.asarray(landmarks)).all(axis=(1, 2))
    filled, mats = _filled_and_transforms(landmarks, detected)
    levels = _pyramid_levels(mats)
    warp = mats.copy()
    warp[:, :, :2] *= 2 ** levels  # the same map, read from a frame halved `levels` times
    roi = np.empty((len(frames), ROI_HEIGHT, ROI_WIDTH), dtype=np.uint8)
    for i, frame in enumerate(frames):
        for _ in range(levels):
            frame = cv2.pyrDown(frame)
        patch = cv2.warpAffine(frame, warp[i], (ROI_WIDTH, ROI_HEIGHT), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        roi[i] = cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY)
    half = np.array([ROI_WIDTH / 2, ROI_HEIGHT / 2])
    lips = (apply_affine(mats, filled[:, LIP_POINTS]) - CROP_CENTRE) / half
    return roi, lips.reshape(len(frames), LIP_DIM).astype(np.float32), detected


def decode_clip(path: str | os.PathLike, *, max_seconds: float = MAX_SECONDS) -> VideoData:
    """The decode step of :func:`extract_mouth` alone (frames at FPS, at most EXTRACT_MAX_SIDE pixels, and the
    audio track), for callers that use the audio before the mouth is cropped. Raises as :func:`read_video`."""
    return read_video(path, max_seconds=max_seconds, max_side=EXTRACT_MAX_SIDE)


def extract_mouth(video: str | os.PathLike | VideoData, *, detector: Detector | None = None,
                  max_seconds: float = MAX_SECONDS) -> MouthClip:
    """Decode (if given a path), find landmarks and crop the mouth: the one call the CLI, data and studio use.

    video: a file path or an already decoded VideoData (frames at FPS). detector: reuse one across clips
    (``landmarks.get_detector``); None builds ``get_detector("auto")``. Raises NotAVideoError,
    NoVideoStreamError, ClipTooLongError or NoFaceError.
    """
    if isinstance(video, VideoData):
        data = video
        if data.duration > max_seconds:
            raise ClipTooLongError(f"the clip lasts {data.duration:.1f} s; the maximum is {max_seconds:g} s")
    else:
        data = decode_clip(video, max_seconds=max_seconds)
    det = detector if detector is not None else get_detector("auto")
    landmarks = det.detect(data.frames)
    try:
        roi, lips, detected = crop_mouth(data.frames, landmarks)
    except NoFaceError as e:
        name = Path(data.path).name if data.path else "the clip"
        raise NoFaceError(f"{name}: {e}") from e
    return MouthClip(roi=roi, lips=lips, audio=data.audio, fps=float(data.fps),
                     detected=detected, source=data.path)
