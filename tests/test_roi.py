"""naturall2s.landmarks + naturall2s.roi: alignment and cropping on synthetic faces, then real clips.

Synthetic faces: the reference face (stable points) plus an elliptic mouth, moved by a known similarity
transform and drawn as a dark mouth on a bright frame, so where the mouth must land in the crop is known.
"""
from __future__ import annotations

import subprocess

import cv2
import numpy as np
import pytest

from naturall2s.errors import CheckpointError, NaturalL2SError, NoFaceError
from naturall2s.landmarks import Detector, MediaPipeDetector, get_detector
from naturall2s.roi import (
    LIP_DIM,
    MOUTH_WIDTH_FRACTION,
    REFERENCE_FACE,
    REFERENCE_MOUTH_WIDTH,
    ROI_HEIGHT,
    ROI_WIDTH,
    STABLE_POINTS,
    MouthClip,
    crop_mouth,
    extract_mouth,
    similarity_transforms,
)
from naturall2s.video import FPS, VideoData, ffmpeg_exe, read_video

# iBUG-68 index of each point's left/right mirror image
IBUG_MIRROR = np.array([16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 26, 25, 24, 23, 22, 21, 20, 19, 18,
                        17, 27, 28, 29, 30, 35, 34, 33, 32, 31, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54,
                        53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65])
MOUTH_CENTRE_Y = 0.86  # reference units below the eyes


def _reference_face() -> np.ndarray:
    """(68, 2) face in reference units: stable points from REFERENCE_FACE, an elliptic mouth, the rest filler."""
    face = np.zeros((68, 2))
    face[:, 1] = 0.3  # unused points: somewhere on the face
    face[STABLE_POINTS] = REFERENCE_FACE
    half_w, half_h = REFERENCE_MOUTH_WIDTH / 2, 0.12
    outer = np.linspace(np.pi, -np.pi, 12, endpoint=False)  # 48 = right corner (image left), then upper lip
    face[48:60] = np.stack([half_w * np.cos(outer), MOUTH_CENTRE_Y - half_h * np.sin(outer)], axis=1)
    inner = np.linspace(np.pi, -np.pi, 8, endpoint=False)
    face[60:68] = np.stack([0.8 * half_w * np.cos(inner), MOUTH_CENTRE_Y - 0.3 * half_h * np.sin(inner)], axis=1)
    return face


def _place(face: np.ndarray, scale: float, angle_deg: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return scale * face @ rot.T + np.asarray(shift)


def _synthetic_clip(t: int, *, scale=120.0, angle=0.0, drift=(0.0, 0.0), size=(240, 320)):
    """Frames (t, H, W, 3) with a dark mouth drawn where the landmarks (t, 68, 2) say it is."""
    h, w = size
    frames = np.full((t, h, w, 3), 200, np.uint8)
    landmarks = np.empty((t, 68, 2), np.float32)
    for i in range(t):
        pts = _place(_reference_face(), scale, angle, (w / 2 + drift[0] * i, h / 3 + drift[1] * i))
        landmarks[i] = pts
        cv2.fillPoly(frames[i], [np.round(pts[48:60] * 16).astype(np.int32)], (30, 30, 30), shift=4)
    return frames, landmarks


def _dark_blob(roi: np.ndarray) -> tuple[float, float, float, float]:
    """Centroid x, y, width and principal-axis angle (deg) of the dark pixels of one (H, W) crop."""
    ys, xs = np.nonzero(roi < 115)
    cov = np.cov(np.stack([xs, ys]))
    vals, vecs = np.linalg.eigh(cov)
    major = vecs[:, np.argmax(vals)]
    angle = np.degrees(np.arctan2(major[1], major[0]))
    angle = (angle + 90) % 180 - 90
    return xs.mean(), ys.mean(), xs.max() - xs.min() + 1, angle


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(5, 7, 2))
    a = np.deg2rad(np.array([0, 10, -35, 90, 170]))
    s = np.array([1.0, 0.5, 2.0, 3.0, 0.1])
    rot = np.stack([np.stack([np.cos(a), -np.sin(a)], -1), np.stack([np.sin(a), np.cos(a)], -1)], 1)
    lin = s[:, None, None] * rot
    # one destination shared by all frames: build the sources as the inverse images of it
    dst = rng.normal(size=(7, 2))
    trans = rng.normal(size=(5, 2))
    src = np.einsum("tij,tkj->tki", np.linalg.inv(lin), dst[None] - trans[:, None])
    mats = similarity_transforms(src, dst)
    assert np.allclose(mats[:, :, :2], lin, atol=1e-9)
    assert np.allclose(mats[:, :, 2], trans, atol=1e-9)


