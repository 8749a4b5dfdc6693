"""``python -m naturall2s roi VIDEO -o roi.mp4``: the mouth crops the model sees, as a video to watch."""
from __future__ import annotations

import argparse

from naturall2s.cli import at_least

HELP = "crop the mouth region of a video (the model's input) and write it as a preview video"
DESCRIPTION = (
    "Decode VIDEO at 25 fps, find facial landmarks, align and crop a 48x72 grayscale mouth patch per frame "
    "(exactly what the lip-to-speech models receive) and write it, enlarged --scale times, to an mp4. "
    "Prints the number of frames, the fraction of frames with a detected face and the time taken."
)



def add_arguments(parser: argparse.ArgumentParser) -> None:
    from naturall2s.landmarks import DETECTOR_NAMES

    parser.add_argument("video", help="input video (mp4, mov, mkv, avi, mpg, webm, ...)")
    parser.add_argument("-o", "--output", default="roi.mp4", help="output mp4 (default: %(default)s)")
    parser.add_argument("--detector", default="auto", choices=DETECTOR_NAMES,
                        help="face landmark detector (default: %(default)s: FAN when its weights are on disk, else MediaPipe)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        metavar="S",
                        help="refuse clips longer than S seconds (default: naturall2s.video.MAX_SECONDS, 60 s)")
    parser.add_argument("--scale", type=at_least(1, int), default=4, metavar="N",
                        help="enlarge the 48x72 crops N times (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    import time

    from naturall2s.landmarks import get_detector
    from naturall2s.roi import extract_mouth
    from naturall2s.video import MAX_SECONDS, write_gray_video

    t0 = time.perf_counter()
    detector = get_detector(args.detector)
    t1 = time.perf_counter()
    clip = extract_mouth(args.video, detector=detector,
                         max_seconds=args.max_seconds if args.max_seconds is not None else MAX_SECONDS)
    t2 = time.perf_counter()
    write_gray_video(args.output, clip.roi, fps=clip.fps, scale=args.scale)
    t3 = time.perf_counter()
    t, h, w = clip.roi.shape
    print(f"wrote {args.output}: {t} frames ({t / clip.fps:.2f} s at {clip.fps:g} fps), {h}x{w} mouth crops "
          f"shown x{args.scale}")
    print(f"face detected in {int(clip.detected.sum())}/{t} frames ({clip.detection_rate:.0%}) "
          f"with the {detector.name} detector")
    print(f"time: {t3 - t0:.2f} s (detector setup {t1 - t0:.2f} s, decode+landmarks+crop {t2 - t1:.2f} s, "
          f"writing {t3 - t2:.2f} s)")
    return 0
