"""Cost of the MOS predictor: CPU and wall time per second of audio, one clip at a time vs batched, per thread count.

    python benchmarks/bench_mos.py [--data-root ../shared/data/grid] [-n 8] [--repeats 3] [--predictor auto]
                                   [--threads 1 2]

Scores the real audio of the first ``n`` GRID test clips (3 s each); one warm-up pass first. For each torch
thread count and each way of calling (``single``: one clip per forward pass; ``batch``: all ``n`` in one pass),
prints the median over ``repeats`` of the wall and process-CPU seconds per second of audio, and the batch/single
ratio. DistillMOS pads every clip to its 7.68 s window, so a 3 s clip costs what a 7.68 s one does.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    sys.path.insert(0, str(REPO))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data" / "grid")
    parser.add_argument("-n", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--predictor", default="auto", choices=["auto", "distillmos", "utmos"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from naturall2s import audio, naturalness
    from naturall2s.evaluate import split_clips
    from naturall2s.video import read_audio_track

    t0 = time.perf_counter()
    predictor = naturalness.get_mos_predictor(args.predictor)
    load = time.perf_counter() - t0
    wavs = [read_audio_track(c.video) for c in split_clips(args.data_root, "test", limit=args.n)]
    seconds = sum(len(w) for w in wavs) / audio.SAMPLE_RATE
    predictor.score(wavs[:1], audio.SAMPLE_RATE)  # warm-up

    batch_size = getattr(predictor, "batch_size", None)
    modes = {"single": 1, "batch": len(wavs)} if batch_size is not None else {"single": 1}
    print(f"{predictor.name}: {len(wavs)} clips, {seconds:.1f} s of audio; load {load:.2f} s (not included); "
          f"median of {args.repeats}")
    print(f"{'threads':>7} {'mode':>6} {'wall s/s':>9} {'cpu s/s':>8} {'s/clip':>7}")
    for threads in args.threads:
        medians = {}
        predictor.threads = threads
        for mode, size in modes.items():
            if batch_size is not None:
                predictor.batch_size = size
            walls, cpus = [], []
            for _ in range(args.repeats):
                w0, c0 = time.perf_counter(), time.process_time()
                predictor.score(wavs, audio.SAMPLE_RATE)
                walls.append(time.perf_counter() - w0)
                cpus.append(time.process_time() - c0)
            medians[mode] = statistics.median(walls)
            print(f"{threads:>7} {mode:>6} {medians[mode] / seconds:>9.3f} {statistics.median(cpus) / seconds:>8.3f} "
                  f"{medians[mode] / len(wavs):>7.2f}")
        if len(medians) == 2:
            print(f"{threads:>7} batch/single wall ratio {medians['batch'] / medians['single']:.2f}")


if __name__ == "__main__":
    main()
