"""Facial landmarks per frame in the iBUG-68 layout: the only module that knows detector libraries.

Two detectors share one protocol (``detect(frames (T,H,W,3) uint8 RGB) -> (T,68,2) float32`` pixel
coordinates, x right / y down, pixel centres at integers as in OpenCV, a NaN row where no face was found):

- ``MediaPipeDetector`` (default): MediaPipe Face Mesh (468 points; its models ship inside the wheel, so it
  works offline) in tracking mode, mapped to iBUG-68 with ``MEDIAPIPE_TO_IBUG68``.
- ``FANDetector``: face-alignment's 2D-FAN-4 with the S3FD face detector (more accurate on profile faces, much
  slower on CPU). Its weights are downloaded by face-alignment into the torch hub cache; ``get_detector("auto")``
  picks it only when they are already on disk.

Detector objects are reusable across clips (one per worker process): state is reset at every ``detect`` call.
"""
from __future__ import annotations

import contextlib
import inspect
import os
import sys
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from naturall2s.errors import CheckpointError, NaturalL2SError

N_LANDMARKS = 68
# Frames whose longer side exceeds this are downscaled before the face mesh sees them (speed only: the mesh
# crops the face and resizes it to 192x192 internally; coordinates are returned in the original pixels).
MEDIAPIPE_MAX_SIDE = 640
FAN_MAX_SIDE = 480
DETECTOR_NAMES = ("auto", "mediapipe", "fan")

# iBUG-68 point k  <-  mean of MediaPipe Face Mesh vertices MEDIAPIPE_TO_IBUG68[k] (a pair when the iBUG point
# lies between two mesh vertices, the same index twice otherwise). "Right"/"left" are the subject's.
# The table follows the widely used mediapipe->dlib-68 correspondence (e.g. PeizhiYan/Mediapipe_2_Dlib_Landmarks);
# it was checked to be left/right symmetric (mesh vertices i and its mirror map to mirrored iBUG points)
# and by drawing it on GRID and in-the-wild frames (benchmarks/roi_montage.py).
MEDIAPIPE_TO_IBUG68 = np.array([
    # jaw 0..16, from the right ear over the chin (8) to the left ear
    (127, 127), (234, 234), (93, 93), (132, 58), (58, 172), (136, 136), (150, 150), (176, 176), (152, 152),
    (400, 400), (379, 379), (365, 365), (397, 288), (288, 361), (323, 323), (454, 454), (356, 356),
    # right brow 17..21 (outer to inner), left brow 22..26 (inner to outer)
    (70, 70), (63, 63), (105, 105), (66, 66), (107, 107),
    (336, 336), (296, 296), (334, 334), (293, 293), (300, 300),
    # nose bridge 27..30 (top to tip), nostrils 31..35 (right to left, 33 = below the tip)
    (168, 168), (197, 197), (5, 5), (4, 4),
    (75, 75), (97, 97), (2, 2), (326, 326), (305, 305),
    # right eye 36..41 (outer corner, upper lid x2, inner corner, lower lid x2), left eye 42..47 (inner first)
    (33, 33), (160, 160), (158, 158), (133, 133), (153, 153), (144, 144),
    (362, 362), (385, 385), (387, 387), (263, 263), (373, 373), (380, 380),
    # outer lips 48..59 (right corner, upper lip to the left corner 54, lower lip back)
    (61, 61), (40, 40), (37, 37), (0, 0), (267, 267), (270, 270), (291, 291),
    (321, 321), (314, 314), (17, 17), (84, 84), (91, 91),
    # inner lips 60..67 (right corner, upper inner lip, left corner 64, lower inner lip)
    (78, 78), (81, 81), (13, 13), (311, 311), (308, 308), (402, 402), (14, 14), (178, 178),
], dtype=np.int64)
assert MEDIAPIPE_TO_IBUG68.shape == (N_LANDMARKS, 2)


@runtime_checkable
class Detector(Protocol):
    """Per-frame facial landmarks. ``detect``: (T,H,W,3) uint8 RGB -> (T,68,2) float32 pixels, NaN rows = no face."""

    name: str

    def detect(self, frames: np.ndarray) -> np.ndarray: ...


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    return frames


