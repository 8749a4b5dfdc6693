"""``python -m naturall2s prepare``: GRID clips -> the feature cache that training and evaluation read."""
from __future__ import annotations

import argparse

HELP = "prepare the GRID cache (mouth ROIs, lips, audio features) for training"
DESCRIPTION = (
    "Turn each GRID clip into <out>/clips/<name>.npz (mouth ROI, lip landmarks, 16 kHz audio, log-mel, F0, "
    "voicing, loudness, transcript). Resumable: clips already in the cache are skipped; failures are listed "
    "in the summary and in <out>/manifest.json (exit status 1 when any clip failed)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from naturall2s.landmarks import DETECTOR_NAMES

    parser.add_argument("--data-root", required=True, metavar="DIR",
                        help="GRID root with <speaker>/*.mp4, align/ and splits.json (required, no default)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="cache folder to write, e.g. cache/grid (required, no default)")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="worker processes; 1: in this process (default: %(default)s)")
    parser.add_argument("--detector", default="auto", choices=DETECTOR_NAMES,
                        help="face landmark detector (default: %(default)s: FAN when its weights are on disk, else MediaPipe)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="prepare at most N clips, for smoke runs (default: every clip)")
    parser.add_argument("--splits", nargs="+", default=["train", "val", "test"], choices=["train", "val", "test"],
                        help="splits to prepare (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from naturall2s.data import prepare

    summary = prepare(args.data_root, args.out, workers=args.workers, detector=args.detector,
                      limit=args.limit, splits=tuple(args.splits))
    print(f"prepared {summary['prepared']}, skipped {summary['skipped']} (already cached; "
          f"{summary.get('upgraded', 0)} given word labels), "
          f"failed {summary['failed']} in {summary['wall_s']:.1f} s -> {summary['out']}")
    for failure in summary["failures"]:
        print(f"  failed {failure['name']}: {failure['error']}")
    return 1 if summary["failed"] else 0
