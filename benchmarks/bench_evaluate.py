"""Cost of scoring one 3 s clip, per metric: where the evaluator's time goes.

    python benchmarks/bench_evaluate.py [--data-root ../shared/data/grid] [-n 10]

Uses the real audio of the first ``n`` GRID test clips as references and a noisy copy of each (+20 dB SNR white
noise) as the "system" output; one warm-up clip first (model loading, numba compilation). Prints median / min /
max milliseconds per metric and per clip.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    sys.path.insert(0, str(REPO))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data" / "grid")
    parser.add_argument("-n", type=int, default=10)
    args = parser.parse_args()

    from naturall2s import audio, metrics
    from naturall2s.asr import get_asr
    from naturall2s.evaluate import split_clips
    from naturall2s.speaker import get_speaker_encoder
    from naturall2s.video import read_audio_track

    t0 = time.perf_counter()
    asr, encoder = get_asr("auto", grammar="grid"), get_speaker_encoder("auto")
    setup = time.perf_counter() - t0
    steps = {
        "read audio": lambda clip, ref, deg: read_audio_track(clip.video),
        "stoi": lambda clip, ref, deg: metrics.stoi(ref, deg),
        "estoi": lambda clip, ref, deg: metrics.estoi(ref, deg),
        "pesq_nb": lambda clip, ref, deg: metrics.pesq_nb(ref, deg),
        "pesq_wb": lambda clip, ref, deg: metrics.pesq_wb(ref, deg),
        "mel_cepstrum": lambda clip, ref, deg: metrics.mel_cepstrum(deg),
        "f0_voicing": lambda clip, ref, deg: audio.f0_voicing(deg),
        "asr": lambda clip, ref, deg: asr.transcribe(deg, audio.SAMPLE_RATE),
        "speaker embed": lambda clip, ref, deg: encoder.embed(deg, audio.SAMPLE_RATE),
    }
    rows: dict[str, list[float]] = {k: [] for k in steps} | {"total": []}
    rng = np.random.default_rng(0)
    for i, clip in enumerate(split_clips(args.data_root, "test", limit=args.n + 1)):
        ref = read_audio_track(clip.video)
        deg = ref + 0.1 * np.sqrt(np.mean(ref**2)) * rng.standard_normal(ref.shape).astype(np.float32)
        total = 0.0
        for key, step in steps.items():
            t = time.perf_counter()
            step(clip, ref, deg)
            dt = 1000 * (time.perf_counter() - t)
            total += dt
            if i:  # clip 0 is the warm-up
                rows[key].append(dt)
        if i:
            rows["total"].append(total)

    print(f"scoring cost per 3 s GRID clip over {len(rows['total'])} clips; ASR {asr.name}, speaker "
          f"{encoder.name} (setup {setup:.2f} s, not included)")
    print(f"{'step':<14} {'median ms':>10} {'min ms':>8} {'max ms':>8}")
    for key, values in rows.items():
        print(f"{key:<14} {statistics.median(values):>10.0f} {min(values):>8.0f} {max(values):>8.0f}")


if __name__ == "__main__":
    main()