@pytest.mark.parametrize("scale,angle", [(120.0, 0.0), (60.0, 20.0), (300.0, -15.0)])
def test_mouth_lands_centred_level_and_at_the_documented_width(scale, angle):
    size = (int(4 * scale), int(5 * scale)) if scale > 150 else (240, 320)
    frames, landmarks = _synthetic_clip(6, scale=scale, angle=angle, size=size)
    roi, lips, detected = crop_mouth(frames, landmarks)
    assert roi.shape == (6, ROI_HEIGHT, ROI_WIDTH) and roi.dtype == np.uint8
    assert lips.shape == (6, LIP_DIM) and lips.dtype == np.float32 and detected.all()
    cx, cy, width, tilt = _dark_blob(roi[3])
    assert cx == pytest.approx((ROI_WIDTH - 1) / 2, abs=1.0)
    assert cy == pytest.approx((ROI_HEIGHT - 1) / 2, abs=1.0)
    assert width == pytest.approx(MOUTH_WIDTH_FRACTION * ROI_WIDTH, abs=2.5)
    assert abs(tilt) < 3  # head roll removed
    pts = lips.reshape(6, 20, 2)
    assert np.allclose(pts.mean(axis=1), 0, atol=0.02)
    assert pts[:, 0, 0] == pytest.approx(-MOUTH_WIDTH_FRACTION, abs=0.02)  # right mouth corner (image left)
    assert pts[:, 6, 0] == pytest.approx(MOUTH_WIDTH_FRACTION, abs=0.02)  # left mouth corner
    assert np.abs(pts[:, [0, 6], 1]).max() < 0.02


def test_gaps_are_interpolated_and_reported():
    frames, landmarks = _synthetic_clip(20, drift=(2.0, -1.0))  # the face moves: a gap must be bridged
    truth_roi, truth_lips, _ = crop_mouth(frames, landmarks)
    missing = np.zeros(20, bool)
    missing[[0, 1, 7, 8, 9, 19]] = True  # both ends and a run in the middle
    holey = landmarks.copy()
    holey[missing] = np.nan
    roi, lips, detected = crop_mouth(frames, holey)
    assert np.array_equal(detected, ~missing)
    assert np.isfinite(lips).all()
    # linear motion: interpolation restores the landmarks exactly inside the run, the ends are held
    assert np.allclose(lips[7:10], truth_lips[7:10], atol=0.03)
    for i in np.flatnonzero(missing):
        cx, cy, _, _ = _dark_blob(roi[i])
        assert abs(cx - (ROI_WIDTH - 1) / 2) < 4 and abs(cy - (ROI_HEIGHT - 1) / 2) < 4


def test_too_few_faces_raise_no_face_error():
    frames, landmarks = _synthetic_clip(10)
    none = np.full_like(landmarks, np.nan)
    with pytest.raises(NoFaceError, match="0 of 10"):
        crop_mouth(frames, none)
    few = landmarks.copy()
    few[:6] = np.nan
    with pytest.raises(NoFaceError, match="4 of 10"):
        crop_mouth(frames, few)
    enough = landmarks.copy()
    enough[:4] = np.nan
    assert crop_mouth(frames, enough)[2].sum() == 6


def test_shape_errors():
    frames, landmarks = _synthetic_clip(4)
    with pytest.raises(ValueError):
        crop_mouth(frames, landmarks[:3])
    with pytest.raises(ValueError):
        crop_mouth(frames[..., 0], landmarks)


# ------------------------------------------------------------------------------------------ detectors
@pytest.fixture(scope="module")
def detector() -> MediaPipeDetector:
    return MediaPipeDetector()


