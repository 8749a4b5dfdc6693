"""Speaker adaptation cost: wall time per phase, peak memory and clips/s of ``naturall2s.adapt.adapt``.

    python benchmarks/bench_adapt.py [--clips ../shared/data/speakers/s4] [-n 5] [--steps 20] [--repeats 1]
                                     [--base naturall2s] [--threads 0]

Adapts ``--base`` to the first ``-n`` clips of the folder for ``--steps`` steps (the recipe otherwise: batch 8 or
the number of training clips, whole clips, augmentation) into a temporary models folder, ``--repeats`` times from
scratch, and prints per phase the median wall time: examining the clips (face, ASR transcript, forced alignment,
cache record, speaker embedding), training (+ its held-out validations), scoring the base and adapted models on the
held-out clips and writing the checkpoint; then training clips/s, examined clips/s, and the peak resident memory
of this process. The full recipe's wall time follows as examine + steps/--steps x train + score.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_CLIPS = Path(os.environ.get("NATURALL2S_SHARED_DATA", REPO.parent / "shared" / "data")) / "speakers" / "s4"


def one_run(clips: list[Path], *, steps: int, base: str, threads: int) -> dict:
    """Adapt once into a fresh temporary folder; the wall time of each phase from the progress reports."""
    from naturall2s.adapt import RECIPE, adapt

    marks: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        adapt(clips, name="bench", base=base, out=out, steps=steps, threads=threads, verbose=False,
              recipe={"eval_every": steps}, progress=lambda f, m: marks.append((f, time.perf_counter())))
    total = time.perf_counter() - t0
    first = lambda lo: next(t for f, t in marks if f >= lo)  # noqa: E731
    t_train, t_score = first(0.15), first(0.9)
    n_train = len(clips) - max(1, min(5, round(len(clips) / 5)))
    batch = min(RECIPE["batch_size"], n_train)
    return {"examine": t_train - t0, "train": t_score - t_train, "score": t0 + total - t_score, "total": total,
            "train_clips_per_s": steps * batch / (t_score - t_train), "examine_clips_per_s": len(clips) / (t_train - t0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=DEFAULT_CLIPS, help="folder of one person's clips")
    parser.add_argument("-n", type=int, default=5, help="clips to adapt on (default 5)")
    parser.add_argument("--steps", type=int, default=20, help="training steps (default 20)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--base", default="naturall2s")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    args = parser.parse_args()

    from naturall2s.adapt import RECIPE

    clips = sorted(args.clips.glob("*.mp4"))[: args.n]
    runs = [one_run(clips, steps=args.steps, base=args.base, threads=args.threads) for _ in range(args.repeats)]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"adapt {args.base} on {len(clips)} clips of {args.clips.name}, {args.steps} steps, {args.repeats} run(s), "
          f"{os.cpu_count()} CPU cores, threads {args.threads or 'all'} (load average at the end: "
          f"{os.getloadavg()[0]:.1f})")
    print(f"{'phase':<10} {'median s':>9}")
    for k in ("examine", "train", "score", "total"):
        print(f"{k:<10} {med[k]:>9.1f}")
    print(f"training {med['train_clips_per_s']:.2f} clips/s ({args.steps / med['train'] * 60:.0f} steps/min), "
          f"examining {med['examine_clips_per_s']:.2f} clips/s, peak memory {peak_mb:.0f} MB")
    full = med["examine"] + RECIPE["steps"] / args.steps * med["train"] + med["score"]
    print(f"the recipe's {RECIPE['steps']} steps on these clips would take about {full / 60:.1f} min here")


if __name__ == "__main__":
    main()
