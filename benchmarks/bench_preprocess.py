"""End-to-end preprocessing time of one GRID clip (3 s): decode + landmarks + mouth crop, per stage.

    python benchmarks/bench_preprocess.py [--data-root ../shared/data/grid] [-n 20] [--detector mediapipe]

Runs in this process with one detector reused across clips (as data preparation does, one per worker),
after one warm-up clip. Prints median / min / max milliseconds per stage over the clips of the test split.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = Path(os.environ.get("NATURALL2S_SHARED_DATA", REPO.parent / "shared" / "data")) / "grid"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help="GRID root (s1/*.mp4, splits.json)")
    parser.add_argument("-n", type=int, default=20, help="number of clips to time (default 20)")
    parser.add_argument("--detector", default="mediapipe", choices=["auto", "mediapipe", "fan"])
    args = parser.parse_args()

    from naturall2s.landmarks import get_detector
    from naturall2s.roi import EXTRACT_MAX_SIDE, crop_mouth
    from naturall2s.video import read_video

    names = json.loads((args.data_root / "splits.json").read_text())["s1"]["test"][: args.n + 1]
    clips = [args.data_root / "s1" / f"{n}.mp4" for n in names]
    t0 = time.perf_counter()
    detector = get_detector(args.detector)
    setup = time.perf_counter() - t0

    rows: dict[str, list[float]] = {"decode": [], "landmarks": [], "crop": [], "total": []}
    frames_seen = []
    for i, path in enumerate(clips):
        t0 = time.perf_counter()
        video = read_video(path, max_side=EXTRACT_MAX_SIDE)
        t1 = time.perf_counter()
        landmarks = detector.detect(video.frames)
        t2 = time.perf_counter()
        crop_mouth(video.frames, landmarks)
        t3 = time.perf_counter()
        if i == 0:
            continue  # warm-up
        for key, value in zip(rows, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
            rows[key].append(1000 * value)
        frames_seen.append(len(video.frames))

    print(f"preprocessing of {len(rows['total'])} GRID clips ({statistics.median(frames_seen):.0f} frames each), "
          f"detector {detector.name} (setup {setup:.2f} s, not included), {os.cpu_count()} CPU cores")
    print(f"{'stage':<10} {'median ms':>10} {'min ms':>8} {'max ms':>8}")
    for key, values in rows.items():
        print(f"{key:<10} {statistics.median(values):>10.0f} {min(values):>8.0f} {max(values):>8.0f}")
    per_frame = statistics.median(rows["total"]) / statistics.median(frames_seen)
    print(f"median {per_frame:.1f} ms per frame = {1000 / per_frame / 25:.1f}x real time at 25 fps")


if __name__ == "__main__":
    main()
