"""Build a montage of what the mouth crops look like on in-the-wild and GRID clips (a local check: it shows the
clips' frames, which are never committed; the default output is outside the repository).

    python benchmarks/roi_montage.py [--data-root ../shared/data] [--out ../naturall2s-work/roi_montage.png]

One row per clip (the wild clips, then GRID test clips): a small full frame with the crop's outline (green)
and, as tiles, ROI frames evenly spread over the clip at 2x; the last tile shows the lip points (``lips``)
drawn back onto the crop, so a glance shows both the crop and the lip coordinates line up with the mouth.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = Path(os.environ.get("NATURALL2S_SHARED_DATA", REPO.parent / "shared" / "data"))

N_TILES = 6
ZOOM = 2  # ROI tiles are shown at 2x: 96 x 144
LABEL_W = 110  # pixels of the left margin with the clip's name


def _frame_with_box(frame: np.ndarray, mat: np.ndarray, height: int) -> np.ndarray:
    """The RGB frame scaled to ``height`` with the crop's outline (inverse of the 2x3 crop map) drawn in green."""
    import cv2

    from naturall2s.roi import ROI_HEIGHT, ROI_WIDTH

    inv = cv2.invertAffineTransform(mat)
    corners = np.array([[-0.5, -0.5], [ROI_WIDTH - 0.5, -0.5], [ROI_WIDTH - 0.5, ROI_HEIGHT - 0.5],
                        [-0.5, ROI_HEIGHT - 0.5]])
    box = corners @ inv[:, :2].T + inv[:, 2]
    s = height / frame.shape[0]
    thumb = cv2.resize(frame, (round(frame.shape[1] * s), height), interpolation=cv2.INTER_AREA)
    cv2.polylines(thumb, [np.round(box * s).astype(np.int32)], True, (0, 255, 0), 1, cv2.LINE_AA)
    return thumb


def _lips_tile(roi: np.ndarray, lips: np.ndarray) -> np.ndarray:
    """An (H, W) crop at ZOOM with its 20 lip points (crop-normalised (40,)) drawn in red; -> RGB."""
    import cv2

    from naturall2s.roi import ROI_HEIGHT, ROI_WIDTH

    tile = cv2.cvtColor(cv2.resize(roi, None, fx=ZOOM, fy=ZOOM, interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2RGB)
    pts = lips.reshape(20, 2) * np.array([ROI_WIDTH / 2, ROI_HEIGHT / 2]) + (np.array([ROI_WIDTH, ROI_HEIGHT]) - 1) / 2
    for x, y in (pts + 0.5) * ZOOM - 0.5:
        cv2.circle(tile, (round(x), round(y)), 2, (255, 40, 40), -1, cv2.LINE_AA)
    return tile


def clip_row(path: Path, detector) -> np.ndarray:
    """One montage row (RGB) for a clip."""
    import cv2

    from naturall2s.roi import EXTRACT_MAX_SIDE, ROI_HEIGHT, crop_mouth, mouth_transforms
    from naturall2s.video import read_video

    video = read_video(path, max_side=EXTRACT_MAX_SIDE, with_audio=False)
    landmarks = detector.detect(video.frames)
    roi, lips, detected = crop_mouth(video.frames, landmarks)
    mats = mouth_transforms(landmarks, detected)
    h = ROI_HEIGHT * ZOOM
    picks = np.linspace(0, len(roi) - 1, N_TILES + 2).round().astype(int)[1:-1]
    tiles = [cv2.cvtColor(cv2.resize(roi[i], None, fx=ZOOM, fy=ZOOM, interpolation=cv2.INTER_NEAREST),
                          cv2.COLOR_GRAY2RGB) for i in picks[:-1]]
    tiles.append(_lips_tile(roi[picks[-1]], lips[picks[-1]]))
    thumb = _frame_with_box(video.frames[picks[0]], mats[picks[0]], h)
    label = np.full((h, LABEL_W, 3), 255, np.uint8)
    cv2.putText(label, path.stem, (4, h // 2 - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(label, f"face {detected.mean():.0%}", (4, h // 2 + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                (90, 90, 90), 1, cv2.LINE_AA)
    gap = np.full((h, 4, 3), 255, np.uint8)
    parts = [label, thumb, gap]
    for tile in tiles:
        parts += [tile, gap]
    return np.concatenate(parts, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help="folder with grid/ and wild/")
    parser.add_argument("--grid-clips", type=int, default=5, help="GRID test clips to show (default 5)")
    parser.add_argument("--detector", default="mediapipe", choices=["auto", "mediapipe", "fan"])
    parser.add_argument("--out", type=Path, default=REPO.parent / "naturall2s-work" / "roi_montage.png")
    args = parser.parse_args()

    import cv2

    from naturall2s.landmarks import get_detector

    grid = args.data_root / "grid"
    names = json.loads((grid / "splits.json").read_text())["s1"]["test"][: args.grid_clips]
    clips = sorted((args.data_root / "wild").glob("*.mp4")) + [grid / "s1" / f"{n}.mp4" for n in names]
    detector = get_detector(args.detector)
    rows = [clip_row(p, detector) for p in clips]
    width = max(r.shape[1] for r in rows)
    sep = np.full((4, width, 3), 255, np.uint8)
    stacked = []
    for r in rows:
        stacked += [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255), sep]
    image = np.concatenate(stacked[:-1], axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise SystemExit(f"could not write {args.out}")
    print(f"wrote {args.out} ({image.shape[1]}x{image.shape[0]}, {len(rows)} clips, detector {detector.name})")


if __name__ == "__main__":
    main()