def _shrink(frame: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (H,W,3) so the longer side is at most ``max_side`` (INTER_AREA); unchanged if already small."""
    import cv2

    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return frame
    s = max_side / max(h, w)
    return cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _flush_c_stdio() -> None:
    """fflush(NULL): push out what native code buffered in C stdio (so it goes where fd 2 points now)."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the process-level stderr (file descriptor 2) for the duration: native libraries' log lines."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to silence
        yield
        return
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        _flush_c_stdio()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _bbox_area(points: np.ndarray) -> float:
    """Area of the axis-aligned box around (K, 2) points (pixels^2)."""
    span = points.max(axis=0) - points.min(axis=0)
    return float(span[0] * span[1])


class MediaPipeDetector:
    """MediaPipe Face Mesh in tracking mode; the largest face when several are visible.

    Tracking one face is about a third cheaper than tracking several (with room for more faces the mesh runs its
    face detector on every frame), so the clip's first frame is checked with MediaPipe's face detector: one face
    -> a one-face mesh; none or several -> a mesh tracking up to ``max_faces``, keeping the largest per frame.
    (A second face that only appears later in a one-face clip is not considered.)
    """

    name = "mediapipe"

    def __init__(self, *, max_faces: int = 2, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, max_side: int = MEDIAPIPE_MAX_SIDE):
        import mediapipe as mp

        self.max_side = max_side
        blank = np.zeros((32, 32, 3), dtype=np.uint8)
        # TFLite/absl print notices on the C-level stderr whenever a graph (re)starts; they are emitted before
        # the first process() call of a run returns, so that call is made inside the quiet block too
        with _quiet_stderr():
            self._meshes = {}
            for n in sorted({1, max(1, max_faces)}):
                self._meshes[n] = mp.solutions.face_mesh.FaceMesh(
                    static_image_mode=False, max_num_faces=n, refine_landmarks=False,
                    min_detection_confidence=min_detection_confidence,
                    min_tracking_confidence=min_tracking_confidence)
                self._meshes[n].process(blank)
            self._finder = mp.solutions.face_detection.FaceDetection(
                model_selection=0, min_detection_confidence=min_detection_confidence)
            self._finder.process(blank)
        self._max_faces = max(self._meshes)
        # only the mesh vertices the iBUG-68 table uses are read out of the protobuf results
        self._used, self._inverse = np.unique(MEDIAPIPE_TO_IBUG68, return_inverse=True)
        self._inverse = self._inverse.reshape(MEDIAPIPE_TO_IBUG68.shape)

    def _to_ibug(self, face, width: int, height: int) -> np.ndarray:
        """One Face Mesh result -> (68, 2) float32 pixel coordinates in a width x height image."""
        lm = face.landmark
        used = np.array([(lm[i].x, lm[i].y) for i in self._used], dtype=np.float32)  # (U, 2) in [0, 1]
        used *= np.array([width, height], dtype=np.float32)
        used -= 0.5  # normalised image coordinates -> pixel centres at integers
        return used[self._inverse].mean(axis=1)

    def _mesh_for(self, first: np.ndarray):
        """The mesh to use for a clip starting with ``first`` (H,W,3): one-face mesh iff exactly one face there."""
        found = self._finder.process(first).detections or []
        return self._meshes[1] if len(found) == 1 else self._meshes[self._max_faces]

    def detect(self, frames: np.ndarray) -> np.ndarray:
        """(T,H,W,3) uint8 RGB -> (T,68,2) float32 pixel coordinates; NaN rows where no face was found."""
        frames = _check_frames(frames)
        t, h, w = frames.shape[:3]
        out = np.full((t, N_LANDMARKS, 2), np.nan, dtype=np.float32)
        mesh = None
        for i in range(t):
            image = _shrink(frames[i], self.max_side)
            if mesh is None:
                mesh = self._mesh_for(image)
                with _quiet_stderr():
                    mesh.reset()  # a new clip: forget the face tracked in the previous one
                    result = mesh.process(image)
            else:
                result = mesh.process(image)
            faces = result.multi_face_landmarks
            if not faces:
                continue
            cands = [self._to_ibug(f, w, h) for f in faces]
            out[i] = max(cands, key=_bbox_area)
        return out

    def close(self) -> None:
        """Free the MediaPipe graphs (optional; also happens when the object is garbage collected)."""
        for mesh in self._meshes.values():
            mesh.close()
        self._finder.close()


def fan_weight_files() -> list[Path]:
    """Where face-alignment keeps its 2D-FAN-4 and S3FD weights (torch hub checkpoint cache).

    Raises NaturalL2SError when face-alignment is not installed.
    """
    try:
        import torch.hub
        from face_alignment import api as fa_api
        from face_alignment.detection.sfd import sfd_detector
    except ImportError as e:
        raise NaturalL2SError(f"the FAN detector needs the face-alignment package ({e})") from e
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    urls = [fa_api.models_urls["2DFAN-4"], sfd_detector.models_urls["s3fd"]]
    return [folder / os.path.basename(u) for u in urls]


def fan_weights_present() -> bool:
    """True when both FAN weight files are already on disk (nothing is downloaded)."""
    try:
        return all(p.is_file() and p.stat().st_size > 0 for p in fan_weight_files())
    except NaturalL2SError:
        return False


class FANDetector:
    """face-alignment's 2D-FAN-4 (68 iBUG points) with its S3FD face detector; the largest face per frame.

    device: "cpu" or "cuda[:i]". Downloads its weights (about 100 MB) only when they are missing and this
    class is asked for explicitly; without network that raises CheckpointError.
    """

    name = "fan"

    def __init__(self, device: str = "cpu", *, max_side: int = FAN_MAX_SIDE):
        files = fan_weight_files()
        missing = [p for p in files if not p.is_file()]
        if missing:
            print(f"FAN weights not found; face-alignment will download them to {missing[0].parent}",
                  file=sys.stderr)
        import face_alignment

        kwargs = {"device": device, "flip_input": False}
        if "compile" in inspect.signature(face_alignment.FaceAlignment).parameters:
            kwargs["compile"] = False  # face-alignment >= 1.5 would torch.compile (minutes on CPU)
        try:
            self._fa = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, **kwargs)
        except (OSError, RuntimeError, ValueError) as e:
            if missing:
                raise CheckpointError(
                    f"FAN weights are missing ({', '.join(p.name for p in missing)} in {missing[0].parent}) and "
                    f"could not be downloaded ({e}); use the mediapipe detector, or place the files there") from e
            raise CheckpointError(f"could not load the FAN detector: {e}") from e
        self.max_side = max_side

    def detect(self, frames: np.ndarray) -> np.ndarray:
        """(T,H,W,3) uint8 RGB -> (T,68,2) float32 pixel coordinates; NaN rows where no face was found."""
        frames = _check_frames(frames)
        t, h, w = frames.shape[:3]
        out = np.full((t, N_LANDMARKS, 2), np.nan, dtype=np.float32)
        for i in range(t):
            small = _shrink(frames[i], self.max_side)
            preds = self._fa.get_landmarks_from_image(small)
            if not preds:
                continue
            best = max((np.asarray(p, dtype=np.float32)[:, :2] for p in preds), key=_bbox_area)
            out[i] = best * np.array([w / small.shape[1], h / small.shape[0]], dtype=np.float32)
        return out


def get_detector(name: str = "auto", *, device: str = "cpu") -> Detector:
    """Build a landmark detector by name: "auto" (FAN if its weights are on disk, else MediaPipe), "mediapipe", "fan".

    device is used by FAN only. Raises NaturalL2SError for an unknown name or an unusable FAN.
    """
    name = (name or "auto").lower()
    if name not in DETECTOR_NAMES:
        raise NaturalL2SError(f"unknown landmark detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)}")
    if name == "fan" or (name == "auto" and fan_weights_present()):
        return FANDetector(device=device)
    return MediaPipeDetector()