def test_get_detector_names(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache: no FAN weights on disk
    det = get_detector("auto")
    assert isinstance(det, Detector) and det.name == "mediapipe"
    assert get_detector("mediapipe").name == "mediapipe"
    with pytest.raises(NaturalL2SError, match="unknown landmark detector"):
        get_detector("dlib")


def test_fan_without_weights_or_network_is_a_clear_error(monkeypatch, tmp_path):
    pytest.importorskip("face_alignment")
    import urllib.error

    from face_alignment import api
    from face_alignment.detection.sfd import sfd_detector

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(api, "load_file_from_url", offline)
    monkeypatch.setattr(sfd_detector, "load_state_dict_from_url", offline)
    with pytest.raises(CheckpointError, match="FAN weights are missing"):
        get_detector("fan")


def test_noise_video_has_no_face(detector, tmp_path):
    rng = np.random.default_rng(1)
    noise = VideoData(frames=rng.integers(0, 256, (20, 120, 160, 3), dtype=np.uint8), audio=None,
                      source_fps=FPS, duration=20 / FPS, path="")
    assert np.isnan(detector.detect(noise.frames)).all()
    with pytest.raises(NoFaceError, match="0 of 20"):
        extract_mouth(noise, detector=detector)
    path = tmp_path / "noise.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "nullsrc=s=160x120:d=1,geq=random(1)*255:128:128",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    with pytest.raises(NoFaceError, match="noise.mp4"):
        extract_mouth(path, detector=detector)


# ------------------------------------------------------------------------------------------ real clips
def _check_clip(clip: MouthClip, duration: float) -> None:
    t = len(clip.roi)
    assert clip.roi.shape == (t, ROI_HEIGHT, ROI_WIDTH) and clip.roi.dtype == np.uint8
    assert clip.lips.shape == (t, LIP_DIM) and clip.detected.shape == (t,)
    assert abs(t - duration * FPS) <= 1
    assert clip.detection_rate >= 0.9
    pts = clip.lips.reshape(t, 20, 2)
    assert np.abs(pts.mean(axis=(0, 1))).max() < 0.15  # lips centred in the crop
    width = pts[:, 6, 0] - pts[:, 0, 0]
    assert 0.8 < np.median(width) < 1.7  # nominally 2 * MOUTH_WIDTH_FRACTION = 1.2; varies with face and pose
    # independent of the landmarks: the darkest row (the line between the lips) is near the middle
    profile = clip.roi[:, :, ROI_WIDTH // 3: 2 * ROI_WIDTH // 3].mean(axis=(0, 2))
    assert abs(int(np.argmin(profile)) - ROI_HEIGHT / 2) <= 6


def test_grid_clip(grid_clip, detector):
    clip = extract_mouth(grid_clip, detector=detector)
    _check_clip(clip, 3.0)
    assert clip.source == str(grid_clip) and clip.fps == FPS
    assert clip.audio is not None and abs(len(clip.audio) - 3 * 16000) < 800
    # a reused detector gives the same result (tracking state is reset per clip)
    again = extract_mouth(grid_clip, detector=detector)
    assert np.array_equal(again.roi, clip.roi) and np.array_equal(again.lips, clip.lips)


def test_wild_clips(wild_clips, detector):
    assert len(wild_clips) >= 2
    for path in wild_clips:
        video = read_video(path)
        clip = extract_mouth(path, detector=detector)
        _check_clip(clip, video.duration)
        assert clip.audio is not None


def test_mediapipe_mapping_on_a_mirrored_face(grid_clip, detector):
    """Landmarks of the mirrored frame, mirrored back and re-indexed, match the original ones (table symmetry)."""
    frame = read_video(grid_clip, with_audio=False).frames[:1]
    a = detector.detect(frame)[0]
    b = detector.detect(np.ascontiguousarray(frame[:, :, ::-1]))[0][IBUG_MIRROR]
    b[:, 0] = frame.shape[2] - 1 - b[:, 0]
    eye_dist = np.linalg.norm(a[36] - a[45])
    assert np.linalg.norm(a - b, axis=1).max() < 0.06 * eye_dist
    # and the layout is iBUG's: eyes above the nose tip above the mouth above the chin, right side on the left
    assert a[36, 0] < a[45, 0] and a[48, 0] < a[54, 0]
    assert a[[36, 45], 1].mean() < a[30, 1] < a[51, 1] < a[57, 1] < a[8, 1]
